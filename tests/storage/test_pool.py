"""The PostgreSQL connection pool: reads without a transaction, reads off the event
loop (`Database.read`), and a connection that died while it idled in the pool
replaced before anyone uses it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

import llmos.storage.db as dbmod
from llmos.storage.db import Database
from tests.fakes.ticker import ticking


@pytest.fixture
def pg(postgres_schema_url: str) -> Iterator[Database]:
    database = Database.from_url(postgres_schema_url)
    yield database
    database.close()


def _backend_pid(db: Database) -> int:
    with db.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_read_opens_no_transaction_and_a_write_does(pg: Database) -> None:
    with pg.connect() as conn:
        conn.execute(text("SELECT count(*) FROM agents")).scalar_one()
        # No BEGIN was sent, so no ROLLBACK will be either: one round trip.
        assert conn.connection.dbapi_connection.info.transaction_status == TransactionStatus.IDLE
    with pg.begin() as conn:
        conn.execute(text("SELECT count(*) FROM agents")).scalar_one()
        assert conn.connection.dbapi_connection.info.transaction_status == TransactionStatus.INTRANS


def _kill(url: str, pid: int) -> None:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    admin.dispose()


def test_a_connection_killed_while_idle_is_replaced_after_the_idle_time(
    pg: Database, postgres_schema_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = _backend_pid(pg)  # the pool keeps this connection
    _kill(postgres_schema_url, pid)
    monkeypatch.setattr(dbmod, "IDLE_PING_SECONDS", 0.0)  # it has idled long enough
    assert _backend_pid(pg) != pid  # pinged, found dead, replaced: the read works


def test_a_connection_used_moments_ago_is_not_pinged(
    pg: Database, postgres_schema_url: str
) -> None:
    """The other side of the trade: no ping within the idle time (so the read above
    worked because of the ping)."""
    pid = _backend_pid(pg)
    _kill(postgres_schema_url, pid)
    with pytest.raises(OperationalError):
        _backend_pid(pg)
    assert _backend_pid(pg) != pid  # and the pool dropped the dead one


async def test_a_read_waits_for_postgresql_in_a_thread_while_the_loop_runs(pg: Database) -> None:
    async with ticking() as ticks:
        slept = await pg.read(lambda conn: conn.execute(text("SELECT pg_sleep(0.4), 7")).one())
    assert slept[1] == 7
    assert ticks.count >= 10, ticks.count  # on the loop itself the read would have left it none
    # and a read's errors reach the caller
    with pytest.raises(ProgrammingError):
        await pg.read(lambda conn: conn.execute(text("SELECT * FROM no_such_table")).all())


async def test_a_sqlite_read_runs_on_the_loop(home: Path) -> None:
    db = Database.open(home / "llmos.db")
    try:
        thread = await db.read(lambda _conn: threading.current_thread())
        assert thread is threading.current_thread()
    finally:
        db.close()
