"""Picking up work: a kernel sharing its database finishes what other kernels left.

Kernels that share a database (`kernel/leases.py`: server nodes on one
PostgreSQL, or several processes on one SQLite file) each run a `Pickup`
loop while they serve. A pass (`sweep`) looks at two tables:

- `agent_leases`: a lease that ran out without being released belongs to a
  kernel that stopped while holding the agent (SIGKILL, a lost machine). The
  pass recovers the agent (`Waker.recover`): takes the lease over and
  finishes the turn left open there, if any;
- `pending_messages`: agent messages (and approval outcomes) accepted and not
  yet delivered. The pass delivers those nobody is delivering: the agent's
  lease is free, lapsed, or this kernel's, and the message is older than a
  moment (the kernel that accepted it starts delivering it at once).

Either way exactly once holds whatever the timing: the agent's lease lets one
kernel run it at a time, and storing a pending message is a conditional write
(`kernel/messaging.py`); a kernel that arrives second finds nothing to do.

A pass runs every `interval` seconds (`LLMOS_PICKUP_INTERVAL`, default 2),
and at once when `poke`d.

Left out: spreading the recovered agents over the surviving kernels (the
first kernel to look takes them all).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

if TYPE_CHECKING:
    from llmos.kernel.leases import AgentLeases
    from llmos.kernel.messaging import AgentMessenger
    from llmos.kernel.wake import Waker
    from llmos.storage.db import Database

log = logging.getLogger(__name__)

INTERVAL_ENV = "LLMOS_PICKUP_INTERVAL"
#: how old a pending message must be before a kernel that did not accept it delivers it
MIN_AGE = 1.0

_LAPSED = text(
    "SELECT l.agent_id, a.owner FROM agent_leases l JOIN agents a ON a.id = l.agent_id "
    "WHERE l.expires > 0 AND l.expires < :now AND l.holder <> :me"
)
_PENDING = text(
    "SELECT p.id, p.agent_id, p.created_at, l.holder, l.expires FROM pending_messages p "
    "LEFT JOIN agent_leases l ON l.agent_id = p.agent_id ORDER BY p.created_at"
)


def pickup_interval() -> float:
    """Seconds between passes: $LLMOS_PICKUP_INTERVAL, else 2. Raises ValueError."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    try:
        value = float(raw) if raw else 2.0
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV} must be a number of seconds, not {raw!r}") from None
    if not 0.05 <= value <= 3600:
        raise ValueError(f"{INTERVAL_ENV} must be between 0.05 and 3600 seconds, not {raw}")
    return value


class Pickup:
    """One kernel's loop that finishes work other kernels left or handed over."""

    def __init__(
        self,
        db: Database,
        leases: AgentLeases,
        waker: Waker,
        messenger: Callable[[], AgentMessenger],
        interval: float | None = None,
    ) -> None:
        self.db = db
        self.leases = leases
        self.waker = waker
        self.messenger = messenger
        self.interval = pickup_interval() if interval is None else interval
        self.passes = 0
        self.recovering: set[str] = set()  # agent ids with a recovery task here
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        """A first pass now (messages of any age: those of an earlier process are
        due), then the loop (in the running event loop)."""
        if self._task is None:
            try:
                self.sweep(min_age=0.0)
            except Exception as err:
                log.warning("picking up work failed: %r", err)
            self._task = asyncio.create_task(self._run())

    def poke(self) -> None:
        """Run a pass now (something may be waiting for this kernel)."""
        self._poked.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), self.interval)
            self._poked.clear()
            try:
                self.sweep()
            except Exception as err:  # the database away for a moment: next pass
                log.warning("picking up work failed: %r", err)

    def sweep(self, min_age: float = MIN_AGE) -> int:
        """One pass; returns how many recoveries and deliveries it started."""
        self.passes += 1
        now = time.time()
        me = self.leases.holder
        with self.db.connect() as conn:
            lapsed = conn.execute(_LAPSED, {"now": now, "me": me}).fetchall()
            pending = conn.execute(_PENDING).fetchall()
        started = 0
        for row in lapsed:
            if row.agent_id not in self.recovering:
                self._recover(row.agent_id, row.owner)
                started += 1
        messenger = self.messenger()
        ids = [
            p.id
            for p in pending
            if p.id not in messenger.delivering
            and (p.holder is None or p.holder == me or p.expires < now)
            and p.created_at <= now - min_age
        ]
        if ids:
            started += messenger.resume_pending(ids)
        return started

    def _recover(self, agent_id: str, owner: str) -> None:
        self.recovering.add(agent_id)

        async def recover() -> None:
            try:
                await self.waker.recover(agent_id, owner)
            except Exception as err:  # the agent deleted, its core failing, ...
                log.warning("recovering agent %s failed: %r", agent_id, err)
            finally:
                self.recovering.discard(agent_id)

        task = asyncio.create_task(recover())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
