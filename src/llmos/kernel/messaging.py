"""Agent-to-agent messages: the kernel side of `send_message_to_agent[_and_wait_for_reply]`.

An agent messages another agent of the same owner through an `AgentSyscall`,
served here. In order:

1. the target is looked up among the caller's owner's agents only (another
   owner's agent is "no such agent", so names do not leak across owners);
2. the access manager checks that the caller holds a grant of kind `agent`
   naming the target (or `*`); a denial is audited and fails the call;
3. loop protection: every message carries a hop count (1 for a message an
   agent sends in a turn a user started, one more for each agent message that
   led to it). Past `MAX_HOPS` the call fails, so A→B→A→… ends;
4. deadlock protection for waiting calls: the kernel keeps a wait-for graph
   (caller → the agent whose reply it waits for). An agent waits on another
   while holding its own lock (its turn is running), so a wait that would
   close a cycle (A waits for B, and B now asks A) can never be served: it
   fails at once with a message telling the agent to reply instead;
5. delivery: the message becomes a `[message from agent …]` event of the
   target's, and the target runs a turn — in a background task for
   `send_message_to_agent`, awaited (with a timeout) for the waiting form,
   whose result is the target's `send_message` reply.

Left out: messages between owners, replies of fire-and-forget messages
routed back to the sender (the target can message back if granted), and
delivery that survives a restart (a message queued in a background task is
lost if the process exits first; the target's recall has every delivered one).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import TYPE_CHECKING, Any

from llmos.agent.functions import FunctionError
from llmos.kernel.agents import AgentNotFound

if TYPE_CHECKING:
    from llmos.access.audit import AuditLog
    from llmos.access.grants import Grants
    from llmos.agent.loop import Turn
    from llmos.agent.syscalls import AgentSyscall
    from llmos.kernel.wake import Waker
    from llmos.memory.image import AgentImage
    from llmos.memory.recall import StoredMessage

log = logging.getLogger(__name__)

#: the most agent-to-agent hops one user message may lead to
MAX_HOPS = 3
#: how long `send_message_to_agent_and_wait_for_reply` waits for the reply
REPLY_TIMEOUT = 300.0

# The hop count of the message whose turn is running in this task. A turn's
# function calls run in the task that runs the turn, so a message an agent
# sends sees the count of the message that woke it; a user's turn sees 0.
_hops: contextvars.ContextVar[int] = contextvars.ContextVar("llmos_agent_hops", default=0)


class AgentMessenger:
    """Serves agent syscalls for one kernel; owns the wait-for graph and background deliveries."""

    def __init__(self, waker: Waker, grants: Grants, audit_log: AuditLog) -> None:
        self.waker = waker
        self.grants = grants
        self.audit_log = audit_log
        self.max_hops = MAX_HOPS
        self.reply_timeout = REPLY_TIMEOUT
        # caller agent id -> the agent id whose reply it is waiting for
        self.waits_for: dict[str, str] = {}
        self.background: set[asyncio.Task[Any]] = set()

    # --- checks ---------------------------------------------------------------

    def _audit(self, caller: AgentImage, target: str, decision: str, detail: str) -> None:
        self.audit_log.record(
            caller.owner,
            "agent",
            decision,
            agent_id=caller.id,
            agent_name=caller.name,
            target=target,
            detail=detail,
        )

    def _target(self, caller: AgentImage, name: str, wait: bool) -> AgentImage:
        verb = "ask" if wait else "message"
        try:
            target = self.waker.image(name, caller.owner)
        except AgentNotFound:
            self._audit(caller, name, "denied", "no such agent")
            raise FunctionError(f"there is no agent named {name!r}") from None
        if target.id == caller.id:
            raise FunctionError("that agent is you; use send_message to talk to your user")
        grants = self.grants
        if not (
            grants.allows(caller.id, "agent", target.name)
            or grants.allows(caller.id, "agent", target.id)
        ):
            self._audit(caller, target.name, "denied", f"no agent grant ({verb})")
            raise FunctionError(f"permission denied: you may not message the agent {name!r}")
        return target

    def _would_deadlock(self, caller_id: str, target_id: str) -> bool:
        """Whether waiting for `target_id` closes a cycle in the wait-for graph."""
        seen: set[str] = set()
        node: str | None = target_id
        while node is not None and node not in seen:
            if node == caller_id:
                return True
            seen.add(node)
            node = self.waits_for.get(node)
        return False

    # --- the syscall ----------------------------------------------------------

    async def serve(self, call: AgentSyscall) -> str:
        """Deliver `call`'s message; returns the text of the function's result.

        Raises FunctionError (which the executor turns into a failed result)
        for a missing or forbidden target, the hop limit, a wait that would
        deadlock, and a reply that does not come in time.
        """
        caller: AgentImage = call.args["caller"]
        message: str = call.args["message"]
        wait: bool = call.op == "ask"
        if not message.strip():
            raise FunctionError("the message is empty")
        target = self._target(caller, call.args["target"], wait)
        hops = _hops.get() + 1
        if hops > self.max_hops:
            self._audit(caller, target.name, "failed", f"hop limit {self.max_hops}")
            raise FunctionError(
                f"not delivered: this conversation between agents reached the limit of "
                f"{self.max_hops} hops. Stop messaging agents about it and answer with what "
                "you have."
            )
        if wait and self._would_deadlock(caller.id, target.id):
            self._audit(caller, target.name, "failed", "would deadlock")
            raise FunctionError(
                f"{target.name} is waiting for your reply, so it cannot answer a question "
                "now. Reply to it with send_message instead (or use send_message_to_agent, "
                "which does not wait)."
            )
        event = self._event(target, self._event_text(caller, message, hops, wait))
        self._audit(caller, target.name, "allowed", f"{call.op}, hop {hops}")
        task = asyncio.create_task(self._deliver(target, event, hops))
        self.background.add(task)
        task.add_done_callback(self._finished)
        if not wait:
            return (
                f"Delivered to {target.name}; it will read it in a turn of its own. Its reply "
                "does not come back to you unless it messages you."
            )
        self.waits_for[caller.id] = target.id
        try:
            # shield: a timeout (or a cancel of the caller) must not cut the
            # target's turn short; it finishes in the background.
            turn = await asyncio.wait_for(asyncio.shield(task), self.reply_timeout)
        except TimeoutError:
            raise FunctionError(
                f"{target.name} did not reply within {self.reply_timeout:g} s; its turn goes "
                "on, but its reply will not reach you"
            ) from None
        finally:
            self.waits_for.pop(caller.id, None)
        if turn.error:
            raise FunctionError(f"{target.name}'s turn failed: {turn.error}")
        if not turn.reply:
            raise FunctionError(
                f"{target.name} ended its turn without replying (stop reason {turn.stop_reason})"
            )
        return f"{target.name} replied: {turn.reply}"

    def _event_text(self, caller: AgentImage, message: str, hops: int, wait: bool) -> str:
        if wait:
            how = (
                f"{caller.name} is waiting for your answer: reply with send_message, and your "
                "reply goes back to it."
            )
        else:
            how = (
                f"{caller.name} is not waiting; to answer it, use "
                f"send_message_to_agent(agent_name={caller.name!r}, ...)."
            )
        return (
            f"[message from agent {caller.name} (hop {hops} of {self.max_hops})] {message}\n[{how}]"
        )

    def _event(self, target: AgentImage, text: str) -> StoredMessage:
        """The target's event, refused (like `Kernel.send` refuses) if it could not fit."""
        event = self.waker.event(target, "user", text)
        allowed = target.message_limit
        if event.tokens > allowed:
            raise FunctionError(
                f"the message is about {event.tokens} tokens; {target.name} accepts at most "
                f"{allowed}. Send a shorter message (e.g. where to find the details)."
            )
        return event

    async def _deliver(self, target: AgentImage, event: StoredMessage, hops: int) -> Turn:
        """Run the target's turn on the message (in its own task, with its hop count)."""
        _hops.set(hops)  # this task's context is a copy: the caller's count is untouched
        return await self.waker.wake(target.id, target.owner, [event])

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # nobody awaits a fire-and-forget delivery: say what went wrong
            log.warning("agent message delivery failed: %r", task.exception())

    async def settle(self, timeout: float | None = None) -> None:
        """Wait until every background delivery (and any it led to) has finished."""

        async def drain() -> None:
            while self.background:
                await asyncio.gather(*list(self.background), return_exceptions=True)

        await asyncio.wait_for(drain(), timeout)

    async def close(self) -> None:
        for task in list(self.background):
            task.cancel()
        if self.background:
            await asyncio.gather(*list(self.background), return_exceptions=True)
