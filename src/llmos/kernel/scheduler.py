"""The per-core run queue: who gets the core next.

Each core has a capacity (concurrent requests it serves well: 1 for the
embedded model, more for a remote server) and a FIFO of waiting LLM syscalls.
`run()` is called by the kernel for every `LLMSyscall`; it waits for a slot in
arrival order, runs the request, and frees the slot. Transient failures
(429 with Retry-After, 5xx, timeouts) are retried with backoff — the slot is
released while waiting, so one failing backend never holds up the queue of
another core.

Left out: round robin with preemption and priorities (the kernel issue adds
them as further policies behind the same `run()`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING

from llmos.llm.core import CoreUnavailable, RateLimited

if TYPE_CHECKING:
    from llmos.kernel.syscalls import LLMSyscall
    from llmos.llm.core import ChatResponse, Core


class RunQueue:
    """FIFO admission to one core, at most `capacity` requests in flight."""

    def __init__(
        self,
        core: Core,
        capacity: int | None = None,
        *,
        retries: int = 3,
        max_backoff: float = 30.0,
    ) -> None:
        self.core = core
        self.capacity = max(1, capacity or core.capacity)
        self.retries = retries
        self.max_backoff = max_backoff
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        # totals for `kernel stats`
        self.served = 0
        self.failed = 0
        self.retried = 0
        self.busy_seconds = 0.0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def _acquire(self) -> None:
        if self.running < self.capacity and not self._waiters:
            self.running += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # _release() hands us its slot: `running` is already counted
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # we were handed a slot but will not use it
            else:
                self._waiters.remove(fut)
            raise

    def _release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.running -= 1

    async def run(self, syscall: LLMSyscall) -> ChatResponse:
        attempt = 0
        while True:
            await self._acquire()
            if not syscall.started_at:
                syscall.started_at = time.perf_counter()
            t0 = time.perf_counter()
            try:
                response = await self.core.chat(syscall.request)
            except (RateLimited, CoreUnavailable) as err:
                delay = self._backoff(err, attempt)
                if delay is None:
                    self.failed += 1
                    raise
            else:
                self.served += 1
                u = response.usage
                self.prompt_tokens += u.prompt_tokens
                self.completion_tokens += u.completion_tokens
                self.cached_tokens += u.cached_prompt_tokens
                return response
            finally:
                self.busy_seconds += time.perf_counter() - t0
                self._release()
            attempt += 1
            self.retried += 1
            await asyncio.sleep(delay)

    def _backoff(self, err: Exception, attempt: int) -> float | None:
        """Seconds to wait before trying again, or None to give up."""
        if attempt >= self.retries:
            return None
        hinted = getattr(err, "retry_after", None)
        if hinted is not None:
            if hinted > self.max_backoff:
                return None  # the backend asks for longer than a caller should wait
            return max(0.0, hinted)
        return min(self.max_backoff, 0.5 * 2**attempt)

    def stats(self) -> dict[str, object]:
        return {
            "core": self.core.name,
            "capacity": self.capacity,
            "running": self.running,
            "queued": self.queued,
            "served": self.served,
            "failed": self.failed,
            "retried": self.retried,
            "busy_seconds": round(self.busy_seconds, 3),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_prompt_tokens": self.cached_tokens,
        }
