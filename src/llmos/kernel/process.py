"""The process table: agents as the kernel schedules them.

A `Process` is an agent's entry: its state (one enum, every value reachable),
the lock that lets the agent run one step at a time, the task running its
turn, and its image (`memory/image.py`) while loaded. The `ProcessTable` keeps
at most `max_images` images in memory, dropping the least recently used idle
one. Across kernel processes on one database, agents are held by leases
(`kernel/leases.py`).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from llmos.memory.image import AgentImage


class ProcState(enum.StrEnum):
    READY = "ready"  # idle, waiting for an event
    RUNNING = "running"  # the kernel is executing its step (compiling, committing)
    WAITING_LLM = "waiting_llm"  # its llm syscall is queued on or running on a core
    WAITING_TOOL = "waiting_tool"  # a function call is executing
    WAITING_APPROVAL = "waiting_approval"  # idle, with calls waiting for its owner


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
    # its last turn ended where its window does not show it (the step limit, an
    # error, a cancel): its lease is released at once, making the end durable
    ended_unseen: bool = False

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
        # Only the `excess` coldest are looked at (a copy, since they may be deleted):
        # copying the whole table on every touch cost a node with 1,000 agents in
        # memory 13% of its CPU (benchmarks/concurrency.py, 1,000 agents).
        for agent_id, cold in list(islice(self._loaded.items(), excess)):
            if cold is not proc and not cold.lock.locked() and cold.waiting == 0:
                cold.image = None
                del self._loaded[agent_id]

    def forget(self, agent_id: str) -> None:
        self._procs.pop(agent_id, None)
        self._loaded.pop(agent_id, None)

    def running(self) -> list[Process]:
        """Processes holding their agent now (a turn or an edit in progress)."""
        return [p for p in self._procs.values() if p.lock.locked()]

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
