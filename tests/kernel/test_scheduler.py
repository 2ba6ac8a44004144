"""Scheduling: FIFO order, round robin with context switches, priority with aging,
backoff that holds up nobody, replicas, message order, cancellation.

`TickCore` is a preemptible core whose generations produce a deterministic
token sequence at a fixed pace, with suspend/resume bookkeeping, so the run
queue's decisions can be checked exactly without a model.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from llmos import ChatRequest, ChatResponse, Kernel, Message
from llmos.kernel.policies import PriorityPolicy, Waiter
from llmos.kernel.scheduler import RunQueue
from llmos.kernel.syscalls import LLMSyscall
from llmos.llm.core import PreemptibleCore, RateLimited, Usage
from llmos.llm.replay import ScriptedCore, call


class TickGeneration:
    def __init__(self, core: TickCore, request: ChatRequest) -> None:
        self.core = core
        self.want = request.max_tokens
        self.seed = request.messages[-1].content or ""
        self.out: list[str] = []
        self.suspended = False

    async def run(self, max_new_tokens: int) -> bool:
        assert not self.suspended, "ran while suspended"
        assert self.core.active in (None, self), "two generations on one core at once"
        self.core.active = self
        for _ in range(min(max_new_tokens, self.want - len(self.out))):
            await asyncio.sleep(self.core.tick)
            self.out.append(f"{self.seed}:{len(self.out)}")
        return len(self.out) >= self.want

    async def suspend(self) -> None:
        await asyncio.sleep(self.core.switch_cost)
        self.suspended = True
        self.core.active = None
        self.core.switches += 1

    async def resume(self) -> None:
        await asyncio.sleep(self.core.switch_cost)
        assert self.core.active is None
        self.suspended = False
        self.core.active = self

    def result(self) -> ChatResponse:
        self.core.finished.append(self.seed)
        return ChatResponse(" ".join(self.out), usage=Usage(10, len(self.out)))

    async def close(self) -> None:
        if self.core.active is self:
            self.core.active = None


class TickCore:
    name = "tick/core"
    context_window = 8192
    native_tools = False
    capacity = 1

    def __init__(self, tick: float = 0.001, switch_cost: float = 0.0) -> None:
        self.tick = tick
        self.switch_cost = switch_cost  # seconds each suspend and each resume take
        self.active: TickGeneration | None = None
        self.switches = 0
        self.finished: list[str] = []

    def start(self, request: ChatRequest) -> TickGeneration:
        return TickGeneration(self, request)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        gen = self.start(request)
        try:
            await gen.run(request.max_tokens)
            return gen.result()
        finally:
            await gen.close()

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    async def aclose(self) -> None:
        return None


def job(core: TickCore, name: str, tokens: int, priority: float = 0.0) -> LLMSyscall:
    req = ChatRequest([Message("user", name)], max_tokens=tokens)
    return LLMSyscall(agent_id=name, core=core, request=req, priority=priority)


def test_tick_core_is_preemptible() -> None:
    assert isinstance(TickCore(), PreemptibleCore)


async def test_fifo_runs_in_arrival_order() -> None:
    core = TickCore()
    q = RunQueue(core, policy="fifo")
    jobs = [job(core, f"j{i}", 5) for i in range(5)]
    await asyncio.gather(*(q.run(j) for j in jobs))
    assert core.finished == ["j0", "j1", "j2", "j3", "j4"]
    assert core.switches == 0


async def test_round_robin_lets_short_jobs_finish_first_and_output_is_exact() -> None:
    core = TickCore(switch_cost=0.002)
    q = RunQueue(core, policy="rr", quantum=4)
    long_a, long_b = job(core, "A", 40), job(core, "B", 40)
    shorts = [job(core, f"s{i}", 4) for i in range(3)]
    started = time.perf_counter()
    results = await asyncio.gather(q.run(long_a), q.run(long_b), *(q.run(s) for s in shorts))
    elapsed = time.perf_counter() - started
    # Every short job finished before either long one.
    assert core.finished.index("A") > 2 and core.finished.index("B") > 2
    assert set(core.finished[:3]) == {"s0", "s1", "s2"}
    # Preempted generations produce exactly the uninterrupted sequence.
    assert results[0].content == " ".join(f"A:{i}" for i in range(40))
    assert results[1].content == " ".join(f"B:{i}" for i in range(40))
    assert core.switches >= 2 and q.context_switches == core.switches
    stats = q.stats()
    assert stats["context_switches"] == core.switches
    # Every switch is a suspend and a resume of 2 ms each, and switching is
    # part of the run, not more than all of it.
    assert 2 * 0.002 * core.switches * 0.9 <= stats["switch_seconds"] <= elapsed


async def test_round_robin_does_not_switch_when_nobody_waits() -> None:
    core = TickCore()
    q = RunQueue(core, policy="rr", quantum=2)
    await q.run(job(core, "solo", 20))
    assert core.switches == 0


def test_priority_policy_orders_by_priority_then_age() -> None:
    p = PriorityPolicy(aging=1.0)
    now = time.monotonic()
    old_low = Waiter(priority=0, enqueued=now - 10)  # waited 10 s: effective 10
    high = Waiter(priority=5, enqueued=now)
    mid = Waiter(priority=3, enqueued=now)
    for w in (high, old_low, mid):
        p.push(w)
    assert [p.pop(), p.pop(), p.pop()] == [old_low, high, mid]
    assert p.pop() is None


async def test_priority_with_aging_does_not_starve() -> None:
    core = TickCore(tick=0.002)
    q = RunQueue(core, policy="priority", aging=50.0)
    done: list[str] = []

    async def run(j: LLMSyscall) -> None:
        await q.run(j)
        done.append(j.agent_id)

    first = asyncio.create_task(run(job(core, "first", 3, priority=100)))
    await asyncio.sleep(0)
    low = asyncio.create_task(run(job(core, "low", 3, priority=0)))
    # A stream of high-priority work arrives while "low" waits.
    highs = []
    for i in range(30):
        highs.append(asyncio.create_task(run(job(core, f"h{i}", 3, priority=1))))
        await asyncio.sleep(0.004)
    await asyncio.gather(first, low, *highs)
    # Without aging "low" would run last; with it, it overtakes later arrivals.
    assert done.index("low") < len(done) - 1
    assert done.index("low") < done.index("h29")


class FlakyCore(ScriptedCore):
    """Answers 429 (Retry-After) the first time, then normally."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(lambda req: call("send_message", message="late but fine"))
        self.retry_after = retry_after
        self.calls = 0

    async def chat(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        if self.calls == 1:
            raise RateLimited("slow down", retry_after=self.retry_after)
        return await super().chat(request)


async def test_backoff_on_one_core_does_not_stall_another(kernel: Kernel) -> None:
    kernel.add_core(FlakyCore(retry_after=0.6), model="scripted/flaky")
    kernel.add_core(ScriptedCore(lambda r: call("send_message", message="fast")), model="s/fast")
    await kernel.create_agent("slow", model="scripted/flaky", embedder="test/hash")
    for i in range(3):
        await kernel.create_agent(f"fast{i}", model="s/fast", embedder="test/hash")
    t0 = time.monotonic()
    finished: dict[str, float] = {}

    async def talk(name: str) -> None:
        turn = await kernel.send(name, "hi")
        assert turn.stop_reason == "end_turn"
        finished[name] = time.monotonic() - t0

    await asyncio.gather(talk("slow"), *(talk(f"fast{i}") for i in range(3)))
    assert finished["slow"] >= 0.55
    # The fast core's agents did not wait for the throttled core's backoff.
    assert all(finished[f"fast{i}"] < finished["slow"] - 0.3 for i in range(3))


async def test_replicas_share_the_load(kernel: Kernel) -> None:
    in_flight = 0
    most = 0

    async def slow(req: ChatRequest) -> ChatResponse:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return call("send_message", message="ok")

    a = ScriptedCore(slow, name="scripted/rep")
    b = ScriptedCore(slow, name="scripted/rep")
    kernel.add_core(a, model="scripted/rep", replicas=[b])
    for i in range(6):
        await kernel.create_agent(f"r{i}", model="scripted/rep", embedder="test/hash")
    await asyncio.gather(*(kernel.send(f"r{i}", "hi") for i in range(6)))
    assert len(a.requests) == 3 and len(b.requests) == 3
    assert most == 2  # each replica (capacity 1) served one request at a time, both at once


async def test_concurrent_sends_keep_per_agent_order(kernel: Kernel) -> None:
    async def policy(req: ChatRequest) -> ChatResponse:
        await asyncio.sleep(0.001)
        return call("send_message", message=f"re: {req.messages[-1].content}")

    kernel.add_core(ScriptedCore(policy), model="scripted/order")
    await kernel.create_agent("o", model="scripted/order", embedder="test/hash")
    turns = await asyncio.gather(*(kernel.send("o", f"m{i}") for i in range(20)))
    assert [t.reply for t in turns] == [f"re: m{i}" for i in range(20)]
    users = [m.content for m in reversed(kernel.messages("o", limit=200)) if m.role == "user"]
    assert users == [f"m{i}" for i in range(20)]


async def test_cancelled_turn_leaves_the_agent_consistent(kernel: Kernel) -> None:
    started = asyncio.Event()

    async def policy(req: ChatRequest) -> ChatResponse:
        last = req.messages[-1]
        if last.content == "slow":
            started.set()
            await asyncio.sleep(30)
        return call("send_message", message="quick answer")

    kernel.add_core(ScriptedCore(policy), model="scripted/cancel")
    await kernel.create_agent("c", model="scripted/cancel", embedder="test/hash")
    task = asyncio.create_task(kernel.send("c", "slow"))
    await started.wait()
    assert kernel.kernel_stats()["processes"][0]["state"] == "waiting_llm"
    assert kernel.cancel("c")
    turn = await asyncio.wait_for(task, 2)
    assert turn.stop_reason == "cancelled"
    assert not kernel.cancel("c")  # idle now
    # The event was kept; the agent answers the next message normally.
    after = await kernel.send("c", "hello again")
    assert after.reply == "quick answer"
    roles = [m.role for m in reversed(kernel.messages("c"))]
    assert roles == ["user", "user", "assistant", "tool"]
    assert kernel.kernel_stats()["cores"][0]["running"] == 0


@pytest.mark.parametrize("policy", ["fifo", "rr", "priority"])
async def test_every_policy_serves_a_kernel(home, policy: str) -> None:
    from tests.conftest import HashEmbedder

    k = Kernel.open(home, embedders={"test/hash": HashEmbedder()}, policy=policy)
    k.add_core(ScriptedCore(lambda r: call("send_message", message="ok")), model="s/p")
    await k.create_agent("p", model="s/p", embedder="test/hash")
    assert (await k.send("p", "hi")).reply == "ok"
    assert k.kernel_stats()["cores"][0]["policy"] == policy
    await k.close()


async def test_a_cancel_landing_on_the_messages_commit_keeps_the_message(kernel: Kernel) -> None:
    """The first suspension of a turn is its message's group commit: a cancel
    there ends the turn as cancelled, and the message is stored all the same."""
    kernel.add_core(
        ScriptedCore(lambda req: call("send_message", message="hi")), model="scripted/c2"
    )
    await kernel.create_agent("c2", model="scripted/c2", embedder="test/hash")
    task = asyncio.create_task(kernel.send("c2", "first"))
    await asyncio.sleep(0)  # the turn has started and waits for its commit
    assert kernel.cancel("c2")
    turn = await asyncio.wait_for(task, 2)
    assert turn.stop_reason == "cancelled"
    after = await kernel.send("c2", "second")
    assert after.reply == "hi"
    stored = [(m.role, m.content) for m in reversed(kernel.messages("c2"))]
    assert [c for r, c in stored if r == "user"] == ["first", "second"]
