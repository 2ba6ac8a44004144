"""A kernel that stops while holding an agent (killed mid-turn) leaves its lease to
lapse; the kernel that takes the agent over finishes the turn left open, once, before
anything new: on the next message, or by itself (`Pickup`) with nothing new at all.
Leases are renewed while held, so a turn longer than a lease's lifetime keeps its agent.

Two `Kernel` objects on one database play two processes; "killing" one stops its lease
renewals and releases and cancels its turn, which is what SIGKILL leaves in the database
(the real thing, with real server processes, is tests/storage/test_node_failover.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.kernel.leases import lease_ttl
from llmos.kernel.wake import turn_left_open
from llmos.llm.core import CoreError, ToolCall
from llmos.llm.replay import ScriptedCore, call
from llmos.memory.recall import StoredMessage
from tests.conftest import HashEmbedder, both_engines

engine = both_engines()


def echo(gate: asyncio.Event | None = None, entered: asyncio.Event | None = None):
    async def respond(req: ChatRequest) -> ChatResponse:
        if entered is not None:
            entered.set()
        if gate is not None:
            await gate.wait()
        said = [m.content for m in req.messages if m.role == "user"][-1]
        return call("send_message", message=f"echo {said}")

    return respond


def open_kernel(home: Path, core: ScriptedCore, ttl: float = 0.5) -> Kernel:
    kernel = Kernel.open(home, embedders={"test/hash": HashEmbedder()}, shared=True)
    assert kernel.leases is not None
    kernel.leases.ttl = ttl
    kernel.add_core(core)
    return kernel


async def die_mid_turn(home: Path) -> Kernel:
    """A kernel whose turn on `cy` ("hold me") stored its message, then stopped."""
    entered = asyncio.Event()
    a = open_kernel(home, ScriptedCore(echo(asyncio.Event(), entered), name="scripted/echo"))
    await a.create_agent("cy", model="scripted/echo", embedder="test/hash")
    turn = asyncio.create_task(a.send("cy", "hold me"))
    await asyncio.wait_for(entered.wait(), 10)
    assert a.leases is not None
    if a.leases._renewer is not None:
        a.leases._renewer.cancel()
    a.leases.release = lambda agent_id: None  # type: ignore[method-assign]
    turn.cancel()
    with pytest.raises(asyncio.CancelledError):
        await turn
    return a


def replies(kernel: Kernel, name: str) -> list[str]:
    return [
        json.loads(c.arguments)["message"]
        for m in reversed(kernel.messages(name, limit=100))
        for c in m.tool_calls
        if c.name == "send_message"
    ]


async def test_the_next_message_finishes_the_turn_left_open_first(home: Path) -> None:
    a = await die_mid_turn(home)
    b = open_kernel(home, ScriptedCore(echo(), name="scripted/echo"))
    try:
        turn = await b.send("cy", "next")
        assert turn.reply == "echo next"
        assert replies(b, "cy") == ["echo hold me", "echo next"]
        assert b.waker.resumed == 1
        assert (await b.send("cy", "again")).reply == "echo again"
        assert b.waker.resumed == 1  # once: the turn is closed now
        users = [m.content for m in b.messages("cy", limit=100) if m.role == "user"]
        assert sorted(users) == ["again", "hold me", "next"]  # nothing stored twice
    finally:
        await b.close()
        await a.close()


async def test_a_running_kernel_recovers_a_lapsed_agent_with_nothing_new(home: Path) -> None:
    b = open_kernel(home, ScriptedCore(echo(), name="scripted/echo"))
    async with b:  # started before the other kernel dies: it must notice by itself
        assert b.pickup is not None
        b.pickup.interval = 0.1
        a = await die_mid_turn(home)
        deadline = time.monotonic() + 10
        while replies(b, "cy") != ["echo hold me"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert replies(b, "cy") == ["echo hold me"]
        await asyncio.sleep(0.8)  # more passes: nothing runs twice
        assert replies(b, "cy") == ["echo hold me"]
        assert b.waker.resumed == 1
        with b.db.connect() as conn:
            assert conn.execute(text("SELECT expires FROM agent_leases")).scalar_one() == 0
        await a.close()


async def test_a_turn_longer_than_a_lease_keeps_its_agent(home: Path) -> None:
    gate, entered = asyncio.Event(), asyncio.Event()
    a = open_kernel(home, ScriptedCore(echo(gate, entered), name="scripted/echo"), ttl=0.3)
    b = open_kernel(home, ScriptedCore(echo(), name="scripted/echo"), ttl=0.3)
    try:
        await a.create_agent("cy", model="scripted/echo", embedder="test/hash")
        slow = asyncio.create_task(a.send("cy", "slow"))
        await asyncio.wait_for(entered.wait(), 10)
        fast = asyncio.create_task(b.send("cy", "fast"))
        await asyncio.sleep(1.0)  # over three lifetimes: renewed, not taken over
        assert not fast.done()
        gate.set()
        assert (await slow).reply == "echo slow"
        assert (await fast).reply == "echo fast"
        assert a.leases is not None and a.leases.renewed >= 2
        assert b.waker.resumed == 0
    finally:
        await a.close()
        await b.close()


def test_lease_ttl_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMOS_LEASE_TTL", raising=False)
    assert lease_ttl() == 60.0
    monkeypatch.setenv("LLMOS_LEASE_TTL", "2.5")
    assert lease_ttl() == 2.5
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv("LLMOS_LEASE_TTL", bad)
        with pytest.raises(ValueError, match="LLMOS_LEASE_TTL"):
            lease_ttl()


def _step(*calls: tuple[str, dict], results: list[str]) -> list[StoredMessage]:
    made = [ToolCall(f"c{i}", name, json.dumps(args)) for i, (name, args) in enumerate(calls)]
    out = [StoredMessage("assistant", None, made)]
    out += [
        StoredMessage("tool", json.dumps({"status": r, "message": "."}), tool_call_id=f"c{i}")
        for i, r in enumerate(results)
    ]
    return out


def test_which_turns_were_left_open() -> None:
    user = StoredMessage("user", "hi")
    assert not turn_left_open([], set())
    assert turn_left_open([user], set())  # stored, never answered
    replied = _step(("send_message", {"message": "hello"}), results=["OK"])
    assert not turn_left_open([user, *replied], set())
    going_on = _step(("archival_memory_search", {"query": "x", "request_heartbeat": True}),
                     results=["OK"])  # fmt: skip
    assert turn_left_open([user, *going_on], set())
    failed = _step(("archival_memory_search", {"query": "x"}), results=["Failed"])
    assert turn_left_open([user, *failed], set())
    assert not turn_left_open([user, *failed], {"c0"})  # waits for its owner's decision
    said = StoredMessage("assistant", "a plain answer")
    assert not turn_left_open([user, said], set())
    assert turn_left_open([user, StoredMessage("assistant", "")], set())


def going_on(fail_after: int | None = None):
    """A core whose every step asks for another (a different search each time), and
    that fails from step `fail_after` + 1 on, if given."""
    seen: list[int] = []

    async def respond(req: ChatRequest) -> ChatResponse:
        seen.append(1)
        if fail_after is not None and len(seen) > fail_after:
            raise CoreError("the backend went away")
        return call("archival_memory_search", query=f"q{len(seen)}", request_heartbeat=True)

    return respond, seen


@pytest.mark.parametrize("ending", ["max_steps", "error"])
async def test_a_turn_ended_just_before_its_kernel_died_is_not_run_on(
    home: Path, ending: str
) -> None:
    # The turn ends (on its step limit, or on a failed step after one that asked to
    # go on: its window looks open), and the kernel dies within the lease's grace.
    respond, seen = going_on(fail_after=1 if ending == "error" else None)
    a = open_kernel(home, ScriptedCore(respond, name="scripted/on"), ttl=60.0)
    await a.create_agent("cy", model="scripted/on", embedder="test/hash", settings={"max_steps": 2})
    turn = await a.send("cy", "go")
    assert turn.stop_reason == ending
    assert a.leases is not None
    for handle in a.leases._releases.values():  # SIGKILL: no release, no renewal
        handle.cancel()
    if a.leases._renewer is not None:
        a.leases._renewer.cancel()
    with a.db.begin() as conn:  # ... so a lease it still held lapses
        conn.execute(
            text("UPDATE agent_leases SET expires = :t WHERE holder = :me AND expires > 0"),
            {"t": time.time() - 1, "me": a.pickup.me},
        )
    steps = len(seen)
    b_core, b_seen = going_on()
    b = open_kernel(home, ScriptedCore(b_core, name="scripted/on"), ttl=60.0)
    try:
        b.pickup.sweep(min_age=0.0)
        deadline = time.monotonic() + 5
        while b.pickup.recovering and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert b_seen == [] and b.waker.resumed == 0  # the ended turn was not run on
        assert len(seen) == steps
    finally:
        await b.close()
        await a.close()
