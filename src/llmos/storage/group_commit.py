"""Group commit: the writes of many agents' steps share one transaction.

A step's messages and effects must be durable before the step counts, and a
SQLite commit (a WAL append plus bookkeeping) costs about a quarter of a
millisecond — with hundreds of agents in flight, as much as the rest of a
step's own work. `GroupCommit.submit(work)` queues a write; every write queued
during one pass of the event loop runs in the next pass, all in one
transaction. If one of them raises, the whole transaction rolls back and each
write runs again in a transaction of its own, so only the failing one fails.
(SAVEPOINTs would isolate writes without the re-run, but in SQLite a RELEASE
costs more than the commit it saves.) So a write must change nothing but the
database: Python state it affects is changed by its `on_commit` callback
(given the write's result), which runs after the commit, in submission
order, even if the task that submitted the write was cancelled meanwhile.

One agent alone loses nothing: its write runs on the next loop pass, as soon
as the current callback yields. Left out: a time-based commit delay (Postgres'
`commit_delay`) — batches form only from writes that are ready together — and
writes from threads other than the event loop's (those use `Database.begin`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from llmos.storage.db import Database

Write = Callable[[Connection], Any]
OnCommit = Callable[[Any], None]  # called with the write's result


class GroupCommit:
    """Batches writes submitted from the event loop into shared transactions."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: list[tuple[Write, OnCommit | None, asyncio.Future[Any]]] = []
        self._scheduled: asyncio.AbstractEventLoop | None = None  # the loop a flush waits on
        self.batches = 0
        self.writes = 0

    def submit(self, work: Write, on_commit: OnCommit | None = None) -> asyncio.Future[Any]:
        """Queue `work(conn)`; the future gets its result once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((work, on_commit, future))
        # A flush scheduled on a loop that has gone (its asyncio.run ended)
        # will never run: schedule one here.
        if self._scheduled is not loop:
            self._scheduled = loop
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self._scheduled = None
        try:
            with self.db.begin() as conn:
                outcomes = [(True, work(conn)) for work, _, _ in batch]
            self.batches += 1
        except Exception as exc:
            # One write failed (or the commit did): nothing of the batch was
            # kept, so each write runs again alone, and only a failing one fails.
            outcomes = [(False, exc)] if len(batch) == 1 else [self._alone(w) for w, _, _ in batch]
        self.writes += sum(ok for ok, _ in outcomes)
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

    def _alone(self, work: Write) -> tuple[bool, Any]:
        try:
            with self.db.begin() as conn:
                result = work(conn)
        except Exception as exc:
            return False, exc
        self.batches += 1
        return True, result
