"""The database: one SQLite file under LLMOS_HOME, opened the way llmos needs it.

`Database.open(path)` returns an engine on a SQLite build that can load
extensions (pysqlite3-binary where the interpreter's own `sqlite3` cannot —
many Pythons, this one included, are built without `enable_load_extension`),
with WAL mode, foreign keys, sqlite-vec loaded, and the schema plus its FTS5
indexes created.

Left out: Postgres (the storage issue adds it behind the same `Database`
surface) and schema migrations beyond "create what is missing".
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.pool import QueuePool

from llmos.storage.models import metadata

# External-content FTS5 tables mirror a column of a base table through
# triggers, so text is stored once and search stays in one transaction.
_FTS_DDL = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS {t}_fts USING fts5("
    "text, content='{t}', content_rowid='id', tokenize='porter unicode61')",
    "CREATE TRIGGER IF NOT EXISTS {t}_fts_ins AFTER INSERT ON {t} BEGIN "
    "INSERT INTO {t}_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS {t}_fts_del AFTER DELETE ON {t} BEGIN "
    "INSERT INTO {t}_fts({t}_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER IF NOT EXISTS {t}_fts_upd AFTER UPDATE OF text ON {t} BEGIN "
    "INSERT INTO {t}_fts({t}_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO {t}_fts(rowid, text) VALUES (new.id, new.text); END",
]


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


class Database:
    """An engine plus the few engine-specific things llmos needs (vector tables)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._vec_tables: set[str] = set()
        self._vec_lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path) -> Database:
        path = Path(path)
        if str(path) != ":memory:":
            # Owner-only: the database holds API key hashes, memories and files.
            # SQLite gives its -wal and -shm files the database file's mode.
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
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
            cur.close()

        db = cls(engine)
        db.create_schema()
        return db

    def create_schema(self) -> None:
        with self.engine.connect() as conn:
            # BEGIN IMMEDIATE takes the write lock before checking what exists,
            # so two processes opening a new home cannot both create a table.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            metadata.create_all(conn)
            for table in ("messages", "passages"):
                for ddl in _FTS_DDL:
                    conn.exec_driver_sql(ddl.format(t=table))
            conn.commit()

    def vec_table(self, dim: int, conn: Connection | None = None) -> str:
        """Name of the vector index for `dim`-dimensional embeddings, created on first use.

        One table per dimension (an agent's embedder is fixed at creation), and
        the agent id as sqlite-vec's partition key so a search scans only that
        agent's vectors. Pass `conn` when a transaction is open on this thread.
        """
        name = f"passages_vec_{int(dim)}"
        if name in self._vec_tables:
            return name
        ddl = (
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {name} USING vec0("
            f"agent_id text partition key, embedding float[{int(dim)}] distance_metric=cosine)"
        )
        if conn is not None:
            # Inside the caller's transaction (no second writer), which may
            # still roll back: not remembered until seen committed.
            conn.exec_driver_sql(ddl)
            return name
        with self._vec_lock:
            with self.engine.begin() as own:
                own.exec_driver_sql(ddl)
            self._vec_tables.add(name)
        return name

    def vec_tables(self) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT name FROM sqlite_master WHERE name GLOB 'passages_vec_[0-9]*' "
                    "AND type='table' AND sql LIKE 'CREATE VIRTUAL%'"
                )
            ).fetchall()
        return [r[0] for r in rows]

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()
