"""The nodes registry: a serving kernel beats its row (with the agents it holds while
their turns run), is listed live, and removes its row when it closes; a kernel that
just stops beating goes stale."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.kernel.pickup import pickup_interval
from llmos.llm.replay import ScriptedCore, call
from tests.conftest import HashEmbedder, both_engines

engine = both_engines()


async def test_a_serving_kernel_beats_lists_its_agents_and_leaves_on_close(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOS_PICKUP_INTERVAL", "0.1")
    gate, entered = asyncio.Event(), asyncio.Event()

    async def slow(req: ChatRequest) -> ChatResponse:
        entered.set()
        await gate.wait()
        return call("send_message", message="done")

    watcher = Kernel.open(home)
    watcher.pickup.nodes.stale_after = 30.0  # a loaded machine may beat late
    k = Kernel.open(home, embedders={"test/hash": HashEmbedder()})
    k.add_core(ScriptedCore(slow, name="scripted/slow"))
    try:
        async with k:
            await k.create_agent("cy", model="scripted/slow", embedder="test/hash")
            turn = asyncio.create_task(k.send("cy", "hi"))
            await asyncio.wait_for(entered.wait(), 10)
            await asyncio.sleep(0.3)  # a few beats
            (row,) = [n for n in watcher.nodes() if n["id"] == k.pickup.me]
            assert row["status"] == "live" and not row["this"]
            assert row["pid"] == os.getpid() and row["host"] and row["version"]
            assert row["agents"] == [k.get_agent("cy")["id"]]  # its turn is running
            gate.set()
            await turn
            await asyncio.sleep(0.3)
            (row,) = [n for n in watcher.nodes() if n["id"] == k.pickup.me]
            assert row["images"] >= 1
        assert [n for n in watcher.nodes() if n["id"] == k.pickup.me] == []  # closed: gone
    finally:
        await watcher.close()


async def test_a_kernel_that_stops_beating_is_listed_stale(home: Path) -> None:
    k = Kernel.open(home)
    k.pickup.beat()
    k.pickup.nodes.stale_after = 0.2
    time.sleep(0.3)
    (row,) = [n for n in k.nodes() if n["this"]]
    assert row["status"] == "stale" and row["seconds_since_seen"] >= 0.3
    await k.close()


def test_the_pickup_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMOS_PICKUP_INTERVAL", raising=False)
    assert pickup_interval() == 2.0
    monkeypatch.setenv("LLMOS_PICKUP_INTERVAL", "0.5")
    assert pickup_interval() == 0.5
    for bad in ("often", "0", "99999"):
        monkeypatch.setenv("LLMOS_PICKUP_INTERVAL", bad)
        with pytest.raises(ValueError, match="LLMOS_PICKUP_INTERVAL"):
            pickup_interval()
