"""Spreading a dead kernel's agents over the live ones: each live kernel's pickup pass
claims only the lapsed agents that fall to it (an even split of the dead kernel's
last-listed agents, by rank; others by hashing), so the first kernel to look does not
take them all; a lapsed agent nobody claimed for a while is anybody's, and a kernel
alone takes everything at once.

Three `Kernel` objects on one database play three nodes; "killing" one stops its lease
renewals and releases, which is what SIGKILL leaves in the database.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import text

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.kernel.nodes import assign
from llmos.llm.replay import ScriptedCore, call
from tests.conftest import HashEmbedder, both_engines

engine = both_engines()
AGENTS = 8


async def reply(req: ChatRequest) -> ChatResponse:
    return call("send_message", message="ok")


def open_kernel(home: Path) -> Kernel:
    kernel = Kernel.open(home, embedders={"test/hash": HashEmbedder()}, shared=True)
    kernel.add_core(ScriptedCore(reply, name="scripted/ok"))
    kernel.pickup.interval = 60.0  # passes only when the test runs them
    kernel.pickup.nodes.stale_after = 30.0
    return kernel


async def dead_kernel_with_agents(home: Path, lapsed_for: float = 0.01) -> Kernel:
    """A kernel that ran a turn on each of AGENTS agents, beat (listing them), then
    stopped holding their leases, lapsed `lapsed_for` seconds ago."""
    a = open_kernel(home)
    for i in range(AGENTS):
        await a.create_agent(f"ag{i}", model="scripted/ok", embedder="test/hash")
        await a.send(f"ag{i}", "hi")
    assert a.leases is not None
    a.pickup.beat()  # its row lists the agents it holds
    for handle in a.leases._releases.values():
        handle.cancel()
    if a.leases._renewer is not None:
        a.leases._renewer.cancel()
    with a.db.begin() as conn:
        conn.execute(
            text("UPDATE agent_leases SET expires = :t WHERE holder = :me"),
            {"t": time.time() - lapsed_for, "me": a.pickup.me},
        )
        conn.execute(  # stopped beating long ago
            text("UPDATE nodes SET last_seen = :t WHERE id = :me"),
            {"t": time.time() - 100, "me": a.pickup.me},
        )
    return a


async def settle(*kernels: Kernel) -> None:
    deadline = time.monotonic() + 10
    while any(k.pickup.recovering for k in kernels) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def holders(kernel: Kernel) -> Counter[str]:
    with kernel.db.connect() as conn:
        return Counter(r.holder for r in conn.execute(text("SELECT holder FROM agent_leases")))


async def test_two_live_kernels_split_a_dead_kernels_agents(home: Path) -> None:
    a = await dead_kernel_with_agents(home)
    b, c = open_kernel(home), open_kernel(home)
    try:
        b.pickup.beat()
        c.pickup.beat()
        b.pickup.sweep(min_age=0.0)  # b looks first, and twice: it still takes its half
        await settle(b)
        b.pickup.sweep(min_age=0.0)
        await settle(b)
        assert holders(b) == Counter({b.pickup.me: AGENTS // 2, a.pickup.me: AGENTS // 2})
        c.pickup.sweep(min_age=0.0)
        await settle(c)
        assert holders(b) == Counter({b.pickup.me: AGENTS // 2, c.pickup.me: AGENTS // 2})
        assert b.waker.resumed == c.waker.resumed == 0  # their turns had ended
    finally:
        for k in (a, b, c):
            await k.close()


async def test_a_kernel_alone_takes_every_lapsed_agent_in_one_pass(home: Path) -> None:
    a = await dead_kernel_with_agents(home)
    b = open_kernel(home)
    try:
        b.pickup.beat()
        b.pickup.sweep(min_age=0.0)
        await settle(b)
        assert holders(b) == Counter({b.pickup.me: AGENTS})
    finally:
        await a.close()
        await b.close()


async def test_agents_left_lapsed_by_a_live_kernel_that_never_looks_are_taken(
    home: Path,
) -> None:
    # c beats but never sweeps (stuck, or its model missing): once the leases have
    # stayed lapsed past a stale node's age, b takes c's share too
    a = await dead_kernel_with_agents(home, lapsed_for=100.0)
    b, c = open_kernel(home), open_kernel(home)
    try:
        b.pickup.beat()
        c.pickup.beat()
        b.pickup.sweep(min_age=0.0)
        await settle(b)
        assert holders(b) == Counter({b.pickup.me: AGENTS})
    finally:
        for k in (a, b, c):
            await k.close()


def test_assignment_is_even_and_stable() -> None:
    listed = [f"agent-{i:03d}" for i in range(30)]
    live = ["n1", "n2", "n3"]
    by_rank = Counter(assign(a, "dead", listed, live) for a in listed)
    assert sorted(by_rank.values()) == [10, 10, 10]
    # the same answer whoever asks and whatever else has been claimed meanwhile
    assert all(
        assign(a, "dead", listed, list(reversed(live))) == assign(a, "dead", listed, live)
        for a in listed
    )
    # not listed by the dead node (it took them after its last beat): by hashing
    hashed = Counter(assign(f"x{i}", "dead", listed, live) for i in range(900))
    assert min(hashed.values()) > 200
    assert assign("x1", "n2", listed, live) != "n2"  # never the holder that let it lapse
    assert assign("x1", None, [], ["n1"]) == "n1"
