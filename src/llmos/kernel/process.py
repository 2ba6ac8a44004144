"""The process table: agents as the kernel schedules them.

A `Process` is an agent's entry: its state (one enum, every value reachable),
the lock that lets the agent run one step at a time, the task running its
turn, and its image (`memory/image.py`) while loaded. Across kernel
processes on one database, agents are held by leases (`kernel/leases.py`).

The `ProcessTable` keeps images in memory within a budget of bytes
(`LLMOS_IMAGE_MEMORY` MiB, 256 by default) and, if given, of images
(`max_images`), dropping the least recently used idle ones; a dropped image
is loaded from the database on its agent's next turn (2.5-4 ms on SQLite, a
few queries). An image's bytes are estimated from its window's tokens, as
measured by `benchmarks/agent_images.py` (2.9 KiB with an empty window, about
13 bytes per window token more): 256 MiB holds about 8,000 agents with short
windows (2,000 tokens) or 600 with full 32k-token windows. A count alone
(the earlier 256) bounded memory only as loosely as windows vary, and a
node with 1,000 active agents reloaded one on most turns (13% of its CPU).
"""

from __future__ import annotations

import asyncio
import enum
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from llmos.memory.image import AgentImage

#: the image budget unless $LLMOS_IMAGE_MEMORY (MiB) says otherwise
DEFAULT_IMAGE_MIB = 256
MEMORY_ENV = "LLMOS_IMAGE_MEMORY"
#: an image's bytes besides its window's messages, and per token of those (measured
#: 2.9 KiB and 13 B by benchmarks/agent_images.py; rounded up)
BASE_BYTES = 3 * 1024
BYTES_PER_TOKEN = 16


def image_bytes(image: Any) -> int:
    """The estimated bytes of an agent image in memory."""
    window = getattr(image, "window", ())
    return BASE_BYTES + BYTES_PER_TOKEN * sum(m.tokens or len(m.content or "") // 4 for m in window)


def image_memory() -> int:
    """The image budget in bytes: $LLMOS_IMAGE_MEMORY MiB, else 256. Raises ValueError."""
    raw = os.environ.get(MEMORY_ENV, "").strip()
    if not raw:
        return DEFAULT_IMAGE_MIB * 2**20
    try:
        mib = float(raw)
    except ValueError:
        raise ValueError(f"{MEMORY_ENV} must be a number of MiB, not {raw!r}") from None
    if not (mib > 0 and math.isfinite(mib)):
        raise ValueError(f"{MEMORY_ENV} must be a positive number of MiB, not {raw}")
    return int(mib * 2**20)


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
    bytes: int = 0  # its image's estimated size when last counted (ProcessTable.touch)
    counted: int = -1  # ... at this length of its window
    image_id: int = 0  # ... of this image object

    def set(self, state: ProcState) -> None:
        self.state = state
        self.since = time.monotonic()


class ProcessTable:
    """pid (agent id) -> Process. At most `max_bytes` (estimated) and, if given,
    `max_images` agent images stay in memory, least recently used dropped first
    (never one that is running or has events waiting)."""

    def __init__(self, max_images: int | None = None, max_bytes: int | None = None) -> None:
        self._procs: dict[str, Process] = {}
        self._loaded: OrderedDict[str, Process] = OrderedDict()  # LRU of procs with images
        self.max_images = max_images
        self.max_bytes = image_memory() if max_bytes is None else max_bytes
        self.image_bytes = 0  # the estimated sum over _loaded
        self.dropped = 0  # images dropped to stay within the limits

    def get(self, agent_id: str, name: str) -> Process:
        proc = self._procs.get(agent_id)
        if proc is None:
            proc = self._procs[agent_id] = Process(agent_id, name)
        return proc

    def peek(self, agent_id: str) -> Process | None:
        return self._procs.get(agent_id)

    def _over(self) -> bool:
        count = self.max_images is not None and len(self._loaded) > self.max_images
        return count or self.image_bytes > self.max_bytes

    def touch(self, proc: Process) -> None:
        """Mark the process's image as just used (and count its size again: its
        window may have grown); drop the coldest idle images while over a limit."""
        if proc.agent_id in self._loaded:
            self.image_bytes -= proc.bytes
        image = proc.image
        # counted again only when its window changed length (the hot path: no sum)
        if image is None:
            proc.bytes, proc.counted = 0, -1
        elif len(getattr(image, "window", ())) != proc.counted or proc.image_id != id(image):
            proc.bytes = image_bytes(image)
            proc.counted, proc.image_id = len(getattr(image, "window", ())), id(image)
        self.image_bytes += proc.bytes
        self._loaded[proc.agent_id] = proc
        self._loaded.move_to_end(proc.agent_id)
        if not self._over():
            return
        # Only the coldest few are looked at (a copy, since they may be deleted):
        # copying the whole table on every touch cost a node with 1,000 agents in
        # memory 13% of its CPU (benchmarks/concurrency.py, 1,000 agents).
        excess = len(self._loaded) - (self.max_images or len(self._loaded))
        for agent_id, cold in list(islice(self._loaded.items(), excess + 32)):
            if not self._over():
                break
            if cold is not proc and not cold.lock.locked() and cold.waiting == 0:
                self._drop(agent_id, cold)

    def _drop(self, agent_id: str, proc: Process) -> None:
        proc.image = None
        self._unload(agent_id)
        self.dropped += 1

    def _unload(self, agent_id: str) -> None:
        """Take the agent off the LRU and its image's bytes off the count."""
        proc = self._loaded.pop(agent_id, None)
        if proc is not None:
            self.image_bytes -= proc.bytes
            proc.bytes = 0

    def forget(self, agent_id: str) -> None:
        self._procs.pop(agent_id, None)
        self._unload(agent_id)

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
