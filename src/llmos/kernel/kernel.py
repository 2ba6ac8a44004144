"""The kernel: llmos's public Python API, a facade over the kernel's subsystems.

`Kernel` (`from llmos import Kernel`) boots the subsystems on one database and
offers the verbs: create, list, show, update and delete agents; deliver
messages (`send`, `retry`, `cancel`); and, from the two verb mixins, read and
edit memory and manage tools, grants, approvals (`decide`) and the audit log.
Beyond wiring, each concern lives in the file named for it:

- `cores.py`: cores, replicas, run queues (`scheduler.py`), embedders
- `agents.py`: the agent store (SQL on agent rows, row to image); `settings.py`
- `wake.py`: images in the process table (`process.py`), holding an agent, turns
- `syscalls.py`: the syscall table; `handlers.py`: the handlers
- `commit.py`: step commits; `accounting.py`: statistics and usage
- `agent_verbs.py`, `memory_verbs.py`, `access_verbs.py`: the verb mixins
- `messaging.py`: agent-to-agent messages (`pending.py`: their table); `leases.py`:
  kernels sharing a database, `nodes.py`: the registry of kernels, `pickup.py`: the
  loop that beats in it and finishes what other kernels leave or hand over

The kernel is the `KernelInterface` of `agent/syscalls.py`: all the agent loop sees.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.access.approvals import Approvals
from llmos.access.audit import AuditLog
from llmos.access.grants import Grants
from llmos.agent.catalog import offered_specs
from llmos.agent.functions import BUILTINS, FunctionResult
from llmos.kernel.access_verbs import AccessVerbs
from llmos.kernel.accounting import Accounting
from llmos.kernel.agent_verbs import AgentVerbs
from llmos.kernel.agents import (
    AgentExists,
    AgentNotFound,
    AgentStore,
    MessageTooLong,
)
from llmos.kernel.commit import StepCommitter
from llmos.kernel.cores import CoreTable
from llmos.kernel.handlers import SyscallHandlers
from llmos.kernel.leases import AgentLeases
from llmos.kernel.memory_verbs import MemoryVerbs
from llmos.kernel.messaging import AgentMessenger
from llmos.kernel.pickup import Pickup
from llmos.kernel.process import ProcessTable, ProcState
from llmos.kernel.syscalls import BLOCKED_IN, Syscall, dispatch_table
from llmos.kernel.undo import TurnJournal
from llmos.kernel.wake import Waker
from llmos.memory.archival import ArchivalStorage
from llmos.memory.recall import RecallStorage
from llmos.storage.db import Database, open_database
from llmos.storage.files import FileStore
from llmos.storage.group_commit import GroupCommit
from llmos.tools.executor import execute_user_tool
from llmos.tools.mcp import McpManager
from llmos.tools.registry import ToolManager

if TYPE_CHECKING:
    from llmos.agent.loop import EventSink, Turn
    from llmos.kernel.scheduler import RunQueue
    from llmos.llm.core import Core, ToolSpec
    from llmos.memory.embedders import Embedder
    from llmos.memory.image import AgentImage

__all__ = ["AgentExists", "AgentNotFound", "Kernel", "MessageTooLong", "default_home"]


def default_home() -> Path:
    return Path(os.environ.get("LLMOS_HOME") or Path.home() / ".llmos").expanduser()


class Kernel(AgentVerbs, MemoryVerbs, AccessVerbs):
    """One llmos kernel over one database. Use `Kernel.open()` or `async with`."""

    def __init__(
        self,
        db: Database | str,
        *,
        cores: dict[str, Core] | None = None,
        embedders: dict[str, Embedder] | None = None,
        max_images: int | None = None,
        policy: str | None = None,
        quantum: int | None = None,
        shared: bool | None = None,
    ) -> None:
        self.db = db = Database.from_url(db) if isinstance(db, str) else db  # a database URL
        self.group_commit = GroupCommit(db)
        # Other kernel processes on this database: take agents' leases
        # (kernel/leases.py). Off by default on SQLite (one kernel needs none);
        # on PostgreSQL always, as other nodes may run on it.
        if shared is None:
            shared = db.is_postgres or os.environ.get("LLMOS_SHARED_DB", "") not in ("", "0")
        leases = AgentLeases(self.group_commit) if shared else None
        self.recall = RecallStorage()
        self.archival = ArchivalStorage(db)
        self.procs = ProcessTable(max_images)
        self.policy = policy or os.environ.get("LLMOS_POLICY", "fifo")
        self.quantum = quantum or int(os.environ.get("LLMOS_QUANTUM", "32"))
        self.cores = CoreTable(cores, embedders, self.policy, self.quantum)
        self.accounting = Accounting(db)
        self.store = AgentStore(db, self.recall, self.archival)
        self.tools = ToolManager(db)
        # MCP servers' tools run through their sessions, started on first use
        self.mcp = self.tools.mcp = McpManager(db)
        self.mcp.on_change = self.tools.invalidate
        self.grants = Grants(db)
        self.audit_log = AuditLog(db)
        self.approval_store = Approvals(db)
        self.files = FileStore(db)
        self.journal = TurnJournal()  # where each turn began, for a retry's undo
        self.waker = Waker(
            self, self.procs, self.store, self.cores, self.approval_store, leases, self.tools
        )
        self._messenger: AgentMessenger | None = None
        run_user_tool = partial(execute_user_tool, self, builtins=BUILTINS, result=FunctionResult)
        handlers = SyscallHandlers(
            db, self.cores, self.accounting, self.recall, self.archival, run_user_tool, self._msgr
        )
        self._dispatch = dispatch_table(handlers)
        committer = StepCommitter(
            self.group_commit, self.recall, self.archival, self.accounting, self.store, self.cores
        )
        # A step's messages and effects, written atomically, then applied to the image.
        self.commit_step = committer.commit
        self._committer = committer
        # While it serves: its row in the nodes registry and, on a shared
        # database, the work other kernels leave or hand to it (pickup.py).
        node_id = leases.holder if leases is not None else f"kernel-{uuid.uuid4().hex[:12]}"
        self.pickup = Pickup(db, node_id, self.procs, self.waker, self._msgr, leases)
        self.waker.on_start = self._on_start

    def _on_start(self) -> None:
        if self.leases is None:  # alone: what an earlier kernel accepted is all ours
            self.messenger.resume_pending()
        self.pickup.start()

    @property
    def leases(self) -> AgentLeases | None:
        """This kernel's agent leases when kernels share the database, else None."""
        return self.waker.leases

    @leases.setter
    def leases(self, leases: AgentLeases | None) -> None:
        self.waker.leases = leases

    @classmethod
    def open(
        cls, home: str | Path | None = None, *, database_url: str | None = None, **kwargs: Any
    ) -> Kernel:
        """On `database_url`, else $LLMOS_DATABASE_URL, else the SQLite file in `home`."""
        return cls(open_database(home or default_home(), database_url), **kwargs)

    async def __aenter__(self) -> Kernel:
        self.waker.start()  # finish agent messages an earlier kernel accepted
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.pickup.close()
        await self.mcp.aclose()
        if self._messenger is not None:
            await self._messenger.close()
        await self.group_commit.drain()  # writes in flight commit before the pool goes
        self.group_commit.close()
        if self.leases is not None:
            with contextlib.suppress(Exception), self.db.begin() as conn:
                self.leases.release_all(conn)
        self.accounting.flush()
        await self.cores.aclose()
        self.db.close()

    # --- cores and embedders ----------------------------------------------------

    def add_core(
        self,
        core: Core,
        model: str | None = None,
        base_url: str | None = None,
        replicas: list[Core] | None = None,
    ) -> None:
        """Register a ready-made core (e.g. a ScriptedCore) under a model string;
        `replicas` are further cores serving the same model, to spread load over."""
        self.cores.add(core, model, base_url, replicas)

    def core(self, model: str, base_url: str | None = None) -> Core:
        """The core for a model string. A comma-separated `base_url` names
        replicas of one model (e.g. two vLLM servers): the kernel spreads load."""
        return self.cores.get(model, base_url)

    def queue(self, core: Core) -> RunQueue:
        return self.cores.queue(core)

    def set_policy(
        self, core: Core, policy: str, *, quantum: int | None = None, aging: float = 1.0
    ) -> RunQueue:
        """Choose a core's scheduling policy (fifo, rr, priority); the core must be idle."""
        return self.cores.set_policy(core, policy, quantum=quantum, aging=aging)

    def embedder(self, spec: str) -> Embedder:
        return self.cores.embedder(spec)

    # --- syscalls (agent/syscalls.py's KernelInterface) ---------------------------

    async def syscall(self, call: Syscall) -> Any:
        handler = self._dispatch[type(call)]
        proc = self.procs.peek(call.agent_id)
        blocked = BLOCKED_IN.get(type(call)) if proc is not None and proc.task else None
        if blocked is not None:
            proc.set(blocked)  # type: ignore[union-attr]
        try:
            return await handler(call)
        finally:
            call.finished_at = time.perf_counter()
            if not call.started_at:
                call.started_at = call.queued_at
            self.accounting.syscall_done(call)
            if blocked is not None:
                proc.set(ProcState.RUNNING)  # type: ignore[union-attr]

    @property
    def messenger(self) -> AgentMessenger:
        """The agent-to-agent message service (`kernel/messaging.py`), made on first use."""
        if self._messenger is None:
            c = self._committer
            self._messenger = AgentMessenger(
                self.waker, self.grants, self.audit_log, c.pending, c.mark_pending
            )
            self._messenger.nodes = self.pickup if self.leases is not None else None
        return self._messenger

    def _msgr(self) -> AgentMessenger:
        """What the handlers call for the messenger (made on first use)."""
        return self.messenger

    async def settle_agent_messages(self, timeout: float | None = None) -> None:
        """Wait for agent messages delivered in the background (and their turns) to finish."""
        if self._messenger is not None:
            await self._messenger.settle(timeout)

    def tool_specs(self, image: AgentImage) -> list[ToolSpec]:
        """The functions the agent's requests offer: kernel-provided plus its attached tools."""
        return self.tools.specs_for(image.id, image.owner, offered_specs(image.settings))

    def nodes(self) -> list[dict[str, Any]]:
        """The kernels on this database (kernel/nodes.py), live and stale, this one marked."""
        return self.pickup.list_nodes()

    def kernel_stats(self) -> dict[str, Any]:
        return {"processes": self.procs.snapshot(), "cores": self.cores.stats()} | (
            self.accounting.report()
        )

    # --- turns ------------------------------------------------------------------

    async def send(
        self,
        name_or_id: str,
        text: str,
        *,
        owner: str = "local",
        role: str = "user",
        on_event: EventSink | None = None,
    ) -> Turn:
        """Deliver a message and run the agent's turn; returns the whole turn.

        `on_event` receives each reasoning text, function call, function result
        and reply as it happens (for streaming). Raises MessageTooLong for a
        message over half the agent's budget (nothing is stored).
        """
        image = await self.waker.load(name_or_id, owner)
        event = self.waker.message(image, role, text)
        return await self.waker.wake(image.id, owner, self.journal.starting([event]), on_event)

    async def retry(
        self, name_or_id: str, owner: str = "local", on_event: EventSink | None = None
    ) -> Turn:
        """Run the last user message's turn again, undoing the first run (`forget_last_turn`).

        The turn's `not_undone` lists effects that stay (a tool's side effect, a
        message another agent got). Raises ValueError if the window holds no
        user message (it may have been evicted).
        """
        image = self.image(name_or_id, owner)
        kept: list[str] = []
        events = self.journal.starting(partial(self.forget_last_turn, not_undone=kept))
        turn = await self.waker.wake(image.id, owner, events, on_event)
        turn.not_undone = kept
        return turn

    def cancel(self, name_or_id: str, owner: str = "local") -> bool:
        """Cancel the agent's running turn. Committed steps stay; the turn in
        progress ends with stop_reason "cancelled". False if it was idle."""
        return self.waker.cancel(name_or_id, owner)
