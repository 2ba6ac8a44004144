"""The process table keeps at most `max_images` agent images in memory: the coldest
idle ones are dropped first, never one that is running or has events waiting."""

from __future__ import annotations

from typing import Any, cast

from llmos.kernel.process import Process, ProcessTable


def _loaded(table: ProcessTable, name: str) -> Process:
    proc = table.get(name, name)
    proc.image = cast(Any, object())  # any image: the table only keeps or drops it
    table.touch(proc)
    return proc


async def test_the_coldest_idle_images_are_dropped_first() -> None:
    table = ProcessTable(max_images=2)
    a, b = _loaded(table, "a"), _loaded(table, "b")
    table.touch(a)  # b is now the coldest
    c = _loaded(table, "c")
    assert (a.image, c.image) != (None, None) and b.image is None
    assert table.loaded_images == 2


async def test_a_running_or_waited_for_image_stays() -> None:
    table = ProcessTable(max_images=2)
    a, b = _loaded(table, "a"), _loaded(table, "b")
    await a.lock.acquire()  # a runs a step
    b.waiting = 1  # b has an event queued
    c = _loaded(table, "c")
    assert None not in (a.image, b.image, c.image)  # over the limit, but none may go
    a.lock.release()
    b.waiting = 0
    d = _loaded(table, "d")  # now the coldest idle ones go, down to the limit
    assert a.image is None and b.image is None and c.image is not None and d.image is not None
    assert table.loaded_images == 2


async def test_many_agents_stay_at_the_limit() -> None:
    table = ProcessTable(max_images=256)
    procs = [_loaded(table, f"agent{i}") for i in range(1000)]
    assert table.loaded_images == 256
    assert all(p.image is not None for p in procs[-256:])
    assert all(p.image is None for p in procs[:-256])
