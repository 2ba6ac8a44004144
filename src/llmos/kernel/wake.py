"""Waking agents: the one path from an event to a turn.

Every entry that makes an agent act — a user's message (`Kernel.send`), a
retry, an approval decision, another agent's message — goes through
`Waker.wake`: find the process and load its image, count the event's tokens
on the agent's core, hold the agent (its lock here and, when kernels share
the database, its lease), reload the image if it changed hands meanwhile, run
the turn (`agent/loop.py`), and end it as cancelled if `cancel` asked.

The first wake of a kernel (or an explicit `start()`) first calls `on_start`:
the kernel hands it the delivery of agent messages an earlier kernel accepted
(`kernel/messaging.py`), so work accepted by a process that ended is finished
by whichever kernel runs turns next.

When kernels share the database, holding an agent may take over a lease its
last holder left to expire (it died, e.g. SIGKILL, mid-turn). The waker then
finishes that turn first, before any new events: the rest of the turn runs on
what the window holds (`turn_left_open` says whether a turn was left open:
its last message is an unanswered event or the result of a call that asked
to go on; a turn that ended where its messages do not show it released its
lease at once, so it was not left open). `recover` does only that, for a
kernel that noticed the expired lease without having anything new for the
agent (`kernel/pickup.py`).

The waker also keeps the images: an agent is found by name or id within its
owner through a small cache, and loaded from the agent store on a miss.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from llmos.agent.loop import Turn, run_turn
from llmos.kernel.agents import AgentNotFound, AgentStore, MessageTooLong
from llmos.kernel.process import Process, ProcessTable, ProcState
from llmos.memory.recall import StoredMessage
from llmos.memory.window import message_tokens
from llmos.storage.models import approvals as approvals_table

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from llmos.access.approvals import Approvals
    from llmos.agent.loop import EventSink
    from llmos.agent.syscalls import KernelInterface
    from llmos.kernel.cores import CoreTable
    from llmos.kernel.leases import AgentLeases
    from llmos.llm.core import Core
    from llmos.memory.image import AgentImage
    from llmos.tools.registry import ToolManager

log = logging.getLogger(__name__)

#: the events of a turn, or a function of the freshly loaded image that makes them
Events = list[StoredMessage] | Callable[["AgentImage"], list[StoredMessage]]


def turn_left_open(window: list[StoredMessage], awaiting_approval: set[str]) -> bool:
    """Whether the last turn in `window` stopped before its end: its last message is
    an event nothing answered, a plain reply that said nothing, or the results of a
    step whose calls asked to go on (a heartbeat, or a failure) and none of which
    waits for approval (ids in `awaiting_approval`; the decision comes as an event).

    The messages do not show a turn stopped by its step limit, a repeated call, an
    error or a cancel after a step that asked to go on: such a turn gives its lease
    up at once (`Waker.hold`), so it is not taken for unfinished."""
    if not window:
        return False
    last = window[-1]
    if last.role == "assistant":
        return not last.tool_calls and not (last.content or "").strip()
    if last.role != "tool":
        return True  # the turn's events were stored, then nothing
    results: list[StoredMessage] = []
    for m in reversed(window):
        if m.role != "tool":
            break
        results.append(m)
    step = window[-1 - len(results)] if len(results) < len(window) else None
    if step is None or step.role != "assistant":
        return False
    if any(c.id in awaiting_approval for c in step.tool_calls):
        return False
    for call in step.tool_calls:
        try:
            args = json.loads(call.arguments or "{}")
        except ValueError:
            return True  # a malformed call failed: the loop goes on after a failure
        if isinstance(args, dict) and args.get("request_heartbeat") is True:
            return True
    for r in results:
        try:
            status = json.loads(r.content or "{}").get("status")
        except (ValueError, AttributeError):
            status = None
        if status == "Failed":
            return True
    return False


def _ended_unseen(turn: Turn, image: AgentImage) -> bool:
    """Whether the turn ended where `turn_left_open` would take it for unfinished."""
    if turn.stop_reason == "cancelled":
        return True  # its image may be a step ahead of what was committed
    return turn.stop_reason != "waiting_approval" and turn_left_open(image.window, set())


class Waker:
    """Loads agents into the process table, holds them, and runs their turns."""

    def __init__(
        self,
        kernel: KernelInterface,
        procs: ProcessTable,
        store: AgentStore,
        cores: CoreTable,
        approvals: Approvals,
        leases: AgentLeases | None,
        tools: ToolManager | None = None,
    ) -> None:
        self.kernel = kernel
        self.procs = procs
        self.store = store
        self.cores = cores
        self.approvals = approvals
        self.leases = leases
        self.tools = tools
        # (owner, name or id) -> agent id, so a loaded agent is found without SQL
        self._ids: dict[tuple[str, str], str] = {}
        # agent id -> calls waiting for approval that this kernel saw made or
        # loaded: an idle agent with some shows as waiting_approval.
        self.awaiting: dict[str, int] = {}
        self.on_start: Callable[[], object] | None = None
        self.started = False
        # agents whose lease this kernel took over from a holder that let it
        # lapse: their last turn may be half done (finished on the next hold)
        self.interrupted: set[str] = set()
        self.resumed = 0  # interrupted turns finished here

    def start(self) -> None:
        """Run `on_start` once (needs a running event loop: it may start tasks)."""
        if not self.started:
            self.started = True
            if self.on_start is not None:
                self.on_start()

    # --- images -------------------------------------------------------------------

    def image(self, name_or_id: str, owner: str) -> AgentImage:
        """The agent's in-memory image, loaded from the database if needed."""
        cached = self._cached(name_or_id, owner)
        if cached is not None:  # the hot path: no database round trip
            return cached
        with self.store.db.connect() as conn:
            row = self._find(conn, name_or_id, owner)
            proc = self._proc(row, owner)
            if proc.image is not None:
                self.procs.touch(proc)
                return proc.image
            image = self.store.load(conn, row)
        return self._keep(proc, image, self.approvals.pending_count(image.id))

    async def load(self, name_or_id: str, owner: str) -> AgentImage:
        """`image`, with a load's reads off the event loop (`Database.read`): on
        PostgreSQL the loop runs other agents while the server answers."""
        cached = self._cached(name_or_id, owner)
        if cached is not None:
            return cached

        def read(conn: Connection) -> tuple[Any, AgentImage, int]:
            row = self._find(conn, name_or_id, owner)
            image = self.store.load(conn, row)
            if self.tools is not None:  # its attached tools, which its turn reads next
                self.tools.attached(row.id, row.owner)
            return row, image, self.approvals.pending_count(image.id)

        row, image, pending = await self.store.db.read(read)
        proc = self._proc(row, owner)
        if proc.image is not None:  # loaded by someone else meanwhile: keep that one
            self.procs.touch(proc)
            return proc.image
        return self._keep(proc, image, pending)

    def _cached(self, name_or_id: str, owner: str) -> AgentImage | None:
        agent_id = self._ids.get((owner, name_or_id))
        if agent_id is not None:
            proc = self.procs.peek(agent_id)
            if proc is not None and proc.image is not None:
                self.procs.touch(proc)
                return proc.image
        return None

    def _find(self, conn: Connection, name_or_id: str, owner: str) -> Any:
        row = self.store.find(conn, name_or_id, owner)
        if row is None:
            raise AgentNotFound(f"no agent named {name_or_id!r}")
        return row

    def _proc(self, row: Any, owner: str) -> Process:
        self._ids[(owner, row.name)] = self._ids[(owner, row.id)] = row.id
        return self.procs.get(row.id, row.name)

    def _keep(self, proc: Process, image: AgentImage, pending: int) -> AgentImage:
        proc.image = image
        self.procs.touch(proc)
        # calls left waiting for approval by an earlier kernel (a restart)
        self.awaiting[image.id] = pending
        if self.awaiting[image.id] and not proc.lock.locked():
            proc.set(ProcState.WAITING_APPROVAL)
        return image

    def process(self, name_or_id: str, owner: str) -> tuple[Process, AgentImage]:
        image = self.image(name_or_id, owner)
        return self.procs.get(image.id, image.name), image

    def core_of(self, image: AgentImage) -> Core:
        return self.cores.get(image.model, image.base_url)

    def tokens(self, image: AgentImage, msg: StoredMessage) -> int:
        """The message's tokens in the agent's window, counted on its core."""
        return message_tokens(self.core_of(image), msg.to_message())

    def event(self, image: AgentImage, role: str, text: str) -> StoredMessage:
        """A message for the agent, its tokens counted on the agent's core."""
        event = StoredMessage(role, text)
        event.tokens = self.tokens(image, event)
        return event

    def message(self, image: AgentImage, role: str, text: str) -> StoredMessage:
        """A message delivered from outside; raises MessageTooLong (nothing is
        stored) if it is over half the agent's budget: it could never fit."""
        event = self.event(image, role, text)
        if event.tokens > image.message_limit:
            budget = image.context_window - image.max_tokens
            raise MessageTooLong(
                f"the message is about {event.tokens} tokens; this agent's window allows "
                f"{image.message_limit} per message (half its {budget}-token budget). Load long "
                "documents into archival memory instead."
            )
        return event

    def forget(self, image: AgentImage) -> None:
        self.procs.forget(image.id)
        self._ids.pop((image.owner, image.name), None)
        self._ids.pop((image.owner, image.id), None)
        self.awaiting.pop(image.id, None)

    def note_pending_approval(self, agent_id: str, delta: int) -> None:
        self.awaiting[agent_id] = max(0, self.awaiting.get(agent_id, 0) + delta)

    # --- holding an agent -----------------------------------------------------------

    @asynccontextmanager
    async def hold(self, proc: Process) -> AsyncIterator[None]:
        """Hold the agent: its lock in this process and, when kernels share the
        database, its lease (kernel/leases.py). Callers re-read the image inside."""
        proc.waiting += 1
        try:
            await proc.lock.acquire()
        finally:
            proc.waiting -= 1
        leased = False
        try:
            if self.leases is not None:
                taken = await self.leases.acquire(proc.agent_id)
                if taken.changed_hands:
                    proc.image = None  # another kernel ran it since: reload
                if taken.interrupted:
                    self.interrupted.add(proc.agent_id)
                leased = True
            yield
        finally:
            try:
                if leased and self.leases is not None:
                    if proc.ended_unseen:
                        await self._release_now(proc.agent_id)
                    else:
                        self.leases.release(proc.agent_id)
            finally:
                proc.ended_unseen = False
                proc.lock.release()

    async def _release_now(self, agent_id: str) -> None:
        assert self.leases is not None
        try:
            await self.leases.release_now(agent_id)
        except Exception as err:  # the lease lapses instead: the turn may be run on
            log.warning("releasing agent %s's lease failed: %r", agent_id, err)

    @asynccontextmanager
    async def _running(self, proc: Process) -> AsyncIterator[None]:
        """Hold the agent for one turn; messages wait here, in arrival order."""
        async with self.hold(proc):
            proc.task = asyncio.current_task()
            try:
                yield
            except BaseException:
                # A step cut short may have changed the image without committing:
                # drop it, and the next turn reloads the last committed state.
                proc.image = None
                raise
            finally:
                proc.task = None
                proc.cancel_requested = False
                waiting = self.awaiting.get(proc.agent_id, 0) > 0
                proc.set(ProcState.WAITING_APPROVAL if waiting else ProcState.READY)

    # --- turns ----------------------------------------------------------------------

    async def wake(
        self, name_or_id: str, owner: str, events: Events, on_event: EventSink | None = None
    ) -> Turn:
        """Run the agent's turn on `events` once the agent is free; returns the turn.

        `events` may be a function of the image, called once the agent is held
        (a retry picks its message from the window it finds then)."""
        proc, image = self.process(name_or_id, owner)
        core = self.core_of(image)
        async with self._running(proc):
            image = await self.load(image.id, owner)  # it may have been reloaded meanwhile
            proc.core = core.name
            if callable(events):
                events = events(image)
            turn = Turn(agent=image.name)
            proc.set(ProcState.RUNNING)
            try:
                image = await self._finish_interrupted(image, core)
                await run_turn(self.kernel, image, core, events, turn, on_event)
            except asyncio.CancelledError:
                if not proc.cancel_requested:
                    raise  # not ours to swallow: the kernel or the caller is shutting down
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                # The step in flight is dropped whole: it had committed nothing.
                proc.image = None
                turn.stop_reason = "cancelled"
            proc.ended_unseen = _ended_unseen(turn, image)
            return turn

    async def recover(self, agent_id: str, owner: str) -> bool:
        """Hold the agent and finish a turn its last holder left open, if any;
        True if one ran here."""
        proc, image = self.process(agent_id, owner)
        core = self.core_of(image)
        async with self._running(proc):
            image = await self.load(agent_id, owner)
            proc.core = core.name
            before = self.resumed
            proc.set(ProcState.RUNNING)
            await self._finish_interrupted(image, core)
            return self.resumed > before

    async def _finish_interrupted(self, image: AgentImage, core: Core) -> AgentImage:
        """With the agent held: if its lease was taken over from a holder that
        let it lapse and the turn there was left open, run the rest of it now."""
        if image.id not in self.interrupted:
            return image
        self.interrupted.discard(image.id)
        if not turn_left_open(image.window, self._awaiting_ids(image)):
            return image
        turn = Turn(agent=image.name)
        await run_turn(self.kernel, image, core, [], turn)
        proc = self.procs.peek(image.id)
        if proc is not None:
            proc.ended_unseen = _ended_unseen(turn, image)
        self.resumed += 1
        log.info(
            "finished %s's turn left open by a kernel that stopped (%s, %d steps)",
            image.name, turn.stop_reason, turn.steps,
        )  # fmt: skip
        return self.image(image.id, image.owner)

    def _awaiting_ids(self, image: AgentImage) -> set[str]:
        """Call ids of the agent's calls that wait for (or got) an owner's decision."""
        step = next((m for m in reversed(image.window) if m.role == "assistant"), None)
        ids = {c.id for c in step.tool_calls} if step is not None else set()
        if not ids:
            return set()
        with self.store.db.connect() as conn:
            rows = conn.execute(
                select(approvals_table.c.call_id).where(
                    approvals_table.c.agent_id == image.id, approvals_table.c.call_id.in_(ids)
                )
            )
            return {r.call_id for r in rows}

    def cancel(self, name_or_id: str, owner: str) -> bool:
        """Cancel the agent's running turn; False if it was idle."""
        proc, _ = self.process(name_or_id, owner)
        if proc.task is None or proc.task.done():
            return False
        proc.cancel_requested = True
        proc.task.cancel()
        return True
