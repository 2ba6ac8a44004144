"""AIOS's queries served by llmos's kernel, for one llmos user.

The agent an AIOS query names is an llmos agent of the user (`shapes.llmos_name`),
created on first use with the model `/core/llm/setup` chose (else the
server's default). Then:

- **llm**: one LLM syscall on the agent's core, through its run queue (so
  AIOS agents are scheduled with every other agent), with the query's
  messages as they are (AIOS agents keep their own context), its tools, and
  the fields AIOS's own kernel drops: temperature, max tokens and
  `response_format`. A JSON schema (or JSON mode) is asked for as a forced
  call of one function whose parameters are the schema, which every core
  honours (natively, or by a grammar on the embedded model), and the answer
  is checked against the schema. `call_tool` also runs the calls;
  `operate_file` lets the model choose storage operations and runs them.
- **memory** and **storage** (`stores.py`): the agent's archival memory and
  its versioned files.
- **tool**: the llmos tools attached to the agent (its grant), in the OS
  sandbox, audited; an irreversible one waits for the user's approval.

Failures of an operation (no such memory, file or tool) are answered in the
response (`error`, `status_code`, `success`/`finished` false), as AIOS's
kernel does; malformed queries are HTTP errors.

Left out: tools and a response_format in one query (one or the other).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema

from llmos.agent.catalog import function_table
from llmos.agent.syscalls import FunctionContext, LLMSyscall, StepWrites, ToolSyscall
from llmos.errors import InvalidRequest
from llmos.kernel.kernel import AgentExists, AgentNotFound
from llmos.llm.core import ChatRequest, ToolCall, ToolSpec
from llmos.llm.registry import DEFAULT_MODEL
from llmos.llm.tokens import MESSAGE_OVERHEAD_TOKENS
from llmos.server.aios import shapes
from llmos.server.aios.stores import StoreOps
from llmos.server.deps import check_choices

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel
    from llmos.memory.image import AgentImage
    from llmos.server.deps import ServerConfig

#: max tokens of an llm query that names none (AIOS's LLMLayer default is 2048)
DEFAULT_MAX_TOKENS = 1024
RESPOND = "respond"


@dataclass(slots=True)
class AiosSettings:
    """What one user's AIOS setup calls chose (kept while the server runs)."""

    model: str | None = None
    max_new_tokens: int | None = None
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)


class AiosService(StoreOps):
    """The queries of one user's AIOS agents on the kernel."""

    def __init__(
        self, kernel: Kernel, config: ServerConfig, settings: AiosSettings, owner: str
    ) -> None:
        self.kernel = kernel
        self.config = config
        self.settings = settings
        self.owner = owner

    # --- agents -------------------------------------------------------------------

    async def agent(self, aios_name: str) -> AgentImage:
        """The user's llmos agent for an AIOS agent name, created on first use."""
        name = shapes.llmos_name(aios_name)
        try:
            return self.kernel.image(name, self.owner)
        except AgentNotFound:
            pass
        model = self.settings.model or self.config.default_model or DEFAULT_MODEL
        check_choices(self.config, model=model, embedder=self.config.default_embedder)
        with contextlib.suppress(AgentExists):  # else a concurrent first query made it
            await self.kernel.create_agent(
                name, model=model, owner=self.owner, embedder=self.config.default_embedder
            )
        return self.kernel.image(name, self.owner)

    # --- llm ----------------------------------------------------------------------

    async def llm(self, image: AgentImage, data: shapes.LLMQueryData, timer: shapes.Timer) -> dict:
        action = data.action_type
        if action in ("chat", "tool_use", "chat_with_json_output", "chat_with_tool_call_output"):
            return await self._chat(image, data, timer)
        if action == "call_tool":
            answer = await self._chat(image, data, timer)
            calls = answer.get("tool_calls") or []
            if not calls:
                return answer
            return await self.tool(image, shapes.ToolQueryData(tool_calls=calls))
        if action == "operate_file":
            return await self._operate_file(image, data, timer)
        raise InvalidRequest(
            f"action_type {action!r} is not one of chat, tool_use, call_tool, operate_file"
        )

    def _schema(
        self, data: shapes.LLMQueryData, has_tools: bool
    ) -> tuple[dict[str, Any] | None, bool]:
        """The JSON schema the answer must match (None: free text), and whether the
        schema is wrapped in `{"value": ...}` (a function's arguments are an object)."""
        fmt = data.response_format
        if fmt is not None:
            kind = fmt.get("type")
            if kind == "json_schema":
                schema = (fmt.get("json_schema") or {}).get("schema")
                if not isinstance(schema, dict):
                    raise InvalidRequest("response_format.json_schema.schema must be an object")
                try:
                    jsonschema.validators.validator_for(schema).check_schema(schema)
                except jsonschema.SchemaError as e:
                    raise InvalidRequest(f"response_format's schema is invalid: {e.message}") from e
            elif kind == "json_object":
                schema = {"type": "object"}
            elif kind in (None, "text"):
                return None, False
            else:
                raise InvalidRequest(
                    f"response_format.type {kind!r} is not one of text, json_object, json_schema"
                )
            if has_tools:
                raise InvalidRequest("send tools or a response_format, not both")
            if schema.get("type", "object") != "object":
                # a function's arguments are an object: wrap anything else
                return {
                    "type": "object",
                    "properties": {"value": schema},
                    "required": ["value"],
                }, True
            return schema, False
        if data.message_return_type == "json" and not has_tools:
            return {"type": "object"}, False
        return None, False

    def _sampling(self, data: shapes.LLMQueryData) -> tuple[float, int | None]:
        first = (data.llms or [{}])[0]
        first = first if isinstance(first, dict) else {}
        temperature = data.temperature
        if temperature is None and first.get("temperature") is not None:
            temperature = first["temperature"]
        if temperature is not None and (
            not isinstance(temperature, int | float) or not 0 <= temperature <= 2
        ):
            raise InvalidRequest("temperature must be a number from 0 to 2")
        max_tokens = (
            data.max_new_tokens
            or data.max_tokens
            or first.get("max_tokens")
            or first.get("max_new_tokens")
            or self.settings.max_new_tokens
        )
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise InvalidRequest("max tokens must be a positive integer")
        return float(temperature or 0.0), max_tokens

    async def _complete(
        self,
        image: AgentImage,
        messages: list[Any],
        tools: list[ToolSpec],
        tool_choice: str,
        data: shapes.LLMQueryData,
        timer: shapes.Timer,
    ) -> Any:
        temperature, asked = self._sampling(data)
        core = self.kernel.core(image.model, image.base_url)
        prompt = sum(
            core.count_tokens(m.text_for_count()) + MESSAGE_OVERHEAD_TOKENS for m in messages
        )
        if tools:
            prompt += core.count_tokens(json.dumps([t.to_openai() for t in tools]))
        room = core.context_window - prompt
        if room < 16:
            raise InvalidRequest(
                f"the messages take about {prompt} tokens of the model's {core.context_window}-"
                "token window; send fewer"
            )
        if asked is not None and asked > room:
            raise InvalidRequest(
                f"max tokens {asked} do not fit: the messages take about {prompt} of the model's "
                f"{core.context_window}-token window, leaving {room}"
            )
        request = ChatRequest(
            messages,
            tools=tools,
            max_tokens=asked or min(DEFAULT_MAX_TOKENS, room),
            temperature=temperature,
            tool_choice=tool_choice,  # type: ignore[arg-type]
            cache_key=image.id,
        )
        call = LLMSyscall(agent_id=image.id, core=core, request=request)
        response = await self.kernel.syscall(call)
        timer.started(call.started_at - call.queued_at)
        return response

    async def _chat(
        self, image: AgentImage, data: shapes.LLMQueryData, timer: shapes.Timer
    ) -> dict:
        messages = shapes.to_messages(data.messages)
        specs, names = shapes.to_tool_specs(data.tools or [])
        schema, wrapped = self._schema(data, bool(specs))
        if schema is not None:
            respond = ToolSpec(RESPOND, "Give your answer as this JSON object.", schema)
            response = await self._complete(image, messages, [respond], "required", data, timer)
            return _structured(response, schema, wrapped)
        choice = "auto" if specs else "none"
        response = await self._complete(image, messages, specs, choice, data, timer)
        calls = shapes.tool_calls_out(response.tool_calls, names) or None
        return shapes.llm_response(response.content, calls, usage=response.usage.as_dict())

    async def _operate_file(
        self, image: AgentImage, data: shapes.LLMQueryData, timer: shapes.Timer
    ) -> dict:
        messages = shapes.to_messages(data.messages)
        response = await self._complete(image, messages, FILE_TOOLS, "required", data, timer)
        done = []
        for call in response.tool_calls:
            params, error = _arguments(call)
            if params is None:
                done.append(f"{call.name}: {error}")
                continue
            result = await self.storage(
                image, shapes.OpsQueryData(operation_type=call.name, params=params)
            )
            done.append(
                f"{call.name} {params.get('file_path', '')}: "
                + (result["error"] or str(result["response_message"]))
            )
        return shapes.llm_response("\n".join(done) or "no file operation was chosen")

    # --- tools --------------------------------------------------------------------

    async def tool(self, image: AgentImage, data: shapes.ToolQueryData) -> dict:
        calls = data.calls()
        if not calls:
            raise InvalidRequest("a tool query needs tool_calls: [{name, parameters}]")
        results: list[Any] = []
        errors: list[str] = []
        for i, raw in enumerate(calls):
            call = shapes._call_from(raw, i) if isinstance(raw, dict) else None
            if call is None or not call.name:
                raise InvalidRequest(f"tool_calls[{i}] has no name")
            if function_table(call.name, image.settings) is not None:
                errors.append(
                    f"{call.name} is one of the agent loop's own functions; AIOS agents use "
                    "memory and storage queries instead"
                )
                continue
            ctx = FunctionContext(self.kernel, image, StepWrites())
            result = await self.kernel.syscall(ToolSyscall(agent_id=image.id, ctx=ctx, call=call))
            if result.waiting_approval:
                errors.append(result.message)
            elif result.ok:
                results.append(result.message)
            else:
                errors.append(result.message)
        message: Any = results[0] if len(results) == 1 else results
        if errors:
            return shapes.plain_response(
                "tool",
                message or None,
                error="; ".join(errors),
                status=202 if any("waiting for approval" in e for e in errors) else 403,
            )
        return shapes.plain_response("tool", message)


FILE_TOOLS = [
    ToolSpec(op, desc, {"type": "object", "properties": props, "required": list(props)})
    for op, desc, props in (
        (
            "write",
            "Write a text file.",
            {"file_path": {"type": "string"}, "content": {"type": "string"}},
        ),
        ("read", "Read a text file.", {"file_path": {"type": "string"}}),
        ("create_file", "Create an empty file.", {"file_path": {"type": "string"}}),
        ("delete_file", "Delete a file.", {"file_path": {"type": "string"}}),
        ("list_dir", "List the files under a directory.", {"dir_path": {"type": "string"}}),
    )
]


def _structured(response: Any, schema: dict[str, Any], wrapped: bool) -> dict:
    """The answer of a forced `respond` call, checked against `schema`, as JSON text."""
    call = next((c for c in response.tool_calls if c.name == RESPOND), None)
    raw = call.arguments if call is not None else (response.content or "")
    usage = response.usage.as_dict()
    try:
        value = json.loads(raw)
        jsonschema.validate(value, schema)
    except (ValueError, jsonschema.ValidationError) as e:
        why = e.message if isinstance(e, jsonschema.ValidationError) else f"not JSON ({e})"
        return shapes.llm_response(
            raw,
            error=f"the model's answer does not match the response format: {why}",
            status=502,
            usage=usage,
        )
    if wrapped:
        value = value["value"]
    return shapes.llm_response(json.dumps(value, ensure_ascii=False), usage=usage)


def _arguments(call: ToolCall) -> tuple[dict[str, Any] | None, str | None]:
    try:
        args = json.loads(call.arguments or "{}")
    except ValueError as e:
        return None, f"arguments are not JSON ({e})"
    return (args, None) if isinstance(args, dict) else (None, "arguments are not an object")
