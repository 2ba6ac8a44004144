"""Archival vectors: one table per embedding dimension, on SQLite or on pgvector.

An agent's embedder is fixed at creation, so its vectors share one dimension;
each dimension gets its own table, created on first use, keyed by passage id
and carrying the agent id so a search looks at one agent's vectors only. Rows
go with their passage (ON DELETE CASCADE). Searches return passage ids
nearest first, by cosine distance.

- SQLite: `passages_vec_{dim}` holds each passage's float32 vector (a plain
  table), and `passages_vec_{dim}_bits` the agent's binary codes (one sign bit
  per dimension) in blocks of BLOCK passages: a search reads the agent's
  blocks (a few MB at 100k passages), ranks every code by Hamming distance in
  numpy, and rescores the best `candidates(k, n)` with their float vectors. An
  agent with at most EXACT_UP_TO vectors is searched exactly (every vector
  rescored). Measured (benchmarks/archival_scale.py, clustered 384-d vectors,
  one agent, k=10, on 2 cores shared with other work): at 100k, recall@10
  1.0, 5.8 ms of CPU a search, p50 9 ms at load 3 and 18 ms at load 9.5; at
  1M (2,000 codes rescored) recall@10 1.0, 80 ms of CPU. Against
  what sqlite-vec 0.1.9 offers: exact `vec0` search 61-100 ms; `bit[384]` KNN
  in `vec0` grows with k (27 ms at k=100, 71 ms at k=200: its top-k is not
  built for oversampling), and fetching 200 vectors from `vec0` for rescoring
  takes 6 ms one rowid at a time, 100 ms with `rowid IN (...)`, against
  0.6 ms from a plain table; the "rescore" index of sqlite-vec 0.1.10 (alpha) takes no
  partition key or metadata column, so not one table for all agents.
  Databases made with the `vec0` tables are converted by migration 0003.
- PostgreSQL: a table with a pgvector `vector(dim)` column, a B-tree index on
  the agent id and an HNSW index (cosine, over the vectors in half precision);
  searches use pgvector's iterative index scan, so filtering by agent still
  returns the k nearest. The index and the search itself are `hnsw.py`'s.
"""

from __future__ import annotations

import re
import threading
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    text,
)

from llmos.storage import hnsw
from llmos.storage.models import passages

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy import Engine

_PREFIX = "passages_vec_"
_NAME = re.compile(r"^passages_vec_([0-9]+)$")
ROWS_TTL = 60.0  # seconds a table's row estimate is reused before pg_class is read again

#: SQLite: passages per block of binary codes (a block is rewritten when a
#: passage joins or leaves it: 4,096 codes of 384 bits are 192 KB; smaller blocks
#: cost more numpy calls per search: 1,024 measured 12.5 ms p50 against 7-9 ms).
BLOCK = 4096
#: SQLite: agents with at most this many vectors are searched exactly.
EXACT_UP_TO = 2000
#: SQLite: binary codes rescored per search (see `candidates`).
RESCORE_MIN = 300
OVERSAMPLE = 8
RESCORE_SHARE = 500  # one code in this many: recall holds as an agent grows


def candidates(k: int, n: int) -> int:
    """How many of the nearest binary codes a SQLite search rescores, for `k` results
    among `n` vectors. Recall@10 with clusters spread in all 384 dimensions (harder
    than real embeddings; a first version of benchmarks/archival_scale.py): of
    100k, 200 0.95, 400 0.999; of 1M, 400 0.72, 1,000 0.90, 2,000 0.98."""
    return max(RESCORE_MIN, OVERSAMPLE * k, n // RESCORE_SHARE)


def binary_codes(vectors: Any) -> np.ndarray:
    """One sign bit per dimension, in 64-bit words: (words, n) uint64, word-major (a
    search then reads each word of every code as one contiguous run)."""
    import numpy as np  # deferred: start-up of commands that never embed stays fast

    signs = np.asarray(vectors, dtype=np.float32) > 0
    pad = -signs.shape[1] % 64
    if pad:
        signs = np.pad(signs, ((0, 0), (0, pad)))
    return np.ascontiguousarray(np.packbits(signs, axis=1).view(np.uint64).T)


def hamming(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Hamming distance of each code (column) of `codes` to the one code of `query`."""
    import numpy as np

    return np.bitwise_count(codes ^ query).sum(axis=0, dtype=np.uint16)


def nearest_codes(distance: np.ndarray, want: int) -> np.ndarray:
    """Positions of the `want` smallest distances (ties at the edge: the first ones)."""
    import numpy as np

    # A histogram of the few hundred possible distances finds the cut-off in
    # one pass, about 5x faster than argpartition over 100k values.
    cut = int(np.searchsorted(np.cumsum(np.bincount(distance)), want))
    inside = np.flatnonzero(distance < cut)
    edge = np.flatnonzero(distance == cut)[: want - len(inside)]
    return np.concatenate([inside, edge])


class VectorIndex:
    """The vector tables of one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        self._known: dict[int, Table] = {}  # dimension -> table, seen committed
        self._rows: dict[str, tuple[float, int | None]] = {}  # table -> (when, estimate)
        self._lock = threading.Lock()
        self._meta = MetaData()

    # --- tables -------------------------------------------------------------------

    def table(self, dim: int, conn: Connection | None = None) -> Table:
        """The table for `dim`, created if missing. Pass `conn` when a transaction
        is open on this thread (creation then joins it and may still roll back)."""
        dim = int(dim)
        known = self._known.get(dim)
        if known is not None:
            return known
        if conn is not None:
            if self._exists(conn, dim):
                # Visible to this transaction: committed, or created earlier in
                # it (a rollback then would leave a stale entry; creation is in
                # the first insert of a dimension, never beside a search).
                self._known[dim] = self._table(dim)
                return self._known[dim]
            return self._create(conn, dim)
        with self._lock, self.engine.begin() as own:
            table = self._create(own, dim)
        self._known[dim] = table
        return table

    def _create(self, conn: Connection, dim: int) -> Table:
        table = self._table(dim)
        if self.is_postgres:
            # Two nodes creating the same table at once: one waits for the other.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": 0x11A05 + dim})
            table.create(conn, checkfirst=True)
        else:
            # Inside the caller's transaction; SQLite's write lock serialises creators.
            for ddl in sqlite_ddl(dim):
                conn.exec_driver_sql(ddl)
        return table

    def _exists(self, conn: Connection, dim: int) -> bool:
        if self.is_postgres:
            found = conn.execute(text("SELECT to_regclass(:n)"), {"n": f"{_PREFIX}{dim}"})
            return found.scalar_one() is not None
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return conn.exec_driver_sql(sql, (f"{_PREFIX}{dim}_bits",)).first() is not None

    def _table(self, dim: int) -> Table:
        name = f"{_PREFIX}{dim}"
        if name in self._meta.tables:
            return self._meta.tables[name]
        if not self.is_postgres:
            # The shape of sqlite_ddl(dim), for queries (DDL is written out there).
            return Table(
                name,
                self._meta,
                Column("passage_id", Integer, primary_key=True),
                Column("agent_id", String(40), nullable=False),
                Column("block", Integer, nullable=False),
                Column("embedding", LargeBinary, nullable=False),
            )
        from pgvector.sqlalchemy import Vector

        table = Table(
            name,
            self._meta,
            Column(
                "passage_id",
                Integer,
                ForeignKey(passages.c.id, ondelete="CASCADE"),
                primary_key=True,
            ),
            Column("agent_id", String(40), nullable=False),
            Column("embedding", Vector(dim), nullable=False),
            Index(f"ix_{name}_agent", "agent_id"),
        )
        hnsw.add_index(table, dim)
        return table

    def tables(self, conn: Connection | None = None) -> list[str]:
        """Names of every vector table in the database (one per dimension)."""
        if self.is_postgres:
            sql = (
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename ~ '^passages_vec_[0-9]+$'"
            )
        else:
            sql = (
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'passages_vec_%'"
            )
        if conn is not None:
            names = [r[0] for r in conn.exec_driver_sql(sql)]
        else:
            with self.engine.connect() as own:
                names = [r[0] for r in own.exec_driver_sql(sql)]
        return sorted(n for n in names if _NAME.match(n))

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
        import numpy as np

        matrix = np.asarray([v for _, v in pairs], dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != dim:
            raise ValueError(f"expected {dim}-d vectors, got an array of shape {matrix.shape}")
        if self.is_postgres:
            conn.execute(
                table.insert(),
                [{"passage_id": i, "agent_id": agent_id, "embedding": v} for i, v in pairs],
            )
            return
        blocks = append_codes(conn, table.name, agent_id, [i for i, _ in pairs], matrix)
        conn.exec_driver_sql(
            f"INSERT INTO {table.name} (passage_id, agent_id, block, embedding) "
            "VALUES (?, ?, ?, ?)",
            [
                (i, agent_id, b, row.tobytes())
                for (i, _), b, row in zip(pairs, blocks, matrix, strict=True)
            ],
        )

    def search(
        self, conn: Connection, agent_id: str, dim: int, query: Any, k: int
    ) -> list[tuple[int, float]]:
        """(id, cosine distance) of the agent's `k` passages nearest to `query`, nearest first."""
        if int(dim) not in self._known and not self._exists(conn, int(dim)):
            return []  # nothing stored in this dimension yet (and a search creates nothing)
        table = self.table(dim, conn)
        if not self.is_postgres:
            return _sqlite_search(conn, table.name, agent_id, query, k)
        return hnsw.search(
            conn, table.name, dim, self._row_estimate(conn, table.name), agent_id, query, k
        )

    def _row_estimate(self, conn: Connection, name: str) -> int | None:
        """PostgreSQL's estimate of the table's rows (from its last ANALYZE), reused for
        ROWS_TTL seconds; None when it has none (never analysed: assume it is large)."""
        now = time.monotonic()
        cached = self._rows.get(name)
        if cached is not None and now - cached[0] < ROWS_TTL:
            return cached[1]
        found = conn.execute(
            text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:name)"), {"name": name}
        ).scalar()
        rows = int(found) if found is not None and found >= 0 else None
        self._rows[name] = (now, rows)
        return rows

    def delete(self, conn: Connection, passage_id: int) -> None:
        for table in self._all(conn):
            if self.is_postgres:
                conn.execute(delete(table).where(table.c.passage_id == passage_id))
                continue
            found = conn.exec_driver_sql(
                f"SELECT agent_id, block FROM {table.name} WHERE passage_id = ?", (passage_id,)
            ).first()
            if found is not None:
                conn.exec_driver_sql(
                    f"DELETE FROM {table.name} WHERE passage_id = ?", (passage_id,)
                )
                _drop_codes(conn, table.name, found[0], found[1], {passage_id})

    def delete_agent(self, conn: Connection, agent_id: str, also: int | None = None) -> None:
        """Drop all of the agent's vectors (in every table, and `also`'s)."""
        tables = {t.name: t for t in self._all(conn)}
        if also is not None:
            extra = self.table(also, conn)
            tables[extra.name] = extra
        for table in tables.values():
            conn.execute(delete(table).where(table.c.agent_id == agent_id))
            if not self.is_postgres:
                conn.exec_driver_sql(
                    f"DELETE FROM {table.name}_bits WHERE agent_id = ?", (agent_id,)
                )

    def count(self, conn: Connection, dim: int, agent_id: str | None = None) -> int:
        table = self.table(dim, conn)
        where = " WHERE agent_id = :a" if agent_id is not None else ""
        return int(
            conn.execute(
                text(f"SELECT count(*) FROM {table.name}{where}"), {"a": agent_id}
            ).scalar_one()
        )


# --- SQLite: float vectors plus blocks of binary codes ------------------------------


def sqlite_ddl(dim: int, name: str | None = None) -> list[str]:
    """The SQLite tables of one dimension (`name`: another name for them, in migrations)."""
    name = name or f"{_PREFIX}{int(dim)}"
    return [
        f"CREATE TABLE IF NOT EXISTS {name} (passage_id INTEGER PRIMARY KEY "
        "REFERENCES passages(id) ON DELETE CASCADE, agent_id VARCHAR(40) NOT NULL, "
        "block INTEGER NOT NULL, embedding BLOB NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS ix_{name}_agent ON {name} (agent_id)",
        # ids: int64 passage ids; codes: their binary codes (binary_codes' layout)
        f"CREATE TABLE IF NOT EXISTS {name}_bits (agent_id VARCHAR(40) NOT NULL, "
        "block INTEGER NOT NULL, ids BLOB NOT NULL, codes BLOB NOT NULL, "
        "PRIMARY KEY (agent_id, block))",
    ]


def append_codes(
    conn: Connection, name: str, agent_id: str, ids: list[int], matrix: np.ndarray
) -> list[int]:
    """Add the codes of `ids` to the agent's last block (then new ones); returns each id's block."""
    import numpy as np

    codes = binary_codes(matrix)  # (words, n)
    last = conn.exec_driver_sql(
        f"SELECT block, ids, codes FROM {name}_bits WHERE agent_id = ? ORDER BY block DESC LIMIT 1",
        (agent_id,),
    ).first()
    out: list[int] = []
    done = 0
    if last is not None:
        have = np.frombuffer(last[1], dtype=np.int64)
        room = BLOCK - len(have)
        if room > 0:
            take = min(room, len(ids))
            conn.exec_driver_sql(
                f"UPDATE {name}_bits SET ids = ?, codes = ? WHERE agent_id = ? AND block = ?",
                (
                    last[1] + np.asarray(ids[:take], dtype=np.int64).tobytes(),
                    np.hstack([_block_codes(last[2], len(have)), codes[:, :take]]).tobytes(),
                    agent_id,
                    last[0],
                ),
            )
            out += [last[0]] * take
            done = take
    block = -1 if last is None else last[0]
    while done < len(ids):
        block += 1
        take = min(BLOCK, len(ids) - done)
        conn.exec_driver_sql(
            f"INSERT INTO {name}_bits (agent_id, block, ids, codes) VALUES (?, ?, ?, ?)",
            (
                agent_id,
                block,
                np.asarray(ids[done : done + take], dtype=np.int64).tobytes(),
                np.ascontiguousarray(codes[:, done : done + take]).tobytes(),
            ),
        )
        out += [block] * take
        done += take
    return out


def _drop_codes(conn: Connection, name: str, agent_id: str, block: int, gone: set[int]) -> None:
    import numpy as np

    row = conn.exec_driver_sql(
        f"SELECT ids, codes FROM {name}_bits WHERE agent_id = ? AND block = ?", (agent_id, block)
    ).first()
    if row is None:
        return
    ids = np.frombuffer(row[0], dtype=np.int64)
    keep = ~np.isin(ids, list(gone))
    if not keep.any():
        conn.exec_driver_sql(
            f"DELETE FROM {name}_bits WHERE agent_id = ? AND block = ?", (agent_id, block)
        )
        return
    codes = _block_codes(row[1], len(ids))[:, keep]
    conn.exec_driver_sql(
        f"UPDATE {name}_bits SET ids = ?, codes = ? WHERE agent_id = ? AND block = ?",
        (ids[keep].tobytes(), np.ascontiguousarray(codes).tobytes(), agent_id, block),
    )


def _block_codes(blob: bytes, n: int) -> np.ndarray:
    import numpy as np

    return np.frombuffer(blob, dtype=np.uint64).reshape(-1, n)


def _sqlite_search(
    conn: Connection, name: str, agent_id: str, query: Any, k: int
) -> list[tuple[int, float]]:
    import numpy as np

    q = np.asarray(query, dtype=np.float32).reshape(-1)
    if k <= 0:
        return []
    code = binary_codes(q[None, :])
    ids: list[np.ndarray] = []
    distance: list[np.ndarray] = []
    blocks = conn.exec_driver_sql(
        f"SELECT ids, codes FROM {name}_bits WHERE agent_id = ?", (agent_id,)
    )
    for id_blob, code_blob in blocks:  # one block at a time, while it is in cache
        ids.append(np.frombuffer(id_blob, dtype=np.int64))
        distance.append(hamming(_block_codes(code_blob, len(ids[-1])), code))
    total = sum(len(i) for i in ids)
    if total == 0:
        return []
    want = candidates(k, total)
    if total <= max(want, EXACT_UP_TO):  # every vector rescored: exact
        rows = conn.exec_driver_sql(
            f"SELECT passage_id, embedding FROM {name} WHERE agent_id = ?", (agent_id,)
        ).fetchall()
    else:
        nearest = np.concatenate(ids)[nearest_codes(np.concatenate(distance), want)]
        rows = []
        for lo in range(0, len(nearest), 500):  # SQLite before 3.32 takes 999 parameters
            part = nearest[lo : lo + 500].tolist()
            marks = ", ".join("?" * len(part))
            rows += conn.exec_driver_sql(
                f"SELECT passage_id, embedding FROM {name} WHERE passage_id IN ({marks})",
                tuple(part),
            ).fetchall()
    if not rows:
        return []
    found = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(q))
    distances = 1.0 - (matrix @ q) / np.maximum(norms, 1e-12)
    order = np.lexsort((found, distances))[:k]  # ties: lower id first
    return [(int(found[i]), float(distances[i])) for i in order]
