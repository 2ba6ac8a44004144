"""Queue policies: the order in which waiting LLM syscalls get a core.

A policy holds `Waiter`s and answers three verbs, each called by the run queue
(`scheduler.py`) with the event loop as the only thread:

- `push(w)`  when a syscall arrives, or a preempted generation goes back in line;
- `pop()`    when a slot of the core frees up: the waiter to run next;
- `remove(w)` when a waiting syscall is cancelled.

Policies:

- `fifo`: arrival order.
- `rr` (round robin): arrival order too; what makes it round robin is that the
  run queue preempts a generation after its quantum of tokens and pushes it
  back to the tail (`scheduler.py`). On remote cores, which cannot pause a
  request, it degrades to admission order.
- `priority`: highest effective priority first, where a waiter's effective
  priority grows by `aging` per second of waiting, so nothing starves. Since
  every waiter ages at the same rate, the order by `priority - aging * enqueued`
  is the same at any instant, and a heap keeps it in O(log n).

Left out: fair sharing by tokens consumed (a later refinement of `rr`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

POLICIES = ("fifo", "rr", "priority")


@dataclass(eq=False, slots=True)
class Waiter:
    """A syscall waiting for a slot on a core."""

    priority: float = 0.0
    enqueued: float = field(default_factory=time.monotonic)
    future: asyncio.Future[None] | None = None
    payload: Any = None  # the syscall (for inspection)


class QueuePolicy(Protocol):
    def push(self, w: Waiter) -> None: ...
    def pop(self) -> Waiter | None: ...
    def remove(self, w: Waiter) -> None: ...
    def __len__(self) -> int: ...


class FifoPolicy:
    def __init__(self) -> None:
        self._q: deque[Waiter] = deque()

    def push(self, w: Waiter) -> None:
        self._q.append(w)

    def pop(self) -> Waiter | None:
        return self._q.popleft() if self._q else None

    def remove(self, w: Waiter) -> None:
        with contextlib.suppress(ValueError):  # already popped
            self._q.remove(w)

    def __len__(self) -> int:
        return len(self._q)


class PriorityPolicy:
    """Highest `priority + aging * seconds_waited` first; ties in arrival order."""

    def __init__(self, aging: float = 1.0) -> None:
        self.aging = aging
        self._heap: list[tuple[float, int, Waiter]] = []
        self._seq = itertools.count()
        self._removed: set[int] = set()

    def push(self, w: Waiter) -> None:
        key = -(w.priority - self.aging * w.enqueued)
        heapq.heappush(self._heap, (key, next(self._seq), w))

    def pop(self) -> Waiter | None:
        while self._heap:
            _, _, w = heapq.heappop(self._heap)
            if id(w) in self._removed:
                self._removed.discard(id(w))
                continue
            return w
        return None

    def remove(self, w: Waiter) -> None:
        if any(entry[2] is w for entry in self._heap):
            self._removed.add(id(w))

    def __len__(self) -> int:
        return len(self._heap) - len(self._removed)


def make_policy(name: str, aging: float = 1.0) -> QueuePolicy:
    if name in ("fifo", "rr"):
        return FifoPolicy()
    if name == "priority":
        return PriorityPolicy(aging)
    raise ValueError(f"unknown scheduling policy {name!r}; choose from {', '.join(POLICIES)}")
