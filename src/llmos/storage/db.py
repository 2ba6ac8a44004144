"""The database: SQLite under LLMOS_HOME by default, or PostgreSQL with pgvector by URL.

`Database.open(path)` returns an engine on a SQLite build that can load
extensions (pysqlite3-binary where the interpreter's own `sqlite3` cannot —
many Pythons, this one included, are built without `enable_load_extension`),
with WAL mode, foreign keys, memory-mapped reads and sqlite-vec loaded (the
migration from its `vec0` tables reads them). `Database.from_url(url)`
opens either engine from a SQLAlchemy URL (`sqlite:///path` or
`postgresql+psycopg://user:pass@host/db`); `open_database(home)` picks what a
user asked for: `LLMOS_DATABASE_URL` when set, else `home/llmos.db`. Every
open brings the schema to the current revision (`schema.py`).

On PostgreSQL, where every statement is a network round trip: `connect`
gives a read connection without a transaction (no BEGIN or ROLLBACK around
a read), `read` runs a read in a worker thread so the event loop is not held
while the server answers, and a pooled connection is pinged only after it
idled (`_ping_when_idle`), not on every use.

The engine-specific SQL lives beside this module: `search.py` (full-text
search: FTS5 or tsvector) and `vectors.py` (binary codes or pgvector).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, OperationalError
from sqlalchemy.pool import QueuePool

from llmos.errors import BackendError, InvalidRequest

DATABASE_URL_ENV = "LLMOS_DATABASE_URL"
#: threads that run `Database.read` on PostgreSQL
READ_THREADS = 4
T = TypeVar("T")


class DatabaseUnavailable(BackendError, OSError):
    """The database server could not be reached (or refused the login)."""

    unavailable = True
    backend = "database"
    code = "database_unavailable"


class BadDatabaseURL(InvalidRequest):
    """The database URL names no engine llmos runs on."""

    code = "bad_database_url"


def sqlite_module() -> ModuleType:
    """The DB-API module to use: one whose connections can load sqlite-vec."""
    import sqlite3

    try:
        return importlib.import_module("pysqlite3.dbapi2")
    except ImportError:
        pass
    if hasattr(sqlite3.connect(":memory:"), "enable_load_extension"):
        return sqlite3
    raise RuntimeError(
        "this Python's sqlite3 cannot load extensions, which sqlite-vec needs; "
        "install pysqlite3-binary (Linux x86_64) or use a Python built with "
        "--enable-loadable-sqlite-extensions"
    )


def redacted(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


class Database:
    """An engine plus what llmos needs to know about it (which dialect, vector tables)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect: str = engine.dialect.name  # "sqlite" or "postgresql"
        # Reads on PostgreSQL run in autocommit: a plain read is then one round
        # trip instead of three (BEGIN, the query, ROLLBACK). Under READ
        # COMMITTED each statement of a transaction takes its own snapshot
        # anyway, so a read sees what it would have seen in one.
        self._reader = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self.is_postgres else engine
        )
        self._readers: ThreadPoolExecutor | None = None  # for `read`, made on first use
        from llmos.storage.vectors import VectorIndex

        self.vectors = VectorIndex(engine)

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @classmethod
    def open(cls, path: str | Path, *, migrate: bool | None = None) -> Database:
        """The SQLite database at `path` (created owner-only when missing)."""
        path = Path(path)
        if str(path) != ":memory:":
            # Owner-only: the database holds API key hashes, memories and files.
            # SQLite gives its -wal and -shm files the database file's mode.
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        return cls._ready(_sqlite_engine(path), migrate)

    @classmethod
    def from_url(cls, url: str, *, migrate: bool | None = None) -> Database:
        """The database a SQLAlchemy URL names: `sqlite:///PATH` or `postgresql+psycopg://…`."""
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise BadDatabaseURL(f"not a database URL: {redacted(url)}") from exc
        if parsed.get_backend_name() == "sqlite":
            if not parsed.database:
                raise BadDatabaseURL("a sqlite URL needs a file path: sqlite:///PATH")
            return cls.open(parsed.database, migrate=migrate)
        if parsed.get_backend_name() != "postgresql":
            raise BadDatabaseURL(
                f"llmos runs on SQLite or PostgreSQL, not {parsed.get_backend_name()!r} "
                "(use postgresql+psycopg://USER:PASSWORD@HOST/DB)"
            )
        if parsed.get_driver_name() != "psycopg":
            # psycopg 3 is the driver llmos depends on; others may be absent.
            parsed = parsed.set(drivername="postgresql+psycopg")
        # The pool holds a connection for each thread that may use one at once
        # (the loop's, the reader threads, the group commit's), so none is
        # opened and closed again under load; overflow covers bursts.
        engine = create_engine(
            parsed, poolclass=QueuePool, pool_size=READ_THREADS + 4, max_overflow=8
        )
        _ping_when_idle(engine)
        return cls._ready(engine, migrate)

    @classmethod
    def _ready(cls, engine: Engine, migrate: bool | None) -> Database:
        from llmos.storage.schema import ensure_schema

        db = cls(engine)
        try:
            ensure_schema(engine, migrate=migrate)
        except OperationalError as exc:
            engine.dispose()
            url = engine.url.render_as_string(hide_password=True)
            first = str(exc.orig or exc).strip().splitlines()[0]
            raise DatabaseUnavailable(f"cannot open the database {url}: {first}") from exc
        except BaseException:
            engine.dispose()
            raise
        return db

    def create_schema(self) -> None:
        """Bring the schema to the current revision (done by every open)."""
        from llmos.storage.schema import ensure_schema

        ensure_schema(self.engine)

    def vec_table(self, dim: int, conn: Connection | None = None) -> str:
        """Name of the vector table for `dim`-dimensional embeddings, created on first use."""
        return self.vectors.table(dim, conn).name

    def vec_tables(self) -> list[str]:
        return self.vectors.tables()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reads (autocommit on PostgreSQL: write with `begin`)."""
        with self._reader.connect() as conn:
            yield conn

    async def read(self, work: Callable[[Connection], T]) -> T:
        """`work(conn)` on a read connection; on PostgreSQL in a worker thread, so
        the event loop goes on while the server answers (a local SQLite read is
        quicker than the hop to a thread). `work` may only read."""
        if not self.is_postgres:
            return self._read(work)
        if self._readers is None:
            self._readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="llmos-read")
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._read, work)

    def _read(self, work: Callable[[Connection], T]) -> T:
        with self.connect() as conn:
            return work(conn)

    def close(self) -> None:
        readers, self._readers = self._readers, None
        if readers is not None:
            readers.shutdown(wait=True)
        self.engine.dispose()


def open_database(
    home: str | Path, url: str | None = None, *, migrate: bool | None = None
) -> Database:
    """The database a user chose: `url`, else $LLMOS_DATABASE_URL, else `home/llmos.db`."""
    url = url or os.environ.get(DATABASE_URL_ENV) or None
    if url:
        return Database.from_url(url, migrate=migrate)
    return Database.open(Path(home) / "llmos.db", migrate=migrate)


#: a pooled connection unused this long is pinged before it is handed out
IDLE_PING_SECONDS = 10.0


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled PostgreSQL connection before use only if it sat idle a while.

    SQLAlchemy's `pool_pre_ping` pings on every checkout: a round trip per
    read, a quarter of a node's database time under load. A connection in use
    moments ago is alive; one that idled (through a restart of the server, a
    proxy's idle timeout) is pinged and, if dead, replaced before the caller
    sees it. A server that goes away mid-burst still fails the statements
    already on its connections, which SQLAlchemy then drops from the pool."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception:
            alive = False
        if not alive:  # the pool replaces it with a fresh connection
            raise DisconnectionError("the pooled connection is gone")


def _sqlite_engine(path: Path) -> Engine:
    module = sqlite_module()
    import sqlite_vec

    engine = create_engine(
        f"sqlite:///{path}",
        module=module,
        poolclass=QueuePool,
        pool_size=4,
        max_overflow=8,
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.enable_load_extension(True)
        sqlite_vec.load(dbapi_conn)
        dbapi_conn.enable_load_extension(False)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across application crashes in WAL mode and
        # costs no fsync per commit; only a power cut can lose the tail.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        # Archival search reads an agent's blocks of binary codes (vectors.py):
        # through mmap that is ~1 ms at 100k passages, through read() ~6 ms.
        cur.execute("PRAGMA mmap_size=1073741824")
        cur.close()

    return engine
