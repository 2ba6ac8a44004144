"""The process table keeps at most `max_images` agent images, and at most `max_bytes` of
them (estimated from their windows' tokens), in memory: the coldest idle ones are
dropped first, never one that is running or has events waiting."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from llmos.kernel.process import (
    BASE_BYTES,
    BYTES_PER_TOKEN,
    DEFAULT_IMAGE_MIB,
    Process,
    ProcessTable,
    image_bytes,
)


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


def _image(tokens: int) -> Any:
    """A stand-in image whose window holds `tokens` tokens."""
    return SimpleNamespace(window=[SimpleNamespace(tokens=tokens, content="")])


def _sized(table: ProcessTable, name: str, tokens: int) -> Process:
    proc = table.get(name, name)
    proc.image = _image(tokens)
    table.touch(proc)
    return proc


async def test_images_are_kept_within_a_memory_budget() -> None:
    big = 10_000  # tokens: an image of about BASE + 10,000 x BYTES_PER_TOKEN bytes
    size = image_bytes(_image(big))
    assert size == BASE_BYTES + big * BYTES_PER_TOKEN
    table = ProcessTable(max_bytes=3 * size)
    a, b, c = (_sized(table, n, big) for n in "abc")
    assert table.loaded_images == 3 and table.image_bytes == 3 * size
    table.touch(a)  # b is now the coldest
    d = _sized(table, "d", big)
    assert b.image is None and None not in (a.image, c.image, d.image)
    assert table.image_bytes == 3 * size
    # a window that grows is counted again when its image is next used
    a.image.window.append(SimpleNamespace(tokens=big // 2, content=""))
    table.touch(a)
    assert table.image_bytes <= 3 * size and a.image is not None
    assert c.image is None and d.image is not None  # the coldest made room
    table.forget("a")
    assert table.image_bytes == image_bytes(d.image)


async def test_by_default_a_thousand_small_agents_all_stay_in_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 1,000 agents with short windows (~2,000 tokens, ~30 KiB each) fit the default
    # budget: a node with that many active agents does not reload them each turn
    monkeypatch.delenv("LLMOS_IMAGE_MEMORY", raising=False)
    table = ProcessTable()
    procs = [_sized(table, f"agent{i}", 2000) for i in range(1000)]
    assert table.loaded_images == 1000 and all(p.image is not None for p in procs)
    assert table.max_bytes == DEFAULT_IMAGE_MIB * 2**20


def test_the_image_memory_budget_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMOS_IMAGE_MEMORY", "64")
    assert ProcessTable().max_bytes == 64 * 2**20
    for bad in ("lots", "0", "-5", "inf", "nan"):
        monkeypatch.setenv("LLMOS_IMAGE_MEMORY", bad)
        with pytest.raises(ValueError, match="LLMOS_IMAGE_MEMORY"):
            ProcessTable()
