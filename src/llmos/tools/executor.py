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

The executor sees the kernel only through `ToolHost` and the calling agent
only through `CallContext`, two Protocols declared here; the kernel passes the
built-in function names and the result type of `agent/functions.py`, so
`tools/` imports neither `kernel/` nor `agent/`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from llmos.access.approvals import Approvals
    from llmos.access.audit import AuditLog
    from llmos.llm.core import ToolCall
    from llmos.tools.registry import ToolManager
    from llmos.tools.sandbox import SandboxResult

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class ToolHost(Protocol):
    """What the executor uses of the kernel: its tools, audit log and approval store."""

    @property
    def tools(self) -> ToolManager: ...

    @property
    def audit_log(self) -> AuditLog: ...

    @property
    def approval_store(self) -> Approvals: ...

    def note_pending_approval(self, agent_id: str, delta: int) -> None:
        """Count one more (+1) or one fewer (-1) call of the agent waiting for approval."""


class CallingAgent(Protocol):
    """The fields of the calling agent the executor reads."""

    @property
    def id(self) -> str: ...

    @property
    def owner(self) -> str: ...

    @property
    def name(self) -> str: ...


class CallContext(Protocol):
    """The call's context (`agent/functions.py`'s FunctionContext): who is calling."""

    @property
    def agent(self) -> CallingAgent: ...


class ResultType(Protocol[R_co]):
    """Builds the result of one call (`agent/functions.py`'s FunctionResult)."""

    def __call__(
        self,
        name: str,
        ok: bool,
        message: str,
        *,
        heartbeat: bool = False,
        waiting_approval: str | None = None,
    ) -> R_co: ...


#: longest tool result the model sees, in characters
MAX_RESULT_CHARS = 8000


def clip(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    """`text`, cut to `limit` characters with a note of how much was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


def parse_arguments(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """(arguments, None) for a JSON object (empty text is `{}`), else (None, why not)."""
    try:
        args = json.loads(raw) if raw.strip() else {}
    except ValueError as e:
        return None, f"arguments are not valid JSON ({e}); send a JSON object"
    if not isinstance(args, dict):
        return None, "arguments must be a JSON object"
    return args, None


def _outcome(result: ResultType[R], name: str, ran: SandboxResult, heartbeat: bool) -> R:
    if ran.ok:
        return result(name, True, clip(ran.message()), heartbeat=heartbeat)
    return result(name, False, clip(f"tool failed: {ran.message()}"), heartbeat=True)


async def execute_user_tool(
    host: ToolHost,
    ctx: CallContext,
    call: ToolCall,
    builtins: Iterable[str],
    result: ResultType[R],
) -> R:
    """Run one call of a user tool for `ctx.agent`, as `result(...)`; never raises.

    `builtins` are the names of the functions every agent has, listed to the
    model (with its attached tools) when it calls a function it does not have.
    """
    try:
        return await _execute(host, ctx, call, builtins, result)
    except Exception as e:  # a database hiccup must not kill the turn either
        return result(call.name, False, f"internal error: {type(e).__name__}: {e}", heartbeat=True)


async def _execute(
    host: ToolHost,
    ctx: CallContext,
    call: ToolCall,
    builtins: Iterable[str],
    result: ResultType[R],
) -> R:
    agent = ctx.agent
    attached = host.tools.attached(agent.id, agent.owner)
    tool = next((t for t in attached if t.name == call.name), None)
    audit = {"agent_id": agent.id, "agent_name": agent.name, "target": call.name or None}
    if tool is None:
        exists = bool(call.name) and host.tools.get(agent.owner, call.name) is not None
        known = ", ".join([*builtins, *(t.name for t in attached)])
        if exists:
            host.audit_log.record(
                agent.owner, "tool", "denied", detail="tool not granted to this agent", **audit
            )
            msg = (
                f"permission denied: you are not granted the tool {call.name!r}; available: {known}"
            )
        else:
            shown = call.name or "(no function name)"
            msg = f"unknown function {shown!r}; available: {known}"
        return result(call.name, False, msg, heartbeat=True)

    args, error = parse_arguments(call.arguments)
    if args is None:
        return result(call.name, False, str(error), heartbeat=True)
    heartbeat = bool(args.pop("request_heartbeat", False))

    if tool.irreversible:
        arguments = json.dumps(args, ensure_ascii=False)
        approval_id = host.approval_store.create(
            agent.owner, agent.id, tool.name, arguments, call.id
        )
        host.audit_log.record(
            agent.owner, "tool", "approval_requested", detail=f"{approval_id} {arguments}", **audit
        )
        host.note_pending_approval(agent.id, +1)
        return result(
            tool.name,
            False,
            f"waiting for approval: {tool.name} is irreversible, so your owner must approve "
            f"this call (approval {approval_id}). You will receive the decision and the "
            "result as an event; until then, do not call it again.",
            waiting_approval=approval_id,
        )

    ran = await host.tools.run(tool, args, agent.id)
    host.audit_log.record(
        agent.owner,
        "tool",
        "allowed",
        detail=f"ok in {ran.seconds:.2f}s" if ran.ok else f"failed: {ran.error}",
        **audit,
    )
    return _outcome(result, tool.name, ran, heartbeat)
