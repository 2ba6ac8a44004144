"""Archival vectors: one table per embedding dimension, on sqlite-vec or on pgvector.

An agent's embedder is fixed at creation, so its vectors share one dimension;
each dimension gets its own table, created on first use, keyed by passage id
and carrying the agent id so a search looks at one agent's vectors only.

- SQLite: a sqlite-vec `vec0` virtual table with the agent id as partition
  key, searched exactly (brute force over that agent's partition).
- PostgreSQL: a table with a pgvector `vector(dim)` column, a B-tree index on
  the agent id and an HNSW index (cosine); searches use pgvector's iterative
  index scan, so filtering by agent still returns the k nearest. Rows go with
  their passage (ON DELETE CASCADE).

Both return passage ids nearest first, by cosine distance.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    select,
    text,
)

from llmos.storage.models import passages

if TYPE_CHECKING:
    from sqlalchemy import Engine

_PREFIX = "passages_vec_"
# HNSW build parameters (pgvector's defaults): recall@10 above 0.95 at the
# search depths archival search uses (see benchmarks/archival_scale.py).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64


def ef_search() -> int:
    """HNSW's search breadth: LLMOS_HNSW_EF_SEARCH, else 400 (higher: better recall, slower)."""
    try:
        return max(10, int(os.environ.get("LLMOS_HNSW_EF_SEARCH", "400")))
    except ValueError:
        return 400


def _f32(vector: Any) -> bytes:
    """sqlite-vec's float32 blob for a vector."""
    import numpy as np  # deferred: start-up of commands that never embed stays fast

    return np.asarray(vector, dtype=np.float32).tobytes()


class VectorIndex:
    """The vector tables of one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        self._known: dict[int, Table] = {}  # dimension -> table, seen committed
        self._lock = threading.Lock()
        self._pg_meta = MetaData()

    # --- tables -------------------------------------------------------------------

    def table(self, dim: int, conn: Connection | None = None) -> Table:
        """The table for `dim`, created if missing. Pass `conn` when a transaction
        is open on this thread (creation then joins it and may still roll back)."""
        dim = int(dim)
        known = self._known.get(dim)
        if known is not None:
            return known
        if conn is not None:
            if self.is_postgres and self._pg_exists(conn, dim):
                # Visible to this transaction: committed, or created earlier in
                # it (a rollback then would leave a stale entry; creation is in
                # the first insert of a dimension, never beside a search).
                self._known[dim] = self._pg_table(dim)
                return self._known[dim]
            return self._create(conn, dim)
        with self._lock, self.engine.begin() as own:
            table = self._create(own, dim)
        self._known[dim] = table
        return table

    def _create(self, conn: Connection, dim: int) -> Table:
        name = f"{_PREFIX}{dim}"
        if not self.is_postgres:
            conn.exec_driver_sql(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {name} USING vec0(agent_id text "
                f"partition key, embedding float[{dim}] distance_metric=cosine)"
            )
            return Table(name, MetaData(), Column("rowid", Integer), Column("agent_id", String))
        table = self._pg_table(dim)
        # Two nodes creating the same table at once: one waits for the other.
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": 0x11A05 + dim})
        table.create(conn, checkfirst=True)
        return table

    def _pg_exists(self, conn: Connection, dim: int) -> bool:
        found = conn.execute(text("SELECT to_regclass(:n)"), {"n": f"{_PREFIX}{dim}"})
        return found.scalar_one() is not None

    def _pg_table(self, dim: int) -> Table:
        from pgvector.sqlalchemy import Vector

        name = f"{_PREFIX}{dim}"
        if name in self._pg_meta.tables:
            return self._pg_meta.tables[name]
        return Table(
            name,
            self._pg_meta,
            Column(
                "passage_id",
                Integer,
                ForeignKey(passages.c.id, ondelete="CASCADE"),
                primary_key=True,
            ),
            Column("agent_id", String(40), nullable=False),
            Column("embedding", Vector(dim), nullable=False),
            Index(f"ix_{name}_agent", "agent_id"),
            Index(
                f"ix_{name}_hnsw",
                "embedding",
                postgresql_using="hnsw",
                postgresql_with={"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION},
                postgresql_ops={"embedding": "vector_cosine_ops"},
            ),
        )

    def tables(self, conn: Connection | None = None) -> list[str]:
        """Names of every vector table in the database."""
        if self.is_postgres:
            sql = (
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename ~ '^passages_vec_[0-9]+$'"
            )
        else:
            sql = (
                "SELECT name FROM sqlite_master WHERE name GLOB 'passages_vec_[0-9]*' "
                "AND type='table' AND sql LIKE 'CREATE VIRTUAL%'"
            )
        if conn is not None:
            return [r[0] for r in conn.exec_driver_sql(sql)]
        with self.engine.connect() as own:
            return [r[0] for r in own.exec_driver_sql(sql)]

    def _all(self, conn: Connection) -> list[Table]:
        return [self.table(int(n[len(_PREFIX) :]), conn) for n in self.tables(conn)]

    # --- rows ---------------------------------------------------------------------

    def insert(
        self, conn: Connection, agent_id: str, dim: int, ids: list[int], vectors: Any
    ) -> None:
        table = self.table(dim, conn)
        pairs = list(zip(ids, vectors, strict=True))
        if not pairs:
            return
        if self.is_postgres:
            conn.execute(
                table.insert(),
                [{"passage_id": i, "agent_id": agent_id, "embedding": v} for i, v in pairs],
            )
            return
        conn.exec_driver_sql(
            f"INSERT INTO {table.name}(rowid, agent_id, embedding) VALUES (?, ?, ?)",
            [(i, agent_id, _f32(v)) for i, v in pairs],
        )

    def search(
        self, conn: Connection, agent_id: str, dim: int, query: Any, k: int
    ) -> list[tuple[int, float]]:
        """(id, cosine distance) of the agent's `k` passages nearest to `query`, nearest first."""
        table = self.table(dim, conn)
        if not self.is_postgres:
            rows = conn.exec_driver_sql(
                f"SELECT rowid, distance FROM {table.name} WHERE embedding MATCH ? AND k = ? "
                "AND agent_id = ? ORDER BY distance",
                (_f32(query), k, agent_id),
            ).fetchall()
            return [(r[0], float(r[1])) for r in rows]
        # HNSW keeps ef_search candidates: recall@10 0.46 at pgvector's default
        # of 40, 0.97 at 400 (benchmarks/archival_scale.py, 20k clustered vectors).
        # The iterative scan goes on until k rows of this agent are found (0.8).
        conn.execute(
            text(
                "SELECT set_config('hnsw.ef_search', :ef, true), "
                "set_config('hnsw.iterative_scan', 'strict_order', true)"
            ),
            {"ef": str(min(1000, max(ef_search(), 2 * k)))},
        )
        import numpy as np

        q = np.asarray(query, dtype=np.float32)
        distance = table.c.embedding.cosine_distance(q)
        rows = conn.execute(
            select(table.c.passage_id, distance)
            .where(table.c.agent_id == agent_id)
            .order_by(distance)
            .limit(k)
        ).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    def delete(self, conn: Connection, passage_id: int) -> None:
        for table in self._all(conn):
            if self.is_postgres:
                conn.execute(delete(table).where(table.c.passage_id == passage_id))
            else:
                conn.exec_driver_sql(f"DELETE FROM {table.name} WHERE rowid = ?", (passage_id,))

    def delete_agent(self, conn: Connection, agent_id: str, also: int | None = None) -> None:
        """Drop all of the agent's vectors (in every table, and `also`'s)."""
        tables = {t.name: t for t in self._all(conn)}
        if also is not None:
            extra = self.table(also, conn)
            tables[extra.name] = extra
        for table in tables.values():
            if self.is_postgres:
                conn.execute(delete(table).where(table.c.agent_id == agent_id))
            else:
                conn.exec_driver_sql(f"DELETE FROM {table.name} WHERE agent_id = ?", (agent_id,))

    def count(self, conn: Connection, dim: int, agent_id: str | None = None) -> int:
        table = self.table(dim, conn)
        where = " WHERE agent_id = :a" if agent_id is not None else ""
        return int(
            conn.execute(
                text(f"SELECT count(*) FROM {table.name}{where}"), {"a": agent_id}
            ).scalar_one()
        )
