"""Group commit: the writes of many agents' steps share one transaction.

A step's messages and effects must be durable before the step counts, and a
SQLite commit (a WAL append plus bookkeeping) costs about a quarter of a
millisecond — with hundreds of agents in flight, as much as the rest of a
step's own work. `GroupCommit.submit(work)` queues a write; the writes queued
while no batch is running run together in the next loop pass, all in one
transaction. If one of them raises, the whole transaction rolls back and each
write runs again in a transaction of its own, so only the failing one fails.
(SAVEPOINTs would isolate writes without the re-run, but in SQLite a RELEASE
costs more than the commit it saves.) So a write must change nothing but the
database: Python state it affects is changed by its `on_commit` callback
(given the write's result), which runs on the event loop after the commit, in
submission order, even if the task that submitted the write was cancelled
meanwhile. A submitter's future is answered only after the commit, so what it
does next (answer an HTTP request) never gets ahead of durability.

Threaded (the default): a batch runs in one worker thread of its own, so the
event loop goes on scheduling other agents while the database answers — on
PostgreSQL a batch is several network round trips, which on the loop stalled
the whole node. One batch at a time, in submission order, so writes commit in
the order they were submitted (an agent's writes, a lease's take after its
drop); writes submitted while a batch runs form the next one, so batches grow
as the database slows. A write then runs in that thread: it may read what its
submitter holds still while it waits (the agent's image), nothing the loop
changes meanwhile. `threaded=False` runs each batch on the loop itself.

One agent alone loses nothing: its write starts on the next loop pass. Left
out: a time-based commit delay (Postgres' `commit_delay`) — batches form only
from writes that are ready together — and writes from threads other than the
event loop's (those use `Database.begin`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from llmos.storage.db import Database

Write = Callable[[Connection], Any]
OnCommit = Callable[[Any], None]  # called with the write's result
Batch = list[tuple[Write, OnCommit | None, asyncio.Future[Any]]]
Outcomes = list[tuple[bool, Any]]  # (committed, result or exception) per write


class GroupCommit:
    """Batches writes submitted from the event loop into shared transactions."""

    def __init__(self, db: Database, *, threaded: bool = True) -> None:
        self.db = db
        self._pending: Batch = []
        # The loop whose flush is scheduled or running; None when idle. A flush
        # owned by a loop that has gone (its asyncio.run ended) will never
        # finish on it, so a submit from another loop starts one of its own.
        self._owner: asyncio.AbstractEventLoop | None = None
        self._idle: asyncio.Event | None = None
        self._executor = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="llmos-commit")
            if threaded
            else None
        )
        self.batches = 0
        self.writes = 0

    def submit(self, work: Write, on_commit: OnCommit | None = None) -> asyncio.Future[Any]:
        """Queue `work(conn)`; the future gets its result once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((work, on_commit, future))
        if self._owner is not loop:
            self._owner = loop
            loop.call_soon(self._flush)
        return future

    async def drain(self) -> None:
        """Return once every write submitted so far is committed (or has failed)."""
        while self._owner is asyncio.get_running_loop():
            if self._idle is None:
                self._idle = asyncio.Event()
            await self._idle.wait()

    def close(self) -> None:
        """Stop the worker thread (after `drain`; a running batch is finished first).
        Writes submitted later run on the loop."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        if self._owner is not loop:  # another loop took over
            return
        batch, self._pending = self._pending, []
        if not batch:
            self._went_idle()
            return
        works = [work for work, _, _ in batch]
        if self._executor is None:
            self._finish(batch, self._run(works))
            return
        done = self._executor.submit(self._run, works)
        done.add_done_callback(lambda f: self._back_to(loop, batch, f))

    def _back_to(
        self, loop: asyncio.AbstractEventLoop, batch: Batch, done: concurrent.futures.Future[Any]
    ) -> None:
        """In the worker thread: hand the outcomes to the loop that submitted them."""
        failed = None if done.cancelled() else done.exception()
        if done.cancelled() or failed is not None:  # not run, or broke outside any write
            error = failed or RuntimeError("the commit thread stopped before this write ran")
            outcomes: Outcomes = [(False, error)] * len(batch)
        else:
            outcomes = done.result()
        try:
            loop.call_soon_threadsafe(self._finish, batch, outcomes)
        except RuntimeError:  # that loop is closed: nobody awaits, but callbacks still run
            self._settle(batch, outcomes)

    def _run(self, works: list[Write]) -> Outcomes:
        try:
            with self.db.begin() as conn:
                results = [work(conn) for work in works]
            outcomes: Outcomes = [(True, r) for r in results]
            self.batches += 1
        except Exception as exc:
            # One write failed (or the commit did): nothing of the batch was
            # kept, so each write runs again alone, and only a failing one fails.
            outcomes = [(False, exc)] if len(works) == 1 else [self._alone(w) for w in works]
        self.writes += sum(ok for ok, _ in outcomes)
        return outcomes

    def _alone(self, work: Write) -> tuple[bool, Any]:
        try:
            with self.db.begin() as conn:
                result = work(conn)
        except Exception as exc:
            return False, exc
        self.batches += 1
        return True, result

    def _finish(self, batch: Batch, outcomes: Outcomes) -> None:
        """On the loop: run the callbacks, answer the futures, start the next batch."""
        self._settle(batch, outcomes)
        loop = asyncio.get_running_loop()
        if self._owner is not loop:  # another loop took over meanwhile
            return
        if self._pending:
            # After the wake-ups just scheduled: writes their tasks submit join it.
            loop.call_soon(self._flush)
        else:
            self._went_idle()

    def _went_idle(self) -> None:
        self._owner = None
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.set()

    @staticmethod
    def _settle(batch: Batch, outcomes: Outcomes) -> None:
        for (ok, value), (_, on_commit, future) in zip(outcomes, batch, strict=True):
            if ok and on_commit is not None:
                try:
                    on_commit(value)
                except Exception as exc:
                    ok, value = False, exc
            if future.done() or future.get_loop().is_closed():  # nobody to tell
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
