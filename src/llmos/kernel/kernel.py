"""The kernel: boots the managers, owns the cores, and serves every syscall.

`Kernel` is llmos's public Python API (`from llmos import Kernel`): it creates,
lists, inspects and deletes agents, delivers messages to them, and answers
what is in an agent's memory. Inside, it keeps the process table, one run
queue per core, and the stores (recall, archival) on one database; each agent
step goes through `agent/loop.py`, which reaches the kernel only by syscalls.

It also owns the tool manager (`self.tools`), grants, approvals, the audit
log and the file store; `add_tool`, `attach_tool`, `approvals`, `decide`,
`audit` and `file_area` are their Python API. `load_documents` fills an
agent's archival memory from files (`memory/loader.py`); agents message each
other by `AgentSyscall`s served by `kernel/messaging.py` (`messenger`).

Left out: scheduling policies other than FIFO, preemption, users and keys —
later issues, each behind the seams already here (`RunQueue.run`, the
`owner` column, `DISPATCH`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, delete, select, update

from llmos.access.approvals import Approvals
from llmos.access.audit import AuditLog
from llmos.access.grants import Grants
from llmos.agent import functions as fn
from llmos.kernel.leases import AgentLeases
from llmos.kernel.process import AgentImage, Process, ProcessTable, ProcState
from llmos.kernel.scheduler import RunQueue
from llmos.kernel.syscalls import (
    DISPATCH,
    AgentSyscall,
    LLMSyscall,
    MemorySyscall,
    StorageSyscall,
    Syscall,
    ToolSyscall,
)
from llmos.llm.registry import DEFAULT_MODEL, make_core
from llmos.memory.archival import ArchivalStorage, Passage
from llmos.memory.blocks import DEFAULT_BLOCK_LIMIT, Block, CoreMemory
from llmos.memory.recall import RecallStorage, StoredMessage
from llmos.memory.window import CompiledWindow, compile_window, message_tokens
from llmos.storage.db import Database
from llmos.storage.files import FileStore
from llmos.storage.group_commit import GroupCommit
from llmos.storage.models import agent_usage, agents, blocks, messages
from llmos.tools.mcp import McpManager
from llmos.tools.registry import ToolManager

if TYPE_CHECKING:
    import numpy as np

    from llmos.agent.loop import EventSink, Turn
    from llmos.llm.core import ChatResponse, Core, ToolSpec, Usage
    from llmos.memory.embedders import Embedder

DEFAULT_PERSONA = (
    "I am a helpful, curious assistant with a long memory. I keep notes about the "
    "people I talk with and use them to help better over time."
)
DEFAULT_HUMAN = "Nothing is known about the user yet."


def default_home() -> Path:
    return Path(os.environ.get("LLMOS_HOME") or Path.home() / ".llmos").expanduser()


def default_embedder() -> str:
    from llmos.memory.embedders import DEFAULT_EMBEDDER

    return os.environ.get("LLMOS_EMBEDDER", DEFAULT_EMBEDDER)


class AgentNotFound(LookupError):
    """No agent of that name (or id) for this owner."""


class AgentExists(ValueError):
    """An agent of that name already exists for this owner."""


class MessageTooLong(ValueError):
    """A message that could never fit the agent's window; nothing was stored."""


@dataclass(slots=True)
class SyscallStats:
    count: int = 0
    seconds: float = 0.0
    tokens: int = 0
    # llm syscalls only: prompt tokens and the part the provider served from its cache
    prompt_tokens: int = 0
    cached_tokens: int = 0


@dataclass(slots=True)
class UsageTotals:
    """An agent's LLM usage summed over requests; persisted in `agent_usage`."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, usage: Usage | UsageTotals, requests: int = 1) -> None:
        self.requests += usage.requests if isinstance(usage, UsageTotals) else requests
        self.prompt_tokens += usage.prompt_tokens
        self.cached_prompt_tokens += usage.cached_prompt_tokens
        self.completion_tokens += usage.completion_tokens

    @property
    def cache_hit_rate(self) -> float | None:
        """Share of prompt tokens read from the provider's cache (None: no requests yet)."""
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else None

    def as_dict(self) -> dict[str, Any]:
        rate = self.cache_hit_rate
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cache_hit_rate": None if rate is None else round(rate, 4),
        }


# Statements of the per-step path, built once (building one costs more than
# running it on SQLite).
_USAGE_ADD = (
    update(agent_usage)
    .where(agent_usage.c.agent_id == bindparam("aid"))
    .values(
        requests=agent_usage.c.requests + bindparam("requests"),
        prompt_tokens=agent_usage.c.prompt_tokens + bindparam("prompt_tokens"),
        cached_prompt_tokens=agent_usage.c.cached_prompt_tokens + bindparam("cached_prompt_tokens"),
        completion_tokens=agent_usage.c.completion_tokens + bindparam("completion_tokens"),
    )
)
_USAGE_NEW = agent_usage.insert().values(agent_id=bindparam("aid"))
_BLOCK_SET = (
    update(blocks)
    .where(blocks.c.agent_id == bindparam("aid"), blocks.c.label == bindparam("lbl"))
    .values(value=bindparam("val"))
)


class Kernel:
    """One llmos kernel over one database. Use `Kernel.open()` or `async with`."""

    def __init__(
        self,
        db: Database,
        *,
        cores: dict[str, Core] | None = None,
        embedders: dict[str, Embedder] | None = None,
        max_images: int = 256,
        policy: str | None = None,
        quantum: int | None = None,
        shared: bool | None = None,
    ) -> None:
        self.db = db
        self.group_commit = GroupCommit(db)
        # Other kernel processes on this database: take agents' leases
        # (kernel/leases.py). Off by default: one kernel needs none.
        if shared is None:
            shared = os.environ.get("LLMOS_SHARED_DB", "") not in ("", "0")
        self.leases = AgentLeases(self.group_commit) if shared else None
        self.recall = RecallStorage()
        self.archival = ArchivalStorage(db)
        self.procs = ProcessTable(max_images)
        # Cores by key ("model" or "model@base_url"); tests and embedders of
        # the Python API may pass ready-made cores under the model name.
        self._cores: dict[str, Core] = dict(cores or {})
        # Run queues and replica sets by core identity: two cores may share a
        # name (one model behind two servers).
        self._queues: dict[int, RunQueue] = {}
        self._replicas: dict[int, list[Core]] = {}
        self.policy = policy or os.environ.get("LLMOS_POLICY", "fifo")
        self.quantum = quantum or int(os.environ.get("LLMOS_QUANTUM", "32"))
        self._embedders: dict[str, Embedder] = dict(embedders or {})
        # (owner, name or id) -> agent id, so a loaded agent is found without SQL
        self._ids: dict[tuple[str, str], str] = {}
        self.stats_by_kind: dict[str, SyscallStats] = {}
        self.stats_by_agent: dict[str, SyscallStats] = {}
        # Per-agent LLM usage: totals as stored (loaded on first need) and what
        # is not stored yet; the next commit_step of that agent writes it.
        self._usage_saved: dict[str, UsageTotals] = {}
        self._usage_pending: dict[str, UsageTotals] = {}
        # The tool, access and approval managers (issue 6); all on this database.
        self.tools = ToolManager(db)
        # MCP servers' tools run through their sessions, started on first use
        self.mcp = self.tools.mcp = McpManager(db)
        self.mcp.on_change = self.tools.invalidate
        self.grants = Grants(db)
        self.audit_log = AuditLog(db)
        self.approval_store = Approvals(db)
        self.files = FileStore(db)
        # agent id -> calls waiting for approval that this kernel saw made or
        # loaded: an idle agent with some shows as waiting_approval.
        self._awaiting: dict[str, int] = {}
        # Agent-to-agent messages (kernel/messaging.py), made on first use.
        self._messenger: Any = None

    @classmethod
    def open(cls, home: str | Path | None = None, **kwargs: Any) -> Kernel:
        home = Path(home) if home else default_home()
        return cls(Database.open(home / "llmos.db"), **kwargs)

    async def __aenter__(self) -> Kernel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.mcp.aclose()
        if self._messenger is not None:
            await self._messenger.close()
        if self.leases is not None:
            with contextlib.suppress(Exception), self.db.begin() as conn:
                self.leases.release_all(conn)
        for agent_id in list(self._usage_pending):
            # suppress: e.g. the agent was deleted meanwhile
            with contextlib.suppress(Exception):
                with self.db.begin() as conn:
                    written = self._write_usage(conn, agent_id)
                self._usage_committed(agent_id, written)
        closed: set[int] = set()
        for core in [*self._cores.values(), *(c for cs in self._replicas.values() for c in cs)]:
            if id(core) not in closed:
                closed.add(id(core))
                await core.aclose()
        self.db.close()

    # --- cores and embedders ----------------------------------------------------

    @staticmethod
    def _core_key(model: str, base_url: str | None) -> str:
        return f"{model}@{base_url}" if base_url else model

    def add_core(
        self,
        core: Core,
        model: str | None = None,
        base_url: str | None = None,
        replicas: list[Core] | None = None,
    ) -> None:
        """Register a ready-made core (e.g. a ScriptedCore) under a model string;
        `replicas` are further cores serving the same model, to spread load over."""
        self._cores[self._core_key(model or core.name, base_url)] = core
        if replicas:
            self._replicas[id(core)] = [core, *replicas]

    def core(self, model: str, base_url: str | None = None) -> Core:
        """The core for a model string. A comma-separated `base_url` names
        replicas of one model (e.g. two vLLM servers): the kernel spreads load."""
        key = self._core_key(model, base_url)
        core = self._cores.get(key) or self._cores.get(model)
        if core is None:
            urls = [u.strip() for u in base_url.split(",")] if base_url else [None]
            made = [make_core(model, base_url=u) for u in urls if u != ""]
            core = self._cores[key] = made[0]
            if len(made) > 1:
                self._replicas[id(core)] = made
        return core

    def queue(self, core: Core) -> RunQueue:
        q = self._queues.get(id(core))
        if q is None:
            q = self._queues[id(core)] = RunQueue(core, policy=self.policy, quantum=self.quantum)
        return q

    def set_policy(
        self, core: Core, policy: str, *, quantum: int | None = None, aging: float = 1.0
    ) -> RunQueue:
        """Choose a core's scheduling policy (fifo, rr, priority); the core must be idle."""
        old = self._queues.get(id(core))
        if old is not None and (old.running or old.queued):
            raise RuntimeError(f"core {core.name} is busy; change its policy when idle")
        q = RunQueue(core, policy=policy, quantum=quantum or self.quantum, aging=aging)
        self._queues[id(core)] = q
        return q

    def _pick_queue(self, core: Core) -> RunQueue:
        replicas = self._replicas.get(id(core))
        if not replicas:
            return self.queue(core)
        return min((self.queue(c) for c in replicas), key=lambda q: q.load)

    def embedder(self, spec: str) -> Embedder:
        emb = self._embedders.get(spec)
        if emb is None:
            from llmos.memory.embedders import make_embedder

            emb = self._embedders[spec] = make_embedder(spec)
        return emb

    # --- syscalls ---------------------------------------------------------------

    async def syscall(self, call: Syscall) -> Any:
        handler = getattr(self, DISPATCH[type(call)])
        try:
            return await handler(call)
        finally:
            call.finished_at = time.perf_counter()
            if not call.started_at:
                call.started_at = call.queued_at
            elapsed = call.finished_at - call.queued_at
            for table, key in (
                (self.stats_by_kind, call.kind),
                (self.stats_by_agent, call.agent_id),
            ):
                s = table.get(key)
                if s is None:
                    s = table[key] = SyscallStats()
                s.count += 1
                s.seconds += elapsed
                s.tokens += call.tokens

    async def sys_llm(self, call: LLMSyscall) -> ChatResponse:
        response = await self._pick_queue(call.core).run(call)
        u = response.usage
        call.tokens = u.prompt_tokens + u.completion_tokens
        stats = self.stats_by_agent.get(call.agent_id)
        if stats is None:
            stats = self.stats_by_agent[call.agent_id] = SyscallStats()
        stats.prompt_tokens += u.prompt_tokens
        stats.cached_tokens += u.cached_prompt_tokens
        self._usage_pending.setdefault(call.agent_id, UsageTotals()).add(u)
        return response

    async def sys_memory(self, call: MemorySyscall) -> Any:
        call.started_at = time.perf_counter()
        a = call.args
        with self.db.connect() as conn:
            if call.op == "recall_search":
                return self.recall.search(conn, call.agent_id, a["query"], a["page"], fn.PAGE_SIZE)
            if call.op == "recall_search_date":
                return self.recall.search_date(
                    conn, call.agent_id, a["start"], a["end"], a["page"], fn.PAGE_SIZE
                )
        raise ValueError(f"unknown memory syscall {call.op!r}")

    async def sys_storage(self, call: StorageSyscall) -> Any:
        call.started_at = time.perf_counter()
        a = call.args
        emb = self.embedder(a["embedder"])
        if call.op == "embed":
            # Embedding is CPU work: keep the event loop free for other agents.
            return await asyncio.to_thread(emb.embed, a["texts"])
        if call.op == "archival_search":
            qvec = (await asyncio.to_thread(emb.embed, [a["query"]]))[0]
            with self.db.connect() as conn:
                return self.archival.search(
                    conn, call.agent_id, emb, a["query"], a["page"], a.get("page_size", 5), qvec
                )
        raise ValueError(f"unknown storage syscall {call.op!r}")

    async def sys_tool(self, call: ToolSyscall) -> fn.FunctionResult:
        call.started_at = time.perf_counter()
        if call.call.name in fn.BUILTINS:  # the fast path: in-process, no grant needed
            return await fn.execute(call.ctx, call.call)
        if call.call.name.startswith("file_") and call.ctx.agent.settings.get("file_tools"):
            from llmos.agent.file_functions import FILE_FUNCTIONS

            return await fn.execute(call.ctx, call.call, FILE_FUNCTIONS)
        if call.call.name.startswith("send_message_to_agent") and call.ctx.agent.settings.get(
            "agent_tools"
        ):
            from llmos.agent.agent_functions import AGENT_FUNCTIONS

            return await fn.execute(call.ctx, call.call, AGENT_FUNCTIONS)
        from llmos.tools.executor import execute_user_tool

        return await execute_user_tool(self, call.ctx, call.call)

    @property
    def messenger(self) -> Any:
        """The agent-to-agent message service (`kernel/messaging.py`)."""
        if self._messenger is None:
            from llmos.kernel.messaging import AgentMessenger

            self._messenger = AgentMessenger(self)
        return self._messenger

    async def sys_agent(self, call: AgentSyscall) -> str:
        call.started_at = time.perf_counter()
        return await self.messenger.serve(call)

    async def message_agent(
        self, caller: AgentImage, target: str, message: str, *, wait: bool
    ) -> str:
        """One agent messages another (the agent functions' syscall); raises FunctionError."""
        return await self.syscall(
            AgentSyscall(
                agent_id=caller.id,
                op="ask" if wait else "send",
                args={"caller": caller, "target": target, "message": message},
            )
        )

    async def settle_agent_messages(self, timeout: float | None = None) -> None:
        """Wait for agent messages delivered in the background (and their turns) to finish."""
        if self._messenger is not None:
            await self._messenger.settle(timeout)

    def tool_specs(self, image: AgentImage) -> list[ToolSpec]:
        """The functions the agent's requests offer: built-ins plus its attached tools."""
        builtins = fn.TOOL_SPECS
        if image.settings.get("file_tools"):
            from llmos.agent.file_functions import FILE_SPECS

            builtins = [*builtins, *FILE_SPECS]
        if image.settings.get("agent_tools"):
            from llmos.agent.agent_functions import AGENT_SPECS

            builtins = [*builtins, *AGENT_SPECS]
        return self.tools.specs_for(image.id, image.owner, builtins)

    # helpers the built-in functions use: each is one syscall
    async def memory_search_recall(
        self, agent: AgentImage, query: str, page: int
    ) -> tuple[list[StoredMessage], int]:
        return await self.syscall(
            MemorySyscall(
                agent_id=agent.id, op="recall_search", args={"query": query, "page": page}
            )
        )

    async def memory_search_recall_date(
        self, agent: AgentImage, start: datetime, end: datetime, page: int
    ) -> tuple[list[StoredMessage], int]:
        return await self.syscall(
            MemorySyscall(
                agent_id=agent.id,
                op="recall_search_date",
                args={"start": start, "end": end, "page": page},
            )
        )

    async def storage_search_archival(
        self, agent: AgentImage, query: str, page: int, page_size: int = fn.PAGE_SIZE
    ) -> tuple[list[Passage], int]:
        return await self.syscall(
            StorageSyscall(
                agent_id=agent.id,
                op="archival_search",
                args={
                    "query": query,
                    "page": page,
                    "page_size": page_size,
                    "embedder": agent.embedder,
                },
            )
        )

    async def embed(self, agent: AgentImage, texts: list[str]) -> np.ndarray:
        return await self.syscall(
            StorageSyscall(
                agent_id=agent.id, op="embed", args={"texts": texts, "embedder": agent.embedder}
            )
        )

    # --- agents -----------------------------------------------------------------

    async def create_agent(
        self,
        name: str,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        persona: str | None = None,
        human: str | None = None,
        blocks_: dict[str, str] | None = None,
        block_limit: int = DEFAULT_BLOCK_LIMIT,
        context_window: int | None = None,
        layout: str = "stable",
        embedder: str | None = None,
        system_prompt: str | None = None,
        settings: dict[str, Any] | None = None,
        owner: str = "local",
    ) -> dict[str, Any]:
        """Create an agent and return its description. Raises AgentExists, ValueError."""
        name = name.strip()
        if not name or len(name) > 128:
            raise ValueError("an agent name must be 1 to 128 characters")
        if layout not in ("stable", "classic"):
            raise ValueError("layout must be 'stable' or 'classic'")
        with self.db.connect() as conn:
            if self._find(conn, name, owner) is not None:
                raise AgentExists(f"an agent named {name!r} already exists")
        core = self.core(model, base_url)
        probe = getattr(core, "probe", None)
        if probe is not None:
            # A remote core: ask the server for its window (best effort, and
            # never long: an unreachable server must not stall agent creation).
            # A window given by the user overrides what the core assumes.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(probe(), 5)
            window = context_window or core.context_window
        else:
            # A local core's window is the context it was loaded with.
            window = min(context_window or core.context_window, core.context_window)
        if window < 1024:
            raise ValueError(f"context window of {window} tokens is too small (need >= 1024)")
        memory = {"persona": persona or DEFAULT_PERSONA, "human": human or DEFAULT_HUMAN}
        memory.update(blocks_ or {})
        for label, value in memory.items():
            if len(value) > block_limit:
                raise ValueError(
                    f"block {label!r} has {len(value)} characters, over the limit of {block_limit}"
                )
        from llmos.agent.prompts import load_prompt

        agent_id = f"agent-{uuid.uuid4().hex[:16]}"
        now = time.time()
        core_memory = CoreMemory([Block(k, v, block_limit) for k, v in memory.items()])
        prompt = system_prompt or load_prompt("system").replace("{name}", name)
        with self.db.begin() as conn:
            conn.execute(
                agents.insert().values(
                    id=agent_id,
                    owner=owner,
                    name=name,
                    model=model,
                    base_url=base_url,
                    context_window=window,
                    layout=layout,
                    embedder=embedder or default_embedder(),
                    system_prompt=prompt,
                    settings=dict(settings or {}),
                    summary="",
                    window_start=0,
                    core_snapshot=core_memory.render(),
                    created_at=now,
                    updated_at=now,
                )
            )
            for pos, (label, value) in enumerate(memory.items()):
                conn.execute(
                    blocks.insert().values(
                        agent_id=agent_id,
                        label=label,
                        value=value,
                        char_limit=block_limit,
                        position=pos,
                    )
                )
        image = self._image(agent_id, owner)
        fixed = self.context(agent_id, owner).total
        if fixed > 0.75 * (window - image.max_tokens):
            await self.delete_agent(agent_id, owner=owner)
            raise ValueError(
                f"the system prompt, tools and core memory take {fixed} tokens, too much of a "
                f"{window}-token window; use a larger --context-window or smaller blocks"
            )
        return image.describe()

    def _find(self, conn: Any, name_or_id: str, owner: str) -> Any:
        return conn.execute(
            select(agents).where(
                agents.c.owner == owner,
                (agents.c.name == name_or_id) | (agents.c.id == name_or_id),
            )
        ).first()

    def list_agents(self, owner: str = "local") -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            rows = conn.execute(
                select(agents.c.id, agents.c.name, agents.c.model, agents.c.created_at)
                .where(agents.c.owner == owner)
                .order_by(agents.c.created_at)
            ).fetchall()
        return [dict(r._mapping) for r in rows]

    def _image(self, name_or_id: str, owner: str = "local") -> AgentImage:
        """The agent's in-memory image, loaded from the database if needed."""
        agent_id = self._ids.get((owner, name_or_id))
        if agent_id is not None:  # the hot path: no database round trip
            proc = self.procs.peek(agent_id)
            if proc is not None and proc.image is not None:
                self.procs.touch(proc)
                return proc.image
        with self.db.connect() as conn:
            row = self._find(conn, name_or_id, owner)
            if row is None:
                raise AgentNotFound(f"no agent named {name_or_id!r}")
            self._ids[(owner, row.name)] = self._ids[(owner, row.id)] = row.id
            proc = self.procs.get(row.id, row.name)
            if proc.image is not None:
                self.procs.touch(proc)
                return proc.image
            block_rows = conn.execute(
                select(blocks).where(blocks.c.agent_id == row.id).order_by(blocks.c.position)
            ).fetchall()
            image = AgentImage(
                id=row.id,
                owner=row.owner,
                name=row.name,
                model=row.model,
                base_url=row.base_url,
                context_window=row.context_window,
                layout=row.layout,
                embedder=row.embedder,
                system_prompt=row.system_prompt,
                settings=dict(row.settings or {}),
                summary=row.summary,
                window_start=row.window_start,
                core_snapshot=row.core_snapshot,
                memory=CoreMemory([Block(b.label, b.value, b.char_limit) for b in block_rows]),
                window=self.recall.load(conn, row.id, row.window_start),
                created_at=row.created_at,
                recall_count=self.recall.count(conn, row.id),
                archival_count=self.archival.count(conn, row.id),
            )
        proc.image = image
        self.procs.touch(proc)
        # calls left waiting for approval by an earlier kernel (a restart)
        self._awaiting[image.id] = self.approval_store.pending_count(image.id)
        if self._awaiting[image.id] and not proc.lock.locked():
            proc.set(ProcState.WAITING_APPROVAL)
        return image

    def process(self, name_or_id: str, owner: str = "local") -> tuple[Process, AgentImage]:
        image = self._image(name_or_id, owner)
        return self.procs.get(image.id, image.name), image

    def get_agent(self, name_or_id: str, owner: str = "local") -> dict[str, Any]:
        image = self._image(name_or_id, owner)
        return image.describe() | {"usage": self.agent_usage(image.id).as_dict()}

    # --- usage and prompt-cache hit rate -----------------------------------------

    def agent_usage(self, agent_id: str) -> UsageTotals:
        """The agent's LLM usage over its lifetime (stored totals plus this session's)."""
        saved = self._usage_saved.get(agent_id)
        if saved is None:
            with self.db.connect() as conn:
                row = conn.execute(
                    select(agent_usage).where(agent_usage.c.agent_id == agent_id)
                ).first()
            saved = UsageTotals()
            if row is not None:
                saved = UsageTotals(
                    row.requests, row.prompt_tokens, row.cached_prompt_tokens, row.completion_tokens
                )
            self._usage_saved[agent_id] = saved
        total = UsageTotals()
        total.add(saved)
        pending = self._usage_pending.get(agent_id)
        if pending is not None:
            total.add(pending)
        return total

    def _write_usage(self, conn: Any, agent_id: str) -> UsageTotals | None:
        """Add the agent's pending usage to its stored totals (inside `conn`'s
        transaction); returns what it wrote, for `_usage_committed`."""
        pending = self._usage_pending.get(agent_id)
        if pending is None or not pending.requests:
            return None
        row = {
            "aid": agent_id,
            "requests": pending.requests,
            "prompt_tokens": pending.prompt_tokens,
            "cached_prompt_tokens": pending.cached_prompt_tokens,
            "completion_tokens": pending.completion_tokens,
        }
        if not conn.execute(_USAGE_ADD, row).rowcount:
            conn.execute(_USAGE_NEW, row)
        return pending

    def _usage_committed(self, agent_id: str, written: UsageTotals | None) -> None:
        """The usage `_write_usage` wrote is stored now: it is no longer pending."""
        if written is None:
            return
        if self._usage_pending.get(agent_id) is written:
            del self._usage_pending[agent_id]
        saved = self._usage_saved.get(agent_id)
        if saved is not None:
            saved.add(written)

    async def delete_agent(self, name_or_id: str, owner: str = "local") -> None:
        proc, image = self.process(name_or_id, owner)
        async with self._holding(proc):
            with self.db.begin() as conn:
                self.archival.delete_agent(conn, image.id)
                conn.execute(delete(agents).where(agents.c.id == image.id))
            self.procs.forget(image.id)
            self._ids.pop((owner, image.name), None)
            self._ids.pop((owner, image.id), None)
            self._usage_saved.pop(image.id, None)
            self._usage_pending.pop(image.id, None)

    # --- messages -----------------------------------------------------------------

    @asynccontextmanager
    async def _holding(self, proc: Process) -> AsyncIterator[None]:
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
                if await self.leases.acquire(proc.agent_id):
                    proc.image = None  # another kernel ran it since: reload
                leased = True
            yield
        finally:
            try:
                if leased and self.leases is not None:
                    self.leases.release(proc.agent_id)
            finally:
                proc.lock.release()

    @asynccontextmanager
    async def _running(self, proc: Process) -> AsyncIterator[None]:
        """Hold the agent for one turn; messages wait here, in arrival order."""
        async with self._holding(proc):
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
                waiting = self._awaiting.get(proc.agent_id, 0) > 0
                proc.set(ProcState.WAITING_APPROVAL if waiting else ProcState.READY)

    def cancel(self, name_or_id: str, owner: str = "local") -> bool:
        """Cancel the agent's running turn. Committed steps stay; the turn in
        progress ends with stop_reason "cancelled". False if it was idle."""
        proc, _ = self.process(name_or_id, owner)
        if proc.task is None or proc.task.done():
            return False
        proc.cancel_requested = True
        proc.task.cancel()
        return True

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
        and reply as it happens (for streaming).
        """
        from llmos.agent.loop import run_turn

        proc, image = self.process(name_or_id, owner)
        core = self.core(image.model, image.base_url)
        event = StoredMessage(role, text)
        event.tokens = message_tokens(core, event.to_message())
        budget = image.context_window - image.max_tokens
        if event.tokens > budget // 2:
            raise MessageTooLong(
                f"the message is about {event.tokens} tokens; this agent's window allows "
                f"{budget // 2} per message (half its {budget}-token budget). Load long "
                "documents into archival memory instead."
            )
        async with self._running(proc):
            # The image may have been reloaded while this message waited.
            image = self._image(image.id, owner)
            proc.core = core.name
            return await run_turn(self, proc, image, core, [event], on_event)

    async def retry(
        self, name_or_id: str, owner: str = "local", on_event: EventSink | None = None
    ) -> Turn:
        """Run the last user message's turn again, forgetting what the agent answered.

        That user message and everything after it leave recall and the window,
        then the message is delivered anew. Effects beyond messages (core memory
        edits, archival inserts) stay. Raises ValueError if the window holds no
        user message (it may have been evicted).
        """
        from llmos.agent.loop import run_turn

        proc, image = self.process(name_or_id, owner)
        core = self.core(image.model, image.base_url)
        async with self._running(proc):
            image = self._image(image.id, owner)
            index = next(
                (
                    i
                    for i in range(len(image.window) - 1, -1, -1)
                    if image.window[i].role == "user"
                    # notes of block edits are user-role events, not user messages
                    and not (image.window[i].content or "").startswith("[system event]")
                ),
                None,
            )
            if index is None:
                raise ValueError("there is no user message in the window to retry")
            old = image.window[index]
            dropped = image.window[index:]
            with self.db.begin() as conn:
                conn.execute(
                    delete(messages).where(messages.c.agent_id == image.id, messages.c.id >= old.id)
                )
            # The window is the tail of recall, so every dropped row was in it.
            image.window = image.window[:index]
            image.recall_count -= len(dropped)
            event = StoredMessage("user", old.content)
            event.tokens = old.tokens
            proc.core = core.name
            return await run_turn(self, proc, image, core, [event], on_event)

    async def rethink(self, name_or_id: str, thought: str, owner: str = "local") -> None:
        """Rewrite the inner thoughts (`content`) of the agent's last assistant message."""
        proc, image = self.process(name_or_id, owner)
        core = self.core(image.model, image.base_url)
        async with self._holding(proc):
            image = self._image(image.id, owner)
            msg = next((m for m in reversed(image.window) if m.role == "assistant"), None)
            if msg is None:
                raise ValueError("there is no assistant message in the window to rethink")
            msg.content = thought
            msg._message = None  # the cached chat message is stale now
            msg.tokens = message_tokens(core, msg.to_message())
            with self.db.begin() as conn:
                conn.execute(
                    update(messages)
                    .where(messages.c.id == msg.id)
                    .values(content=thought, text=msg.searchable_text(), tokens=msg.tokens)
                )

    async def commit_step(
        self,
        image: AgentImage,
        new_messages: list[StoredMessage],
        writes: fn.StepWrites | None = None,
        agent_fields: dict[str, Any] | None = None,
    ) -> None:
        """Write a step's messages and effects atomically, then update the image.

        The write joins the kernel's group commit: steps of agents that finish
        together share one transaction (storage/group_commit.py)."""
        emb = self.embedder(image.embedder) if writes and writes.passages else None

        # Runs again alone if its batch rolls back: it changes only the database,
        # and returns the usage it stored for `committed`.
        def write(conn: Connection) -> UsageTotals | None:
            self.recall.append(conn, image.id, new_messages)
            usage = self._write_usage(conn, image.id)
            fields = dict(agent_fields or {})
            if writes:
                for label in writes.blocks:
                    conn.execute(
                        _BLOCK_SET,
                        {"aid": image.id, "lbl": label, "val": image.memory.blocks[label].value},
                    )
                if writes.passages and emb is not None:
                    self.archival.insert(
                        conn,
                        image.id,
                        emb,
                        [t for t, _ in writes.passages],
                        vectors=[v for _, v in writes.passages],
                    )
                if writes.settings:
                    fields["settings"] = image.settings
            if fields:
                fields["updated_at"] = time.time()
                conn.execute(update(agents).where(agents.c.id == image.id).values(**fields))
            return usage

        def committed(usage: UsageTotals | None) -> None:
            self._usage_committed(image.id, usage)
            image.window.extend(new_messages)
            image.recall_count += len(new_messages)
            if writes:
                image.archival_count += len(writes.passages)

        await self.group_commit.submit(write, committed)

    # --- reading memory -----------------------------------------------------------

    def context(self, name_or_id: str, owner: str = "local") -> CompiledWindow:
        """The window the agent's next step would see, with its sections' token counts."""
        image = self._image(name_or_id, owner)
        core = self.core(image.model, image.base_url)
        return compile_window(image, core, self.tool_specs(image), [], image.max_tokens)

    def messages(
        self, name_or_id: str, owner: str = "local", *, before: int | None = None, limit: int = 50
    ) -> list[StoredMessage]:
        image = self._image(name_or_id, owner)
        with self.db.connect() as conn:
            return self.recall.page(conn, image.id, before=before, limit=limit)

    async def search_recall(
        self, name_or_id: str, query: str, page: int = 0, owner: str = "local"
    ) -> tuple[list[StoredMessage], int]:
        return await self.memory_search_recall(self._image(name_or_id, owner), query, page)

    async def search_archival(
        self,
        name_or_id: str,
        query: str,
        page: int = 0,
        owner: str = "local",
        page_size: int = fn.PAGE_SIZE,
    ) -> tuple[list[Passage], int]:
        image = self._image(name_or_id, owner)
        return await self.storage_search_archival(image, query, page, page_size)

    async def insert_archival(
        self, name_or_id: str, texts: list[str], owner: str = "local", source: str | None = None
    ) -> list[int]:
        image = self._image(name_or_id, owner)
        vectors = await self.embed(image, texts)
        with self.db.begin() as conn:
            ids = self.archival.insert(
                conn, image.id, self.embedder(image.embedder), texts, source, vectors
            )
        image.archival_count += len(ids)
        return ids

    async def load_documents(
        self,
        name_or_id: str,
        paths: list[str | Path],
        owner: str = "local",
        *,
        progress: Callable[[Any], None] | None = None,
        chunk_size: int | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
    ) -> Any:
        """Load documents (text, Markdown, HTML, PDF; directories recursively) into
        the agent's archival memory: chunked, embedded in batches, resumable and
        idempotent (see `memory/loader.py`). `progress` gets a `LoadProgress`
        after each committed batch. Returns a `LoadReport`; a file that cannot be
        read is reported as failed, an embedder failure raises (rerun to resume)."""
        from llmos.memory import loader

        image = self._image(name_or_id, owner)
        return await loader.DocumentLoader(
            self.db,
            self.archival,
            image,
            embedder=self.embedder(image.embedder),
            embed=lambda texts: self.embed(image, texts),
            chunk_size=chunk_size or loader.CHUNK_SIZE,
            overlap=loader.CHUNK_OVERLAP if overlap is None else overlap,
            batch_size=batch_size or loader.BATCH_SIZE,
            progress=progress,
        ).load(paths)

    async def set_embedder(
        self,
        name_or_id: str,
        spec: str,
        owner: str = "local",
        *,
        progress: Callable[[int, int], None] | None = None,
        batch_size: int = 64,
    ) -> dict[str, Any]:
        """Switch the agent's embedder to `spec`, re-embedding its archival passages.

        Passages are embedded in batches of `batch_size` (calling
        `progress(done, total)` after each), then one transaction drops the
        agent's old vectors (of any dimension), stores the new ones (in the
        vector table for the new dimension) and records the new embedder: a
        failure or crash before it leaves the agent on its old embedder,
        untouched. The agent's turns wait meanwhile. Raises ValueError for an
        unknown spec and the embedder's own errors (e.g. `EmbeddingError`).
        """
        import numpy as np

        proc, image = self.process(name_or_id, owner)
        new = self.embedder(spec)  # an unknown spec fails before anything happens
        async with self._holding(proc):
            image = self._image(image.id, owner)
            previous = image.embedder
            with self.db.connect() as conn:
                total = self.archival.count(conn, image.id)
            ids: list[int] = []
            parts: list[np.ndarray] = []
            if progress is not None:
                progress(0, total)
            while True:  # until no passage is left, including any added meanwhile
                with self.db.connect() as conn:
                    rows = self.archival.texts_after(
                        conn, image.id, ids[-1] if ids else 0, batch_size
                    )
                if not rows:
                    break
                vectors = await asyncio.to_thread(new.embed, [t for _, t in rows])
                if vectors.shape != (len(rows), new.dim):
                    raise ValueError(
                        f"embedder {spec} returned vectors of shape {vectors.shape} for "
                        f"{len(rows)} texts; expected {new.dim}-d"
                    )
                ids.extend(pid for pid, _ in rows)
                parts.append(vectors)
                if progress is not None:
                    progress(len(ids), max(total, len(ids)))
            with self.db.begin() as conn:
                all_vectors = np.concatenate(parts) if parts else np.zeros((0, new.dim))
                self.archival.replace_vectors(conn, image.id, new.dim, ids, all_vectors)
                conn.execute(
                    update(agents)
                    .where(agents.c.id == image.id)
                    .values(embedder=spec, updated_at=time.time())
                )
            image.embedder = spec
        return {
            "agent": image.name,
            "embedder": spec,
            "previous": previous,
            "dim": new.dim,
            "passages": len(ids),
        }

    def agent_models(self) -> list[dict[str, Any]]:
        """(name, model, base_url) of every agent of every owner: what `llmos models` lists."""
        with self.db.connect() as conn:
            rows = conn.execute(
                select(agents.c.name, agents.c.model, agents.c.base_url).order_by(agents.c.name)
            ).fetchall()
        return [dict(r._mapping) for r in rows]

    async def update_block(
        self, name_or_id: str, label: str, value: str, owner: str = "local"
    ) -> None:
        """A user's edit of a block: the agent learns of it as an event in its window."""
        proc, image = self.process(name_or_id, owner)
        async with self._holding(proc):
            image = self._image(image.id, owner)
            image.memory.set(label, value)
            note = StoredMessage(
                "user",
                f"[system event] The user set core memory block '{label}' to:\n{value}",
            )
            core = self.core(image.model, image.base_url)
            note.tokens = message_tokens(core, note.to_message())
            await self.commit_step(image, [note], fn.StepWrites(blocks={label}))

    def kernel_stats(self) -> dict[str, Any]:
        cores = []
        for q in self._queues.values():
            row = q.stats()
            prompt = int(row.get("prompt_tokens") or 0)  # type: ignore[call-overload]
            cached = int(row.get("cached_prompt_tokens") or 0)  # type: ignore[call-overload]
            row["cache_hit_rate"] = round(cached / prompt, 4) if prompt else None
            cores.append(row)
        return {
            "processes": self.procs.snapshot(),
            "cores": cores,
            "syscalls": {
                k: {"count": s.count, "seconds": round(s.seconds, 4), "tokens": s.tokens}
                for k, s in self.stats_by_kind.items()
            },
            # This session's LLM prompt tokens per agent and the share served from cache.
            "agents": {
                agent_id: {
                    "prompt_tokens": s.prompt_tokens,
                    "cached_prompt_tokens": s.cached_tokens,
                    "cache_hit_rate": (
                        round(s.cached_tokens / s.prompt_tokens, 4) if s.prompt_tokens else None
                    ),
                }
                for agent_id, s in self.stats_by_agent.items()
                if s.prompt_tokens
            },
        }

    def usage_of(self, agent_id: str) -> SyscallStats:
        return self.stats_by_agent.get(agent_id, SyscallStats())

    # --- tools, grants, approvals, audit (issue 6) -------------------------------

    async def add_tool(
        self,
        source: str,
        owner: str = "local",
        *,
        exclusive: bool | None = None,
        irreversible: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Register the public functions of Python `source` as tools of `owner`.

        Schemas come from the signatures and docstrings, computed in the sandbox.
        Raises ToolError (bad file, a built-in's name).
        """
        return await self.tools.add(
            source,
            owner,
            exclusive=exclusive,
            irreversible=irreversible,
            reserved=set(fn.BUILTINS),
        )

    def attach_tool(self, agent: str, tool_name: str, owner: str = "local") -> None:
        """Give the agent a tool (and the grant to call it). Raises ToolNotFound."""
        image = self._image(agent, owner)
        self.tools.attach(image.id, owner, tool_name)

    def detach_tool(self, agent: str, tool_name: str, owner: str = "local") -> bool:
        return self.tools.detach(self._image(agent, owner).id, tool_name)

    def list_tools(self, owner: str = "local", agent: str | None = None) -> list[dict[str, Any]]:
        """The owner's tools, or the tools attached to one agent."""
        if agent is None:
            return self.tools.list(owner)
        image = self._image(agent, owner)
        return [t.describe() for t in self.tools.attached(image.id, owner)]

    def remove_tool(self, name: str, owner: str = "local") -> None:
        self.tools.remove(owner, name)

    def grant(
        self, agent: str, kind: str, target: str, mode: str = "rw", owner: str = "local"
    ) -> None:
        """Let the agent message another agent (kind "agent") or use a shared file area."""
        self.grants.grant(self._image(agent, owner).id, kind, target, mode)

    def revoke(self, agent: str, kind: str, target: str, owner: str = "local") -> bool:
        return self.grants.revoke(self._image(agent, owner).id, kind, target)

    def file_area(
        self, agent: str | None = None, shared: str | None = None, owner: str = "local"
    ) -> str:
        """The file area of an agent (its own files) or of a shared area, for `self.files`."""
        from llmos.storage.files import agent_area, shared_area

        if shared:
            return shared_area(shared)
        if agent is None:
            raise ValueError("name an agent or a shared area")
        return agent_area(self._image(agent, owner).id)

    def note_pending_approval(self, agent_id: str, delta: int) -> None:
        self._awaiting[agent_id] = max(0, self._awaiting.get(agent_id, 0) + delta)

    def approvals(self, owner: str = "local", status: str | None = "pending") -> list[dict]:
        """Calls of irreversible tools waiting for `owner` (status None: all, decided too)."""
        return self.approval_store.list(owner, status)

    def audit(
        self, owner: str = "local", agent: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The owner's audit log, newest first."""
        return self.audit_log.query(owner, agent=agent, limit=limit)

    async def decide(
        self,
        approval_id: str,
        approve: bool,
        reason: str | None = None,
        owner: str = "local",
        on_event: EventSink | None = None,
    ) -> Turn:
        """Approve or deny a pending call; the agent gets the outcome as an event and a turn.

        Approved: the tool runs now (in the sandbox) and its result is in the
        event. Denied: the event says so, with `reason`. Works after a restart:
        the pending call is read from the database. Raises ApprovalNotFound,
        AlreadyDecided.
        """
        from llmos.agent.loop import run_turn
        from llmos.tools.executor import clip

        record = self.approval_store.decide(approval_id, owner, approve, reason)
        image = self._image(record["agent_id"], owner)
        self.audit_log.record(
            owner,
            "approval",
            "approved" if approve else "denied",
            agent_id=image.id,
            agent_name=image.name,
            target=record["tool"],
            detail=f"{approval_id}" + (f": {reason}" if reason else ""),
        )
        call_text = f"{record['tool']}({record['arguments']})"
        if approve:
            tool = self.tools.get(owner, record["tool"])
            if tool is None:
                outcome = "The tool no longer exists; nothing was run."
            else:
                ran = await self.tools.run(tool, json.loads(record["arguments"]))
                outcome = (
                    f"Result: {ran.message()}" if ran.ok else f"The tool failed: {ran.message()}"
                )
            text = f"Your owner approved your call {call_text} (approval {approval_id}). {outcome}"
        else:
            outcome = "Denied" + (f": {reason}" if reason else ".")
            text = (
                f"Your owner denied your call {call_text} (approval {approval_id}); it was not "
                f"run. Reason: {reason or 'none given'}."
            )
        self.approval_store.finish(approval_id, outcome, delivered=False)
        self.note_pending_approval(image.id, -1)
        proc, image = self.process(image.id, owner)
        core = self.core(image.model, image.base_url)
        event = StoredMessage("user", clip(f"[system event] {text}"))
        event.tokens = message_tokens(core, event.to_message())
        async with self._running(proc):
            image = self._image(image.id, owner)
            proc.core = core.name
            turn = await run_turn(self, proc, image, core, [event], on_event)
        self.approval_store.finish(approval_id, outcome, delivered=True)
        return turn
