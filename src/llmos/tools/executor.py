"""The executor of user-tool calls: grant check, approval, sandboxed run, audit.

Built-in functions run in-process through `agent/functions.py`; every other
function name an agent calls comes here (from `Kernel.sys_tool`). In order:

1. the arguments must be a JSON object (else a failed result, as for built-ins);
2. the agent must have the tool attached (its grant) — else the call is
   denied, audited, and the model told which functions it has;
3. an irreversible tool's call is stored as a pending approval and the model
   is told it waits; the loop ends the turn with stop reason `waiting_approval`;
4. otherwise the tool runs in the sandbox (exclusive tools one at a time),
   and the outcome is audited and returned, capped in length.

Like `functions.execute()`, this never raises: every failure is a result the
model can read and act on.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from llmos.agent.functions import BUILTINS, FunctionResult

if TYPE_CHECKING:
    from llmos.agent.functions import FunctionContext
    from llmos.kernel.kernel import Kernel
    from llmos.llm.core import ToolCall
    from llmos.tools.sandbox import SandboxResult

#: longest tool result the model sees, in characters
MAX_RESULT_CHARS = 8000


def clip(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


def parse_arguments(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """(arguments, error): the call's JSON object, without request_heartbeat."""
    try:
        args = json.loads(raw) if raw.strip() else {}
    except ValueError as e:
        return None, f"arguments are not valid JSON ({e}); send a JSON object"
    if not isinstance(args, dict):
        return None, "arguments must be a JSON object"
    return args, None


def outcome(name: str, result: SandboxResult, heartbeat: bool) -> FunctionResult:
    if result.ok:
        return FunctionResult(name, True, clip(result.message()), heartbeat=heartbeat)
    return FunctionResult(name, False, clip(f"tool failed: {result.message()}"), heartbeat=True)


async def execute_user_tool(kernel: Kernel, ctx: FunctionContext, call: ToolCall) -> FunctionResult:
    try:
        return await _execute(kernel, ctx, call)
    except Exception as e:  # a database hiccup must not kill the turn either
        return FunctionResult(
            call.name, False, f"internal error: {type(e).__name__}: {e}", heartbeat=True
        )


async def _execute(kernel: Kernel, ctx: FunctionContext, call: ToolCall) -> FunctionResult:
    agent = ctx.agent
    attached = kernel.tools.attached(agent.id, agent.owner)
    tool = next((t for t in attached if t.name == call.name), None)
    audit = {"agent_id": agent.id, "agent_name": agent.name, "target": call.name or None}
    if tool is None:
        exists = bool(call.name) and kernel.tools.get(agent.owner, call.name) is not None
        known = ", ".join([*BUILTINS, *(t.name for t in attached)])
        if exists:
            kernel.audit_log.record(
                agent.owner, "tool", "denied", detail="tool not granted to this agent", **audit
            )
            msg = (
                f"permission denied: you are not granted the tool {call.name!r}; available: {known}"
            )
        else:
            shown = call.name or "(no function name)"
            msg = f"unknown function {shown!r}; available: {known}"
        return FunctionResult(call.name, False, msg, heartbeat=True)

    args, error = parse_arguments(call.arguments)
    if args is None:
        return FunctionResult(call.name, False, str(error), heartbeat=True)
    heartbeat = bool(args.pop("request_heartbeat", False))

    if tool.irreversible:
        arguments = json.dumps(args, ensure_ascii=False)
        approval_id = kernel.approval_store.create(
            agent.owner, agent.id, tool.name, arguments, call.id
        )
        kernel.audit_log.record(
            agent.owner, "tool", "approval_requested", detail=f"{approval_id} {arguments}", **audit
        )
        kernel.note_pending_approval(agent.id, +1)
        result = FunctionResult(
            tool.name,
            False,
            f"waiting for approval: {tool.name} is irreversible, so your owner must approve "
            f"this call (approval {approval_id}). You will receive the decision and the "
            "result as an event; until then, do not call it again.",
        )
        result.waiting_approval = approval_id
        return result

    ran = await kernel.tools.run(tool, args)
    kernel.audit_log.record(
        agent.owner,
        "tool",
        "allowed",
        detail=f"ok in {ran.seconds:.2f}s" if ran.ok else f"failed: {ran.error}",
        **audit,
    )
    return outcome(tool.name, ran, heartbeat)
