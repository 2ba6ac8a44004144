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
5. durability: the message is stored as a row of `pending_messages` (one
   committed write) before the caller is told anything, so a process that
   ends before the target has answered loses nothing;
6. delivery: the message becomes a `[message from agent …]` event of the
   target's, and the target runs a turn — in a background task for
   `send_message_to_agent`, awaited (with a timeout) for the waiting form,
   whose result is the target's `send_message` reply. The event enters the
   target's recall in the same transaction that marks the row stored
   (`StepCommitter`), and the row is deleted once the turn has ended.

Whichever kernel runs next on the database (this one, a server, a later CLI
process) finishes what is pending when it starts running turns
(`resume_pending`; kernels sharing the database also look again while they
run, `kernel/pickup.py`): a message not yet stored runs its turn as above; one
stored by a kernel that ended during the turn runs the turn again without a
new event, unless the agent has had a turn since. Delivery happens at most
once: the event is taken under the target's lock and lease, and the write
that stores it fails if the row was already marked by another kernel.

Several nodes (`kernel/pickup.py`): a fire-and-forget message for an agent
that another live node runs (it last held the agent's lease) is stored and
that node is woken to deliver it, so the agent keeps running where its image
is. An owner's decision on an approval goes the same way (`deliver_decision`):
stored as a pending event naming the approval, delivered by the agent's node
(or here if there is none, or it is gone), the approval marked delivered in
the write that ends the row. A kernel that handed a decision over waits for
the turn: the delivering node leaves it (JSON) in the row, and the waiting
kernel returns it as a `RemoteTurn`.

A waiting call goes the same way when nodes share the database: its row
names the calling agent while it waits (`PendingMessages.add_wait`), so the
rows are a wait-for graph of every node, and a wait that would close a cycle
in it (A waits on node 1 for B, whose turn on node 2 asks A) is refused at
once, as within one kernel. The target's turn runs on the node that runs it;
the caller's kernel collects the turn from the row.

Left out: messages between owners, and replies of fire-and-forget messages
routed back to the sender (the target can message back if granted). A
waiting call's reply goes only to a caller still waiting (a node that dies
while waiting leaves its wait out of the graph once it is stale). A turn run
on another node is not streamed to the decider (`on_event`), only returned
whole.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from llmos.agent.functions import FunctionError
from llmos.kernel.agents import AgentNotFound
from llmos.kernel.pending import AlreadyDelivered, HandoverTimeout, PendingMessages, RemoteTurn

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from llmos.access.audit import AuditLog
    from llmos.access.grants import Grants
    from llmos.agent.loop import EventSink, Turn
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


class Nodes(Protocol):
    """What the messenger needs to know of the other nodes (`kernel/pickup.py`)."""

    me: str

    def elsewhere(self, agent_id: str) -> str | None: ...

    def notify(self, node_id: str) -> None: ...

    def live(self, conn: Connection) -> set[str]: ...


#: tells the step committer that storing `event` stores pending message `pid`
MarkPending = Callable[["StoredMessage", str], None]


class AgentMessenger:
    """Serves agent syscalls for one kernel; owns the wait-for graph and background deliveries."""

    def __init__(
        self,
        waker: Waker,
        grants: Grants,
        audit_log: AuditLog,
        pending: PendingMessages,
        mark_pending: MarkPending,
    ) -> None:
        self.waker = waker
        self.grants = grants
        self.audit_log = audit_log
        self.pending = pending
        self.mark_pending = mark_pending
        # pending message ids with a delivery task in this kernel
        self.delivering: set[str] = set()
        # pending message id -> (failures, monotonic time before which not to retry)
        self.backoff: dict[str, tuple[int, float]] = {}
        self.max_hops = MAX_HOPS
        self.reply_timeout = REPLY_TIMEOUT
        # caller agent id -> the agent id whose reply it is waiting for
        self.waits_for: dict[str, str] = {}
        self.background: set[asyncio.Task[Any]] = set()
        # the nodes sharing this database, when it is shared: where agents run
        self.nodes: Nodes | None = None
        self.handed_over = 0  # messages and decisions handed to another node

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
            self._deadlock(caller, target)
        event = self._event(target, self._event_text(caller, message, hops, wait))
        if wait and self.nodes is not None:
            turn = await self._ask_across_nodes(caller, target, event.content or "", hops)
        else:
            # Durable before anyone hears "delivered": a process ending now loses nothing.
            pid = await self.pending.add(target, event.content or "", hops)
            self._audit(caller, target.name, "allowed", f"{call.op}, hop {hops}")
            if not wait:
                if not self._hand_over(target.id):
                    self._spawn(target.id, target.owner, pid, hops)
                return (
                    f"Delivered to {target.name}; it will read it in a turn of its own. Its "
                    "reply does not come back to you unless it messages you."
                )
            task = self._spawn(target.id, target.owner, pid, hops)
            self.waits_for[caller.id] = target.id
            try:
                turn = await self._reply(target, task)
            finally:
                self.waits_for.pop(caller.id, None)
        if turn is None:
            raise FunctionError(f"{target.name} had already answered this message")
        if turn.error:
            raise FunctionError(f"{target.name}'s turn failed: {turn.error}")
        if not turn.reply:
            raise FunctionError(
                f"{target.name} ended its turn without replying (stop reason {turn.stop_reason})"
            )
        return f"{target.name} replied: {turn.reply}"

    def _deadlock(self, caller: AgentImage, target: AgentImage) -> NoReturn:
        self._audit(caller, target.name, "failed", "would deadlock")
        raise FunctionError(
            f"{target.name} is waiting for your reply, so it cannot answer a question "
            "now. Reply to it with send_message instead (or use send_message_to_agent, "
            "which does not wait)."
        )

    async def _reply(self, target: AgentImage, task: asyncio.Future[Any]) -> Turn | None:
        """The target's turn (run by `task`), waited for at most `reply_timeout`."""
        try:
            # shield: a timeout (or a cancel of the caller) must not cut the
            # target's turn short; it finishes in the background.
            return await asyncio.wait_for(asyncio.shield(task), self.reply_timeout)
        except TimeoutError:
            raise FunctionError(
                f"{target.name} did not reply within {self.reply_timeout:g} s; its turn goes "
                "on, but its reply will not reach you"
            ) from None

    async def _ask_across_nodes(
        self, caller: AgentImage, target: AgentImage, content: str, hops: int
    ) -> Turn | None:
        """A waiting call when nodes share the database: the wait is an edge of the
        graph in the database (`PendingMessages.add_wait`), so a cycle through
        other nodes is refused too; the target's turn runs on the node that runs
        it (handed over, its turn collected from the row), else here."""
        assert self.nodes is not None
        pid = await self.pending.add_wait(
            target, content, hops, caller.id, self.nodes.me, self.nodes.live
        )
        if pid is None:
            self._deadlock(caller, target)
        self._audit(caller, target.name, "allowed", f"ask, hop {hops}")
        try:
            if not self._hand_over(target.id):
                return await self._reply(target, self._spawn(target.id, target.owner, pid, hops))
            collect = asyncio.get_running_loop().create_task(self._collect(pid))
            try:
                return await self._reply(target, collect)
            finally:
                collect.cancel()
        finally:
            await self.pending.end_wait(pid)

    async def _collect(self, pid: str, deadline: float | None = None) -> RemoteTurn:
        """The turn another node ran on pending event `pid`, once it has left it in
        the row (polled). Raises HandoverTimeout past `deadline` (monotonic)."""
        while (body := await self.pending.collect(pid)) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise HandoverTimeout(pid)
            await asyncio.sleep(0.05)
        return RemoteTurn.from_body(body)

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

    def _hand_over(self, agent_id: str) -> str | None:
        """Wake the other live node that runs the agent, if one does; its id."""
        node = self.nodes.elsewhere(agent_id) if self.nodes is not None else None
        if node is not None and self.nodes is not None:
            self.nodes.notify(node)
            self.handed_over += 1
        return node

    async def deliver_decision(
        self,
        target: AgentImage,
        text: str,
        approval_id: str,
        on_event: EventSink | None = None,
        timeout: float | None = None,
    ) -> Turn:
        """Give the agent an owner's decision (`text`) as an event and a turn: on
        the node that runs it, or here. Raises HandoverTimeout if that node has
        not finished the turn within `timeout` (the event stays pending)."""
        me = self.nodes.me if self.nodes is not None else None
        node = self.nodes.elsewhere(target.id) if self.nodes is not None else None
        pid = await self.pending.add(
            target, text, 0, approval_id=approval_id, waiter=me if node else None
        )
        if node is None:
            turn = await self._spawn(target.id, target.owner, pid, 0, on_event)
            if turn is None:
                raise AlreadyDelivered(f"the decision on {approval_id} was already delivered")
            return turn
        assert self.nodes is not None
        self.nodes.notify(node)
        self.handed_over += 1
        deadline = time.monotonic() + (self.reply_timeout if timeout is None else timeout)
        try:
            return await self._collect(pid, deadline)
        except HandoverTimeout:
            raise HandoverTimeout(
                f"{target.name}'s node did not finish its turn in time; the decision "
                "stays pending and reaches the agent when a node runs it"
            ) from None

    def _spawn(
        self, agent_id: str, owner: str, pid: str, hops: int, on_event: EventSink | None = None
    ) -> asyncio.Task[Any]:
        self.delivering.add(pid)
        task = asyncio.create_task(self._deliver(agent_id, owner, pid, hops, on_event))
        self.background.add(task)
        task.add_done_callback(self._finished)
        task.add_done_callback(lambda _t: self.delivering.discard(pid))
        return task

    async def _deliver(
        self, agent_id: str, owner: str, pid: str, hops: int, on_event: EventSink | None = None
    ) -> Turn | None:
        """Run the target's turn on pending message `pid` (in its own task, with
        its hop count); None if it had been delivered and answered elsewhere."""
        _hops.set(hops)  # this task's context is a copy: the caller's count is untouched

        def events(image: AgentImage) -> list[StoredMessage]:
            # Called with the agent held (its lock and lease): nobody else can
            # be storing this message now.
            row = self.pending.get(pid)
            if row is None or row.result is not None:
                raise AlreadyDelivered(pid)
            if row.message_id is None:
                event = self.waker.event(image, "user", row.content)
                self.mark_pending(event, pid)
                return [event]
            # Stored by a kernel that ended during the turn: run the rest of
            # the turn, unless the agent has replied or had a turn since.
            ids = [m.id for m in image.window]
            after = [m for m in image.window if m.id > row.message_id]
            if row.message_id not in ids or any(
                m.role == "user" or any(c.name == "send_message" for c in m.tool_calls)
                for m in after
            ):
                raise AlreadyDelivered(pid)
            return []

        try:
            turn = await self.waker.wake(agent_id, owner, events, on_event)
        except (AlreadyDelivered, AgentNotFound):
            turn = None
        except Exception:
            # e.g. the agent's model is not configured here: retried, less and less often
            n = self.backoff.get(pid, (0, 0.0))[0] + 1
            self.backoff[pid] = (n, time.monotonic() + min(300.0, 2.0**n))
            raise
        self.backoff.pop(pid, None)
        # No await between the turn's end and this write: a cancel (the process
        # ending) cannot fall between them.
        self.pending.done_now(pid, turn)
        return turn

    def resume_pending(self, only: Collection[str] | None = None) -> int:
        """Start delivering every pending message (of ids in `only`, if given) no
        task here is delivering; returns how many. A kernel alone on its
        database calls it when it starts running turns; kernels sharing one
        choose what to take (`kernel/pickup.py`)."""
        started = 0
        for row in self.pending.all():
            if only is not None and row.id not in only:
                continue
            if self.backoff.get(row.id, (0, 0.0))[1] > time.monotonic():
                continue
            if row.id not in self.delivering:
                self._spawn(row.agent_id, row.owner, row.id, row.hops)
                started += 1
        return started

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
