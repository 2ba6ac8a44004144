"""Several kernels on one database (kernel/leases.py): an agent runs in one at a
time, a kernel that takes an agent over sees what the other one did, and a
lease left by a dead kernel expires.

Two `Kernel` objects on one SQLite file in one test play two processes: each
has its own images, locks and group commit; only the database is shared.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.llm.replay import ScriptedCore, call
from tests.conftest import HashEmbedder, both_engines

engine = both_engines()


async def counting(req: ChatRequest) -> ChatResponse:
    """Replies with how many user messages are in its window: a stale image shows."""
    await asyncio.sleep(0.005)  # let other turns interleave if nothing stops them
    users = [m for m in req.messages if m.role == "user" and not m.content.startswith("[")]
    return call("send_message", message=f"{len(users)} so far")


def open_kernel(home: Path) -> Kernel:
    kernel = Kernel.open(home, embedders={"test/hash": HashEmbedder()}, shared=True)
    kernel.add_core(ScriptedCore(counting, name="scripted/count", capacity=8))
    return kernel


@pytest.fixture
async def pair(home: Path) -> AsyncIterator[tuple[Kernel, Kernel]]:
    a, b = open_kernel(home), open_kernel(home)
    await a.create_agent("ann", model="scripted/count", embedder="test/hash")
    yield a, b
    await a.close()
    await b.close()


async def test_a_kernel_taking_an_agent_over_sees_the_other_kernels_turns(
    pair: tuple[Kernel, Kernel],
) -> None:
    a, b = pair
    created = a.process("ann")[1]
    assert (await a.send("ann", "one")).reply == "1 so far"
    assert a.process("ann")[1] is created  # no other kernel ever held ann: no reload
    assert (await b.send("ann", "two")).reply == "2 so far"
    # a's image of ann is from before b's turn: it must reload, not reuse it
    assert (await a.send("ann", "three")).reply == "3 so far"
    assert a.process("ann")[1] is not created
    assert a.leases is not None and b.leases is not None
    kept = a.leases.kept
    assert (await a.send("ann", "four")).reply == "4 so far"
    assert a.leases.kept == kept + 1  # still a's lease: no database write, no reload
    assert a.leases.holder != b.leases.holder


async def test_an_idle_agents_lease_is_given_up_after_the_grace(
    pair: tuple[Kernel, Kernel],
) -> None:
    a, _ = pair
    assert a.leases is not None
    a.leases.grace = 0.05
    await a.send("ann", "hello")

    def expiry() -> float:
        with a.db.connect() as conn:
            return conn.execute(text("SELECT expires FROM agent_leases")).scalar_one()

    assert expiry() > time.time()  # held just after the turn
    await asyncio.sleep(0.2)
    assert expiry() == 0  # released


async def test_an_agent_runs_in_one_kernel_at_a_time(pair: tuple[Kernel, Kernel]) -> None:
    a, b = pair
    sends = [(a if i % 2 else b).send("ann", f"message {i}") for i in range(12)]
    turns = await asyncio.gather(*sends)
    assert all(t.stop_reason == "end_turn" for t in turns)
    # Every turn saw all the turns before it, whichever kernel ran them.
    assert sorted(int(t.reply.split()[0]) for t in turns) == list(range(1, 13))
    roles = [m.role for m in reversed(a.messages("ann", limit=100))]
    assert roles == ["user", "assistant", "tool"] * 12  # whole turns, never interleaved


async def test_a_lease_left_by_a_dead_kernel_expires(home: Path) -> None:
    b = open_kernel(home)
    try:
        await b.create_agent("cy", model="scripted/count", embedder="test/hash")
        agent_id = b.get_agent("cy")["id"]
        with b.db.begin() as conn:  # a kernel that died mid-turn, 0.3 s ago
            conn.execute(
                text(
                    "INSERT INTO agent_leases (agent_id, holder, expires, epoch) "
                    "VALUES (:a, 'kernel-dead', :t, 1)"
                ),
                {"a": agent_id, "t": time.time() + 0.3},
            )
        start = time.monotonic()
        turn = await b.send("cy", "anyone there?")
        assert turn.reply == "1 so far"
        assert time.monotonic() - start >= 0.25
        assert b.leases is not None and b.leases.waited == 1
    finally:
        await b.close()


async def test_one_kernel_takes_no_leases_on_sqlite_and_always_on_postgres(
    kernel: Kernel, engine: str
) -> None:
    """SQLite: one machine, one kernel unless told otherwise. PostgreSQL: other
    nodes may share the database at any time, so a kernel always takes leases."""
    kernel.add_core(ScriptedCore(counting, name="scripted/count"))
    await kernel.create_agent("solo", model="scripted/count", embedder="test/hash")
    assert (await kernel.send("solo", "hi")).reply == "1 so far"
    assert (kernel.leases is not None) == (engine == "postgresql")
    with kernel.db.connect() as conn:
        leases = conn.execute(text("SELECT count(*) FROM agent_leases")).scalar_one()
    assert leases == (1 if engine == "postgresql" else 0)


def test_an_agent_held_elsewhere_too_long_is_a_503_over_http(tmp_path: Path) -> None:
    """Under `llmos serve --workers N`, a turn for an agent that another worker
    holds past the wait is a clear 503 with Retry-After, not a hang or a 500."""
    from llmos.kernel.leases import AgentLeases
    from tests.server.conftest import LiveServer

    server = LiveServer(tmp_path)
    try:
        server.kernel.waker.leases = AgentLeases(server.kernel.group_commit, wait=0.2)
        with server.client("alice") as alice:
            r = alice.post("/v1/agents", json={"name": "held", "model": "scripted/echo"})
            assert r.status_code == 201, r.text
            with server.kernel.db.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO agent_leases (agent_id, holder, expires, epoch) "
                        "VALUES (:a, 'kernel-other', :t, 1)"
                    ),
                    {"a": r.json()["id"], "t": time.time() + 60},
                )
            r = alice.post("/v1/agents/held/messages", json={"text": "hello?"})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "agent_busy"
            assert r.headers["retry-after"] == "5"
    finally:
        server.stop()
