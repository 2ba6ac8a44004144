"""The per-core run queue: who gets the core next, and for how long.

Each core has a capacity (requests it serves at once: 1 for the embedded
model, many for a remote server), a queue policy (`policies.py`: fifo, rr,
priority) and one verb, `run(syscall)`, called by the kernel for every `llm`
syscall. `run` waits for a slot in the policy's order, runs the request, and
frees the slot.

Round robin on a core that can pause a generation (`PreemptibleCore`, the
embedded llama.cpp model) runs it in quanta of generated tokens: when a quantum
ends and someone else is waiting, the generation is suspended (a context
switch: its KV cache and sampler state are saved), goes to the back of the
queue, and is resumed later exactly where it stopped. Remote cores cannot be
paused, so there round robin is admission order.

Transient failures (429 with Retry-After, 5xx, timeouts) are retried with
backoff; the slot is released while waiting, so one failing backend holds up
nobody, and the agents on other cores never notice.

Left out: moving a suspended generation to another core.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from llmos.kernel.policies import Waiter, make_policy
from llmos.llm.core import CoreUnavailable, PreemptibleCore, RateLimited

if TYPE_CHECKING:
    from llmos.agent.syscalls import LLMSyscall
    from llmos.llm.core import ChatResponse, Core, Generation


class RunQueue:
    """Admission to one core under a policy, at most `capacity` requests in flight."""

    def __init__(
        self,
        core: Core,
        capacity: int | None = None,
        *,
        policy: str = "fifo",
        quantum: int = 32,
        aging: float = 1.0,
        retries: int = 3,
        max_backoff: float = 30.0,
    ) -> None:
        self.core = core
        self.capacity = max(1, capacity or core.capacity)
        self.policy_name = policy
        self.policy = make_policy(policy, aging)
        self.quantum = max(1, quantum)
        self.retries = retries
        self.max_backoff = max_backoff
        self.running = 0
        # totals for `kernel stats`
        self.served = 0
        self.failed = 0
        self.retried = 0
        self.busy_seconds = 0.0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.context_switches = 0
        self.switch_seconds = 0.0

    @property
    def queued(self) -> int:
        return len(self.policy)

    @property
    def load(self) -> float:
        return (self.running + self.queued) / self.capacity

    # --- slots --------------------------------------------------------------------

    async def _acquire(self, waiter: Waiter) -> None:
        if self.running < self.capacity and not len(self.policy):
            self.running += 1
            return
        waiter.future = asyncio.get_running_loop().create_future()
        self.policy.push(waiter)
        try:
            await waiter.future  # _release() handed us its slot: `running` counts it
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self._release()  # handed a slot we will not use
            else:
                self.policy.remove(waiter)
            raise

    def _release(self) -> None:
        while (w := self.policy.pop()) is not None:
            if w.future is not None and not w.future.done():
                w.future.set_result(None)
                return
        self.running -= 1

    # --- the verb -----------------------------------------------------------------

    async def run(self, syscall: LLMSyscall) -> ChatResponse:
        attempt = 0
        waiter = Waiter(priority=syscall.priority, payload=syscall)
        while True:
            await self._acquire(waiter)
            if not syscall.started_at:
                syscall.started_at = time.perf_counter()
            t0 = time.perf_counter()
            sliced = self.policy_name == "rr" and isinstance(self.core, PreemptibleCore)
            try:
                if sliced:  # _run_sliced frees the slot itself, whatever happens
                    response = await self._run_sliced(syscall)
                else:
                    response = await self.core.chat(syscall.request)
            except (RateLimited, CoreUnavailable) as err:
                delay = self._backoff(err, attempt)
                if delay is None:
                    self.failed += 1
                    raise
            else:
                self._account(response)
                return response
            finally:
                self.busy_seconds += time.perf_counter() - t0
                if not sliced:
                    self._release()
            attempt += 1
            self.retried += 1
            waiter = Waiter(priority=syscall.priority, payload=syscall)
            await asyncio.sleep(delay)

    async def _run_sliced(self, syscall: LLMSyscall) -> ChatResponse:
        """Round robin on a preemptible core; the slot is held on entry, freed on exit."""
        assert isinstance(self.core, PreemptibleCore)
        gen: Generation = self.core.start(syscall.request)
        holding = True
        try:
            while not await gen.run(self.quantum):
                if not len(self.policy):
                    continue  # nobody waiting: no reason to switch
                t0 = time.perf_counter()
                await gen.suspend()
                self.switch_seconds += time.perf_counter() - t0
                self.context_switches += 1
                holding = False
                self._release()
                waiter = Waiter(priority=syscall.priority, payload=syscall)
                await self._acquire(waiter)
                holding = True
                t0 = time.perf_counter()
                await gen.resume()
                self.switch_seconds += time.perf_counter() - t0
            return gen.result()
        finally:
            if holding:
                self._release()
            await gen.close()

    def _account(self, response: ChatResponse) -> None:
        self.served += 1
        u = response.usage
        self.prompt_tokens += u.prompt_tokens
        self.completion_tokens += u.completion_tokens
        self.cached_tokens += u.cached_prompt_tokens

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
            "policy": self.policy_name,
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
            "context_switches": self.context_switches,
            "switch_seconds": round(self.switch_seconds, 4),
            # the core's own counters, if it keeps any (the embedded model's
            # prompt-state cache: hits, snapshot restores, bytes in RAM/on disk)
            **({"kv": self.core.stats()} if callable(getattr(self.core, "stats", None)) else {}),
        }
