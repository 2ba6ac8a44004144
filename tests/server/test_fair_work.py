"""One user's expensive work must not stall another user's requests.

Issue 11 measured 30 tool registrations by one user stalling another user's
archival search for 14.8 s: every registration runs code in the sandbox, and
the sandbox's runs filled the event loop's shared worker threads, where the
search's embedding then waited. Here alice floods registrations on a real
server while bob searches; bob's searches stay fast, and alice's flood is
bounded (some of it is refused with a 429, the rest queues and succeeds).
"""

from __future__ import annotations

import threading
import time

import pytest

from llmos.tools import sandbox
from tests.server.conftest import LiveServer

TOOL = 'def slow_tool(n: int) -> int:\n    """Return n."""\n    return n\n'
FLOOD = 30


@pytest.mark.skipif(sandbox.isolation_missing() is not None, reason="no OS sandbox here")
def test_a_flood_of_registrations_does_not_stall_another_users_search(
    live: LiveServer,
) -> None:
    with live.client("bob") as bob:
        assert bob.post("/v1/agents", json={"name": "b", "model": "scripted/echo"}).is_success
        r = bob.post("/v1/agents/b/archival", json={"texts": ["the cat sat on the mat"]})
        assert r.status_code == 201, r.text

    statuses: list[int] = []

    def register(i: int) -> None:
        src = TOOL.replace("slow_tool", f"tool_{i}")
        with live.client("alice", timeout=120) as c:
            statuses.append(c.post("/v1/tools", json={"source": src}).status_code)

    flood = [threading.Thread(target=register, args=(i,)) for i in range(FLOOD)]
    for t in flood:
        t.start()
    time.sleep(0.3)  # the flood is in
    latencies = []
    with live.client("bob") as bob:
        while any(t.is_alive() for t in flood) and len(latencies) < 40:
            started = time.monotonic()
            r = bob.get("/v1/agents/b/archival/search", params={"query": "cat"})
            latencies.append(time.monotonic() - started)
            assert r.status_code == 200, r.text
            time.sleep(0.1)
    for t in flood:
        t.join()
    assert latencies, "the flood ended before bob searched"
    assert max(latencies) < 2.0, sorted(latencies)[-5:]
    assert set(statuses) <= {201, 429}, statuses
    assert statuses.count(201) >= 1


async def test_the_work_limiter_runs_some_queues_some_and_refuses_the_rest() -> None:
    import asyncio

    from llmos.access.policy import WorkLimiter, WorkQueueFull

    limiter = WorkLimiter(running=1, waiting=1)
    gate = asyncio.Event()
    order: list[str] = []

    async def job(name: str) -> None:
        async with limiter.slot("alice"):
            order.append(name)
            await gate.wait()

    first = asyncio.create_task(job("first"))
    second = asyncio.create_task(job("second"))
    await asyncio.sleep(0.01)
    assert order == ["first"]  # the second waits
    with pytest.raises(WorkQueueFull):
        await job("third")
    async with limiter.slot("bob"):  # another user is not affected
        order.append("bob")
    gate.set()
    await asyncio.gather(first, second)
    assert order == ["first", "bob", "second"]
    assert not limiter._in  # nothing held
