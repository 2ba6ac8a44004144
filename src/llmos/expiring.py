"""A small cache whose entries expire: what a node keeps of what other nodes may change.

Nodes share the database, not their memory. A node that caches something read
on every request (the user of an API key, the tools attached to an agent)
keeps each entry `ttl` seconds, so a change made through another node arrives
within that time. Changes made through this process call `forget`, which also
moves the cache to a new generation: a lookup that read the database before
the change (in another thread) then keeps nothing, instead of putting the old
state back for a whole lifetime. Bounded: past `size` entries, the oldest go.

It leaves out per-entry lifetimes, refreshing ahead of expiry and statistics.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    """Entries live `ttl` seconds (0 or less: nothing is kept). Thread-safe."""

    def __init__(
        self, ttl: float, size: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()  # key -> (value, expiry)
        self._lock = threading.Lock()
        #: bumped by every `forget`: read it before a lookup, pass it to `put`
        self.generation = 0

    def get(self, key: K) -> V | None:
        if self.ttl <= 0:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[1] <= self.clock():
                del self._entries[key]
                return None
            return entry[0]

    def put(self, key: K, value: V, generation: int) -> None:
        """Keep `value`, unless something was forgotten since `generation` was read."""
        if self.ttl <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            self._entries[key] = (value, self.clock() + self.ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def forget(self, which: Callable[[K, V], bool] | None = None) -> None:
        """Drop the entries `which(key, value)` picks (every entry when None), and
        start a new generation."""
        with self._lock:
            self.generation += 1
            if which is None:
                self._entries.clear()
                return
            for key in [k for k, (v, _) in self._entries.items() if which(k, v)]:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
