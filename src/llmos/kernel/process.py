"""Processes: agents as the kernel sees them.

`AgentImage` is an agent's state loaded into memory — its settings, core
memory, summary and the messages in its context window — rebuilt from the
database on demand, so an idle agent costs a row, not an object. The
`ProcessTable` holds the running images with their scheduling state and the
per-agent lock that lets one agent run one step at a time.

Left out: eviction of idle images from the table (the kernel issue bounds it)
and cross-process locks (Postgres advisory locks, with the storage issue).
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmos.memory.blocks import CoreMemory

if TYPE_CHECKING:
    from llmos.llm.core import Core, ToolSpec
    from llmos.memory.recall import StoredMessage


class ProcState(enum.StrEnum):
    READY = "ready"  # idle, waiting for an event
    RUNNING = "running"  # the kernel is executing its step (compiling, committing)
    WAITING_LLM = "waiting_llm"  # its llm syscall is queued on or running on a core
    WAITING_TOOL = "waiting_tool"  # a function call is executing
    WAITING_APPROVAL = "waiting_approval"
    SLEEPING = "sleeping"  # heartbeats paused
    STOPPED = "stopped"


DEFAULT_SETTINGS: dict[str, Any] = {
    "max_steps": 10,  # function-chaining steps per turn before the loop is cut
    "warning_fraction": 0.75,  # memory-pressure alert (MemGPT's value)
    "flush_fraction": 0.9,  # evict and summarize above this share of the budget
    "flush_target": 0.5,  # ... down to this share
    "max_tokens": None,  # reserved for the answer; None: window // 8, at most 1024
    "temperature": 0.0,
    "priority": 0,  # for cores scheduled by priority; higher runs first
}


@dataclass(slots=True)
class AgentImage:
    id: str
    owner: str
    name: str
    model: str
    base_url: str | None
    context_window: int
    layout: str
    embedder: str
    system_prompt: str
    settings: dict[str, Any]
    summary: str
    window_start: int
    core_snapshot: str
    memory: CoreMemory
    window: list[StoredMessage]
    created_at: float
    recall_count: int = 0
    archival_count: int = 0
    warned: bool = False  # a memory-pressure alert was shown since the last flush
    # token counts of texts that rarely change (system prompt, snapshot), per core
    _counts: dict[tuple[str, int], int] = field(default_factory=dict)

    def setting(self, key: str) -> Any:
        value = self.settings.get(key)
        return DEFAULT_SETTINGS[key] if value is None else value

    @property
    def max_tokens(self) -> int:
        value = self.settings.get("max_tokens")
        return int(value) if value else min(1024, self.context_window // 8)

    def count(self, core: Core, item: str | list[ToolSpec]) -> int:
        """Token count of a rarely-changing text or tool list, memoised."""
        if not item:
            return 0
        if isinstance(item, str):
            key = (core.name, hash(item))
            if key not in self._counts:
                self._counts[key] = core.count_tokens(item)
        else:
            key = (core.name, hash(tuple(t.name for t in item)))
            if key not in self._counts:
                self._counts[key] = core.count_tokens(json.dumps([t.to_openai() for t in item]))
        if len(self._counts) > 64:  # snapshots change at each compaction
            self._counts.pop(next(iter(self._counts)))
        return self._counts[key]

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "model": self.model,
            "base_url": self.base_url,
            "context_window": self.context_window,
            "layout": self.layout,
            "embedder": self.embedder,
            "blocks": [
                {"label": b.label, "value": b.value, "limit": b.limit}
                for b in self.memory.blocks.values()
            ],
            "summary": self.summary,
            "messages_in_window": len(self.window),
            "recall_count": self.recall_count,
            "archival_count": self.archival_count,
            "settings": {k: self.setting(k) for k in DEFAULT_SETTINGS}
            | {k: v for k, v in self.settings.items() if k not in DEFAULT_SETTINGS},
            "created_at": self.created_at,
        }


@dataclass(slots=True)
class Process:
    """A process-table entry. `lock` serialises the agent's steps; `state` and
    `since` are written only by the task holding `lock`."""

    agent_id: str
    name: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    state: ProcState = ProcState.READY
    since: float = field(default_factory=time.monotonic)
    core: str | None = None
    waiting: int = 0  # events queued behind the running step
    image: AgentImage | None = None
    task: asyncio.Task[Any] | None = None  # the task running its turn, if any
    cancel_requested: bool = False

    def set(self, state: ProcState) -> None:
        self.state = state
        self.since = time.monotonic()


class ProcessTable:
    """pid (agent id) -> Process. At most `max_images` agent images stay in
    memory, least recently used dropped first (never one that is running)."""

    def __init__(self, max_images: int = 256) -> None:
        self._procs: dict[str, Process] = {}
        self._loaded: OrderedDict[str, Process] = OrderedDict()  # LRU of procs with images
        self.max_images = max_images

    def get(self, agent_id: str, name: str) -> Process:
        proc = self._procs.get(agent_id)
        if proc is None:
            proc = self._procs[agent_id] = Process(agent_id, name)
        return proc

    def peek(self, agent_id: str) -> Process | None:
        return self._procs.get(agent_id)

    def touch(self, proc: Process) -> None:
        """Mark the process's image as just used; drop the coldest idle images."""
        self._loaded[proc.agent_id] = proc
        self._loaded.move_to_end(proc.agent_id)
        excess = len(self._loaded) - self.max_images
        if excess <= 0:
            return
        for agent_id, cold in list(self._loaded.items())[:excess]:
            if cold is not proc and not cold.lock.locked() and cold.waiting == 0:
                cold.image = None
                del self._loaded[agent_id]

    def forget(self, agent_id: str) -> None:
        self._procs.pop(agent_id, None)
        self._loaded.pop(agent_id, None)

    @property
    def loaded_images(self) -> int:
        return sum(1 for p in self._loaded.values() if p.image is not None)

    def snapshot(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {
                "agent_id": p.agent_id,
                "name": p.name,
                "state": p.state.value,
                "core": p.core,
                "waiting": p.waiting,
                "seconds_in_state": round(now - p.since, 3),
            }
            for p in self._procs.values()
        ]
