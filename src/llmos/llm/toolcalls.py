"""Tool calling in text, for models without native function calling.

A local base model (Gemma 3 270M) knows nothing of OpenAI's `tools` field, so
llmos does it in text:

* `render_tools_prompt` lists the functions compactly for the system text and
  asks for exactly one JSON object `{"function": NAME, "arguments": {...}}`;
* `call_schema` is the JSON schema of that object, from which a backend that
  supports it builds a grammar so the output is well formed whatever the model
  "means";
* `parse_call` turns the model's text back into a `ToolCall`: it finds the
  call (in a code fence, after prose that has braces of its own) and has the
  `json_repair` library mend the usual damage (trailing commas, single quotes,
  Python literals, unquoted keys, an object cut off by max_tokens, where what
  the cut left half-written is dropped rather than guessed). It never raises:
  an unusable answer becomes a call named "" whose arguments are the raw
  text, which the executor reports to the model as a failed call;
  `as_tool_call` does the same for a whole `ChatResponse`;
* `flatten_messages` rewrites a conversation that contains tool calls and tool
  results into plain user/assistant text for such backends.

Left out: several calls in one answer (MemGPT agents make one call per step),
and validation of the arguments against the schema (the executor's job).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

import json_repair

from llmos.llm.core import ChatResponse, Core, Message, ToolCall, ToolSpec, tools_json

__all__ = [
    "as_tool_call",
    "call_schema",
    "flatten_messages",
    "new_call_id",
    "parse_call",
    "render_tools_prompt",
    "tools_text",
]


def new_call_id() -> str:
    """A fresh id in OpenAI's style: `call_` and 12 hex digits."""
    return "call_" + secrets.token_hex(6)


# --- rendering -----------------------------------------------------------------


def _type_text(schema: dict[str, Any]) -> str:
    """A short human-readable type for a property schema (e.g. `string`, `"a"|"b"`)."""
    if "enum" in schema:
        return "|".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"], ensure_ascii=False)
    for key in ("anyOf", "oneOf"):
        if key in schema and isinstance(schema[key], list):
            return "|".join(_type_text(s) for s in schema[key] if isinstance(s, dict))
    t = schema.get("type")
    if isinstance(t, list):
        return "|".join(str(x) for x in t)
    if t == "array":
        items = schema.get("items")
        return f"array of {_type_text(items)}" if isinstance(items, dict) else "array"
    return str(t) if t else "any"


def render_tools_prompt(tools: Sequence[ToolSpec]) -> str:
    """The functions as compact text plus the answer-format instruction.

    One line per function, one indented line per argument; optional arguments
    are marked. Every token here is prompt-eval time on a CPU model, so there is
    no boilerplate beyond what a small model needs to pick a name and fill keys.
    """
    lines = ["You can call these functions:"]
    for tool in tools:
        desc = " ".join(tool.description.split())
        lines.append(f"- {tool.name}: {desc}" if desc else f"- {tool.name}")
        params = tool.parameters or {}
        required = set(params.get("required") or [])
        for arg, spec in (params.get("properties") or {}).items():
            spec = spec if isinstance(spec, dict) else {}
            kind = _type_text(spec)
            flag = "" if arg in required else ", optional"
            arg_desc = " ".join(str(spec.get("description", "")).split())
            lines.append(f"  {arg} ({kind}{flag})" + (f": {arg_desc}" if arg_desc else ""))
    lines.append('Answer with exactly one JSON object: {"function": NAME, "arguments": {...}}')
    return "\n".join(lines)


def tools_text(core: Core, tools: Sequence[ToolSpec]) -> str:
    """The tools as the core's prompt holds them, for counting their tokens: compact
    JSON where the backend takes tools natively, else the text `render_tools_prompt`
    puts into the prompt."""
    if getattr(core, "native_tools", True):
        return tools_json(tools)
    return render_tools_prompt(tools)


def _closed(parameters: dict[str, Any]) -> dict[str, Any]:
    """`parameters` with `additionalProperties: false` unless it says otherwise."""
    out = dict(parameters)
    if out.get("type", "object") == "object":
        out.setdefault("type", "object")
        out.setdefault("properties", {})
        out.setdefault("additionalProperties", False)
    return out


def call_schema(tools: Sequence[ToolSpec], *, closed: bool = False) -> dict[str, Any]:
    """JSON schema of `{"function": <one of the names>, "arguments": <its schema>}`.

    `closed=True` also forbids keys a function does not declare: a grammar built
    from the open schema lets a weak model invent extra keys, and every such
    token costs a constrained decoding step.
    """
    variants: list[dict[str, Any]] = []
    for tool in tools:
        params = tool.parameters or {"type": "object", "properties": {}}
        variants.append(
            {
                "type": "object",
                # Insertion order matters: grammar builders emit properties in
                # this order, and the function name must come first so the
                # arguments are generated knowing which function they are for.
                "properties": {
                    "function": {"enum": [tool.name]},
                    "arguments": _closed(params) if closed else params,
                },
                "required": ["function", "arguments"],
                "additionalProperties": False,
            }
        )
    if len(variants) == 1:
        return variants[0]
    return {"anyOf": variants}


# --- parsing -------------------------------------------------------------------

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|\Z)", re.S)
# What a cut at the end of the text can leave half-written outside a string,
# dropped before repairing: a bare word that may be the start of anything
# ("Tr", an unquoted key), then a key left without its value.
_CUT_WORD = re.compile(r"(?<![\w$.\-])[A-Za-z_$][\w$.-]*\Z")
_KEY = r"(?:\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[A-Za-z_$][\w$.-]*)"
_CUT_KEY = re.compile(r",?\s*" + _KEY + r"\s*:\s*\Z")
_LITERALS = frozenset({"true", "false", "null", "True", "False", "None"})


def _ends_in_string(text: str) -> bool:
    quote: str | None = None
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = quote is not None
        elif quote is None and ch in "\"'":
            quote = ch
        elif ch == quote:
            quote = None
    return quote is not None


def _drop_cut_tail(text: str) -> str:
    """`text` without what a cut at its end left half-written.

    A string cut short keeps what it has (less a backslash that began an
    escape); outside a string a cut word and then a key without value go.
    """
    text = text.rstrip()
    if _ends_in_string(text):
        return text[:-1] if (len(text) - len(text.rstrip("\\"))) % 2 else text
    word = _CUT_WORD.search(text)
    if word and word.group() not in _LITERALS:
        text = text[: word.start()]
    key = _CUT_KEY.search(text)
    return text[: key.start()] if key else text


def _repair(text: str) -> Any | None:
    """Best-effort JSON value from damaged text that starts at `{` or `[`; None if nothing."""
    value = json_repair.repair_json(_drop_cut_tail(text), return_objects=True, skip_json_loads=True)
    return None if value == "" else value


_NAME_KEYS = ("function", "name", "tool")
# Prose may hold braces before the call ("use {name} ..."): try this many
# opening braces for a clean object with a name key before repairing.
_MAX_STARTS = 16


def _extract(text: str) -> Any | None:
    """The JSON object holding the call in `text`, repaired if needed; None if none."""
    fenced = _FENCE.search(text)
    sources = [fenced.group(1)] if fenced else []
    sources.append(text)
    decoder = json.JSONDecoder()
    for src in sources:
        starts = [m.start() for m in re.finditer(r"\{", src)][:_MAX_STARTS]
        for start in starts:
            try:
                value, _ = decoder.raw_decode(src, start)
            except ValueError:
                continue
            if isinstance(value, dict) and any(k in value for k in _NAME_KEYS):
                return value
        for start in starts:
            value = _repair(src[start:])
            if isinstance(value, list) and value and isinstance(value[0], dict):
                value = value[0]
            if isinstance(value, dict) and any(k in value for k in _NAME_KEYS):
                return value
    return None


def _as_arguments(value: Any) -> Any:
    """Arguments as a dict when possible: a JSON string inside is decoded."""
    if isinstance(value, str):
        stripped = value.strip()
        if not stripped:
            return {}
        try:
            return json.loads(stripped)
        except ValueError:
            repaired = _repair(stripped) if stripped[0] in "{[" else None
            return repaired if repaired is not None else value
    return {} if value is None else value


def _match_name(name: str, names: Iterable[str]) -> str:
    """`name` mapped onto a known function name when it differs only cosmetically."""
    known = list(names)
    if not known or name in known:
        return name
    bare = name.strip().rsplit(".", 1)[-1].strip()  # "functions.send_message"
    for k in known:
        if k.lower() == bare.lower():
            return k
    return name


def parse_call(text: str, tools: Sequence[ToolSpec] = ()) -> ToolCall:
    """The function call in a model's text answer. Never raises.

    Accepts `{"function": NAME, "arguments": {...}}`, `{"name": ..., "arguments"
    or "parameters": ...}`, OpenAI's `{"function": {"name": ..., "arguments":
    ...}}`, and arguments given as a JSON string. Nothing usable gives a call
    named "" with the raw text as its arguments.
    """
    call_id = new_call_id()
    try:
        obj = _extract(text or "")
    except Exception:  # repair is heuristic; a failure in it must not kill the agent
        obj = None
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        obj = obj[0]
    if not isinstance(obj, dict):
        return ToolCall(id=call_id, name="", arguments=text or "")

    name: Any = next((obj[k] for k in _NAME_KEYS if k in obj), None)
    args: Any = None
    for key in ("arguments", "parameters", "args", "input"):
        if key in obj:
            args = obj[key]
            break
    if isinstance(name, dict):  # OpenAI's nested shape
        args = name.get("arguments", name.get("parameters", args))
        name = name.get("name")
    if not isinstance(name, str) or not name.strip():
        return ToolCall(id=call_id, name="", arguments=text or "")

    name = _match_name(name.strip(), (t.name for t in tools))
    args = _as_arguments(args)
    # Undecodable arguments go on raw: the executor reports them to the model.
    arguments = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return ToolCall(id=call_id, name=name, arguments=arguments)


def as_tool_call(response: ChatResponse, tools: Sequence[ToolSpec]) -> ChatResponse:
    """The text answer of a model asked for a call in text, as that `ToolCall`.

    An answer that already holds calls (the server did function calling after
    all) is returned as it is.
    """
    if response.tool_calls:
        return response
    call = parse_call(response.content or "", tools)
    finish = response.finish_reason
    # Keep "length" (a truncated call); a normal stop is a tool call.
    return ChatResponse(None, [call], response.usage, "tool_calls" if finish == "stop" else finish)


# --- flattening ----------------------------------------------------------------


def _call_text(call: ToolCall) -> str:
    """A call as the JSON object a text-only model would have produced."""
    try:
        args: Any = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        args = call.arguments
    return json.dumps({"function": call.name, "arguments": args}, ensure_ascii=False)


def flatten_messages(messages: Sequence[Message]) -> list[Message]:
    """Messages with tool calls and results rewritten as plain text, roles merged.

    Assistant tool calls become the JSON object the model would have written
    (after the message's own content, if any); tool results become user
    messages `[function result: NAME] ...`. Consecutive messages of one role
    are merged so roles alternate, which Gemma-style turn formats require.
    """
    names_by_id: dict[str, str] = {}
    flat: list[Message] = []
    for msg in messages:
        if msg.role == "assistant" and msg.tool_calls:
            for c in msg.tool_calls:
                names_by_id[c.id] = c.name
            parts = [msg.content.strip()] if msg.content and msg.content.strip() else []
            parts += [_call_text(c) for c in msg.tool_calls]
            new = Message(role="assistant", content="\n".join(parts))
        elif msg.role == "tool":
            fname = msg.name or names_by_id.get(msg.tool_call_id or "", "") or "unknown"
            new = Message(role="user", content=f"[function result: {fname}] {msg.content or ''}")
        else:
            new = Message(role=msg.role, content=msg.content or "")
        if flat and flat[-1].role == new.role:
            flat[-1] = Message(
                role=new.role, content=f"{flat[-1].content}\n\n{new.content}".strip("\n")
            )
        else:
            flat.append(new)
    return flat
