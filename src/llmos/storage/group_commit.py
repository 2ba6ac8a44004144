"""Group commit: the writes of many agents' steps share one transaction.

A step's messages and effects must be durable before the step counts, and a
SQLite commit (a WAL append plus bookkeeping) costs about a quarter of a
millisecond — with hundreds of agents in flight, as much as the rest of a
step's own work. `GroupCommit.submit(work)` queues a write; every write queued
during one pass of the event loop runs in the next pass, each in its own
SAVEPOINT inside one transaction, and all of them commit at once. A write that
raises is rolled back to its savepoint and only its submitter sees the error;
a failed COMMIT fails them all. After the commit each write's `on_commit`
callback runs (in submission order), so in-memory state changes only once its
rows are durable — even if the task that submitted the write was cancelled
meanwhile.

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
OnCommit = Callable[[], None]


class GroupCommit:
    """Batches writes submitted from the event loop into shared transactions."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: list[tuple[Write, OnCommit | None, asyncio.Future[Any]]] = []
        self._scheduled = False
        self.batches = 0
        self.writes = 0

    def submit(self, work: Write, on_commit: OnCommit | None = None) -> asyncio.Future[Any]:
        """Queue `work(conn)`; the future gets its result once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((work, on_commit, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self._scheduled = False
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self.db.begin() as conn:
                for work, _, _ in batch:
                    savepoint = conn.begin_nested() if len(batch) > 1 else None
                    try:
                        result = work(conn)
                    except Exception as exc:
                        if savepoint is None:
                            raise
                        savepoint.rollback()
                        outcomes.append((False, exc))
                    else:
                        if savepoint is not None:
                            savepoint.commit()
                        outcomes.append((True, result))
        except Exception as exc:  # the transaction as a whole failed
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        self.writes += len(batch)
        for (work_ok, value), (_, on_commit, future) in zip(outcomes, batch, strict=True):
            if work_ok and on_commit is not None:
                try:
                    on_commit()
                except Exception as exc:
                    work_ok, value = False, exc
            if future.done():  # its submitter was cancelled: nobody to tell
                continue
            if work_ok:
                future.set_result(value)
            else:
                future.set_exception(value)
