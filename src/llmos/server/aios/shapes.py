"""The shapes of AIOS's kernel API: requests in both SDK generations, and the envelope.

A request is `{agent_name, query_type: llm|memory|storage|tool, query_data}`.
`query_data` differs between the SDK on PyPI (`aios-agent-sdk` 0.0.3) and
the current Cerebrum: memory and storage queries were `{messages,
operation_type}` and are now `{params, operation_type}`; an llm query gained
`llms`, `response_format` and sampling fields. Both are accepted: a 0.0.3
query's `messages` become its params (every key of every message but `role`,
later messages winning, so `content` is the last message's).

AIOS's kernel answers `{"response": {...}, "start_times", "end_times",
"waiting_times", "turnaround_times"}`, the response being an `LLMResponse`
(`response_message`, `tool_calls`, `finished`, `error`, `status_code`), a
`MemoryResponse` (`memory_id`, `content`, `metadata`, `search_results`,
`success`, `error`) or a storage/tool response (`response_message`,
`finished`, `error`); `envelope` builds it. Agents read
`result["response"]["response_message"]`.

AIOS agent names (`author/name`) become llmos agent names with `/` turned
into `:` (`example:academic_agent`), so the API's URL paths can name them.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmos.errors import InvalidRequest
from llmos.llm.core import Message, ToolCall, ToolSpec

#: AIOS agent names llmos takes: letters, digits, _ . @ + - and "/" (not ":",
#: which "/" maps to, so two AIOS names never map to one llmos name)
AIOS_NAME = re.compile(r"^[A-Za-z0-9_.@+-](?:[A-Za-z0-9_.@+/-]{0,126}[A-Za-z0-9_.@+-])?$")
#: an llmos agent id: refused as a name, so a name never reaches an agent by id
_AGENT_ID = re.compile(r"^agent-[0-9a-f]{16}$")
_TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]")


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    agent_name: str = Field(min_length=1, max_length=128)
    query_type: Literal["llm", "memory", "storage", "tool"]
    query_data: dict[str, Any]


class LLMQueryData(BaseModel):
    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)
    tools: list[dict[str, Any]] | None = Field(None, max_length=128)
    action_type: str = "chat"
    message_return_type: str = "text"
    response_format: dict[str, Any] | None = None
    llms: list[dict[str, Any]] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_new_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)


class OpsQueryData(BaseModel):
    """A memory or storage query: `{params, operation_type}` (or 0.0.3's `messages`)."""

    model_config = ConfigDict(extra="allow")

    operation_type: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = Field(None, max_length=10_000)

    def all_params(self) -> dict[str, Any]:
        if self.params is not None:
            return dict(self.params)
        merged: dict[str, Any] = {}
        for message in self.messages or []:
            merged.update({k: v for k, v in message.items() if k != "role"})
        return merged


class ToolQueryData(BaseModel):
    model_config = ConfigDict(extra="allow")

    tool_calls: list[dict[str, Any]] | None = Field(None, max_length=64)
    params: dict[str, Any] | None = None

    def calls(self) -> list[dict[str, Any]]:
        if self.tool_calls is not None:
            return self.tool_calls
        params = self.params or {}
        if isinstance(params.get("tool_calls"), list):
            return params["tool_calls"]
        return [params] if params.get("name") else []


def llmos_name(aios_name: str) -> str:
    """The llmos agent name of an AIOS agent name; InvalidRequest for one llmos cannot take."""
    name = aios_name.strip()
    if not AIOS_NAME.match(name) or "//" in name:
        raise InvalidRequest(
            f"agent_name {aios_name!r} is not a valid agent name: 1 to 128 letters, digits "
            "or _ . @ + - /, not starting or ending with /"
        )
    if _AGENT_ID.match(name):
        raise InvalidRequest(f"agent_name {aios_name!r} looks like an llmos agent id; use a name")
    return name.replace("/", ":")


# --- the envelope ---------------------------------------------------------------


class Timer:
    """Wall-clock times of one query, as AIOS's kernel reports them."""

    def __init__(self) -> None:
        self.created = time.time()
        self.start = self.created

    def started(self, queued_for: float = 0.0) -> None:
        self.start = self.created + max(0.0, queued_for)


def envelope(response: dict[str, Any], timer: Timer) -> dict[str, Any]:
    end = time.time()
    return {
        "response": response,
        "start_times": [timer.start],
        "end_times": [end],
        "waiting_times": [round(timer.start - timer.created, 6)],
        "turnaround_times": [round(end - timer.created, 6)],
    }


def llm_response(
    message: str | None,
    tool_calls: list[dict[str, Any]] | None = None,
    *,
    error: str | None = None,
    status: int = 200,
    **more: Any,
) -> dict[str, Any]:
    return {
        "response_class": "llm",
        "response_message": message,
        "tool_calls": tool_calls,
        "finished": error is None,
        "error": error,
        "status_code": status,
        **more,
    }


def memory_response(
    *, error: str | None = None, status: int = 200, **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "response_class": "memory",
        "memory_id": None,
        "content": None,
        "metadata": None,
        "search_results": None,
        "success": error is None,
        "error": error,
        "status_code": status,
    }
    body.update(fields)
    return body


def plain_response(
    kind: str, message: Any, *, error: str | None = None, status: int = 200
) -> dict[str, Any]:
    """A storage or tool response."""
    return {
        "response_class": kind,
        "response_message": message,
        "finished": True,
        "error": error,
        "status_code": status,
    }


# --- messages and tools -------------------------------------------------------------


def _text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("text")
        )
    return json.dumps(content, ensure_ascii=False)


def _call_from(raw: dict[str, Any], index: int) -> ToolCall:
    """A tool call in any of AIOS's shapes: {name, parameters}, {name, arguments}, OpenAI's."""
    fn = raw.get("function") if isinstance(raw.get("function"), dict) else raw
    name = str(fn.get("name") or "")
    args = fn.get("parameters", fn.get("arguments", {}))
    arguments = args if isinstance(args, str) else json.dumps(args or {}, ensure_ascii=False)
    return ToolCall(str(raw.get("id") or f"call_{index}"), name, arguments)


def to_messages(raw: list[dict[str, Any]]) -> list[Message]:
    out: list[Message] = []
    for i, m in enumerate(raw):
        role = m.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise InvalidRequest(
                f"messages[{i}].role must be system, user, assistant or tool; got {role!r}"
            )
        msg = Message(role, _text(m.get("content")))
        if role == "assistant" and isinstance(m.get("tool_calls"), list):
            msg.tool_calls = [
                _call_from(c, j) for j, c in enumerate(m["tool_calls"]) if isinstance(c, dict)
            ]
        if role == "tool":
            msg.tool_call_id = str(m.get("tool_call_id") or "")
            msg.name = m.get("name")
        out.append(msg)
    return out


def to_tool_specs(raw: list[dict[str, Any]]) -> tuple[list[ToolSpec], dict[str, str]]:
    """ToolSpecs for the model, and the map back from the names sent to AIOS's names.

    AIOS tool names carry an author (`demo_author/arxiv`); function names a
    provider takes are `[A-Za-z0-9_-]`, so the others are replaced by `_`.
    """
    specs: list[ToolSpec] = []
    names: dict[str, str] = {}
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"tools[{i}] has no name")
        sent = _TOOL_NAME.sub("_", name)[:64]
        if sent in names:
            raise InvalidRequest(f"tools[{i}]: two tools are named {sent!r}")
        names[sent] = name
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise InvalidRequest(f"tools[{i}].parameters must be a JSON schema object")
        specs.append(ToolSpec(sent, str(fn.get("description") or ""), params))
    return specs, names


def tool_calls_out(calls: list[ToolCall], names: dict[str, str]) -> list[dict[str, Any]]:
    """The model's calls as AIOS reports them: `{id, name, parameters}`."""
    out = []
    for c in calls:
        try:
            params: Any = json.loads(c.arguments) if c.arguments.strip() else {}
        except ValueError:
            params = c.arguments  # not JSON: the agent sees what the model wrote
        out.append({"id": c.id, "name": names.get(c.name, c.name), "parameters": params})
    return out
