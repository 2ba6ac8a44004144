"""A coroutine that counts event-loop ticks: evidence that the loop ran other work
while something else waited (a database call in a thread, a slow batch)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Ticks:
    count = 0


@asynccontextmanager
async def ticking(every: float = 0.01) -> AsyncIterator[Ticks]:
    """Counts the loop's turns (one per `every` seconds while it is free) inside the block."""
    ticks = Ticks()

    async def other_agent() -> None:
        while True:
            await asyncio.sleep(every)
            ticks.count += 1

    ticker = asyncio.create_task(other_agent())
    await asyncio.sleep(0)
    try:
        yield ticks
    finally:
        ticker.cancel()
