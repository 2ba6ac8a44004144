"""Agent messages a kernel accepted survive the kernel: stored as pending before
the sender hears "Delivered", finished by whichever kernel runs next, never twice.

Two `Kernel` objects on one SQLite file play two processes (one closed before
the target ran, as a one-shot CLI process ends).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.llm.replay import ScriptedCore, call
from tests.conftest import HashEmbedder

TELL = "send_message_to_agent"


def alice(req: ChatRequest) -> ChatResponse:
    """Tells bob whatever its user said, then reports the call's result."""
    last = req.messages[-1]
    if last.role == "tool":
        return call("send_message", message="sent")
    return call(TELL, agent_name="bob", message=last.content or "", request_heartbeat=True)


def bob_policy(started: asyncio.Event | None, gate: asyncio.Event | None):
    async def bob(req: ChatRequest) -> ChatResponse:
        if started is not None:
            started.set()
        if gate is not None:
            await gate.wait()  # a turn that takes long: the process ends meanwhile
        users = [m.content or "" for m in req.messages if m.role == "user"]
        return call("send_message", message=f"bob saw {len(users)}: {users[-1][-20:]}")

    return bob


def open_kernel(
    home: Path,
    *,
    shared: bool = False,
    started: asyncio.Event | None = None,
    gate: asyncio.Event | None = None,
) -> Kernel:
    kernel = Kernel.open(home, embedders={"test/hash": HashEmbedder()}, shared=shared)
    kernel.add_core(ScriptedCore(alice, name="scripted/alice"))
    kernel.add_core(ScriptedCore(bob_policy(started, gate), name="scripted/bob", capacity=4))
    return kernel


async def setup(kernel: Kernel) -> None:
    for name in ("alice", "bob"):
        await kernel.create_agent(
            name, model=f"scripted/{name}", embedder="test/hash", settings={"agent_tools": True}
        )
    kernel.grant("alice", "agent", "bob")


def pending(kernel: Kernel) -> list[tuple]:
    with kernel.db.connect() as conn:
        return list(conn.execute(text("SELECT agent_id, message_id FROM pending_messages")))


def bob_replies(kernel: Kernel) -> list[str]:
    return [
        c.arguments
        for m in kernel.messages("bob")
        for c in m.tool_calls
        if c.name == "send_message"
    ]


def from_alice(kernel: Kernel) -> list[str]:
    return [
        m.content or ""
        for m in kernel.messages("bob")
        if (m.content or "").startswith("[message from agent alice")
    ]


async def test_a_message_accepted_by_a_closed_kernel_is_delivered_by_the_next(
    home: Path,
) -> None:
    a = open_kernel(home)
    await setup(a)
    bob_proc, _ = a.process("bob")
    await bob_proc.lock.acquire()  # bob is busy: its turn on the message waits
    turn = await a.send("alice", "ping")
    assert turn.function_calls[0].result.startswith("Delivered to bob")
    await asyncio.sleep(0.05)
    assert a.messages("bob") == []
    # The one-shot process ends before bob's turn ran.
    await a.close()
    assert len(pending(Kernel.open(home))) == 1

    b = open_kernel(home)
    try:
        async with b:  # a kernel starting finishes what is pending
            await asyncio.wait_for(b.settle_agent_messages(), 10)
        assert len(from_alice(b)) == 1
        (reply,) = bob_replies(b)
        assert "bob saw 1:" in reply and "alice" in reply
        assert pending(b) == []
    finally:
        await b.close()

    # A third kernel finds nothing to do: never twice.
    c = open_kernel(home)
    try:
        async with c:
            await asyncio.wait_for(c.settle_agent_messages(), 10)
        assert len(from_alice(c)) == 1
    finally:
        await c.close()


async def test_a_turn_cut_short_by_the_process_ending_runs_again_without_a_second_copy(
    home: Path,
) -> None:
    started, gate = asyncio.Event(), asyncio.Event()
    a = open_kernel(home, started=started, gate=gate)
    await setup(a)
    await a.send("alice", "ping")
    await asyncio.wait_for(started.wait(), 10)  # bob's turn runs: the message is in recall
    await a.close()  # ... and the process ends mid-turn
    rows = pending(open_kernel(home))
    assert len(rows) == 1 and rows[0][1] is not None  # stored, not answered

    b = open_kernel(home)
    try:
        async with b:
            await asyncio.wait_for(b.settle_agent_messages(), 10)
        assert len(from_alice(b)) == 1  # the message once in bob's recall
        (reply,) = bob_replies(b)  # the turn ran to its end, once
        assert "bob saw 1" in reply
        assert pending(b) == []
    finally:
        await b.close()


async def test_two_kernels_racing_for_pending_messages_deliver_each_once(home: Path) -> None:
    a = open_kernel(home, shared=True)
    await setup(a)
    await a.process("bob")[0].lock.acquire()  # nothing is delivered in a
    for i in range(3):
        await a.send("alice", f"ping {i}")
    await a.close()
    assert len(pending(Kernel.open(home))) == 3

    b, c = open_kernel(home, shared=True), open_kernel(home, shared=True)
    try:
        b.waker.start()
        c.waker.start()
        await asyncio.wait_for(
            asyncio.gather(b.settle_agent_messages(), c.settle_agent_messages()), 20
        )
        got = from_alice(b)
        assert len(got) == 3 and len(set(got)) == 3
        assert pending(b) == []
    finally:
        await b.close()
        await c.close()


async def test_a_message_to_a_deleted_agent_is_dropped_not_retried_forever(home: Path) -> None:
    a = open_kernel(home)
    await setup(a)
    await a.process("bob")[0].lock.acquire()
    await a.send("alice", "ping")
    await a.close()
    b = open_kernel(home)
    try:
        await b.delete_agent("bob")
        async with b:
            await asyncio.wait_for(b.settle_agent_messages(), 10)
        assert pending(b) == []
    finally:
        await b.close()
