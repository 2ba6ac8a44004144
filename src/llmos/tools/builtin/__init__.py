"""Built-in tools: peripherals the kernel provides, attached to an agent like any tool.

`calculate` (arithmetic without running code), `current_time`, `fetch_url`
(HTTP GET of allowed hosts; off until the operator lists some) and
`run_python` (code in the tool sandbox). Unlike the kernel's functions
(`agent/functions.py`), an agent has none of them until its owner attaches
one (`llmos tool attach AGENT calculate`): attaching is the grant, the call
goes through the tool executor and is audited like a user tool's.
`tools/registry.py` serves them beside the owner's tools under these
reserved names.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from llmos.tools.builtin import calculate, current_time, fetch_url, run_python
from llmos.tools.builtin.base import Builtin, Env, failed
from llmos.tools.sandbox import SandboxResult

__all__ = ["BUILTIN_PREFIX", "TOOLS", "Builtin", "Env", "parameters", "run", "source_of"]

TOOLS: dict[str, Builtin] = {
    t.name: t for t in (calculate.TOOL, current_time.TOOL, fetch_url.TOOL, run_python.TOOL)
}
#: the `source` a built-in tool's UserTool carries in place of Python code
BUILTIN_PREFIX = "builtin:"
HEARTBEAT_DOC = "true: take another step after this call"


def source_of(name: str) -> str:
    return BUILTIN_PREFIX + name


def parameters(tool: Builtin) -> dict[str, Any]:
    """The JSON schema the model sees (no pydantic titles; request_heartbeat last)."""
    schema = tool.args.model_json_schema()
    props = {
        k: {kk: vv for kk, vv in v.items() if kk != "title"}
        for k, v in schema.get("properties", {}).items()
    }
    props["request_heartbeat"] = {"type": "boolean", "default": False, "description": HEARTBEAT_DOC}
    out: dict[str, Any] = {"type": "object", "properties": props}
    if schema.get("required"):
        out["required"] = schema["required"]
    return out


async def run(name: str, args: dict[str, Any], env: Env) -> SandboxResult:
    """One call of a built-in tool; every failure is a failed result, never an exception."""
    tool = TOOLS.get(name)
    if tool is None:
        return failed(f"no built-in tool {name!r}")
    try:
        parsed = tool.args.model_validate(args)
    except ValidationError as e:
        msgs = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'arguments'}: {err['msg']}"
            for err in e.errors()
        )
        return failed(f"invalid arguments: {msgs}")
    try:
        return await tool.run(parsed, env)
    except Exception as e:  # a bug must not kill the turn
        return failed(f"internal error: {type(e).__name__}: {e}")
