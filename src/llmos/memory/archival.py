"""Archival storage: an agent's unbounded store of passages, searched by meaning and words.

Each passage's text goes to the `passages` table (with an FTS5 index) and its
embedding to a sqlite-vec `vec0` table partitioned by agent. A search runs
both retrievers and fuses their rankings with reciprocal rank fusion (RRF):
semantic matches and exact keyword matches (names, numbers, codes that
sentence embeddings blur) both surface, with no score calibration needed.

Left out: Postgres/pgvector (the storage issue), approximate indexes (exact
search is fast enough per agent; see FIELD-NOTES). Re-embedding under a new
embedder is `texts_after` + `replace_vectors`, driven by `Kernel.set_embedder`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, select, text, update

from llmos.memory.recall import fts_query
from llmos.storage.models import passages

if TYPE_CHECKING:
    import numpy as np

    from llmos.memory.embedders import Embedder
    from llmos.storage.db import Database


def _f32(vector: np.ndarray) -> bytes:
    """sqlite-vec's float32 blob for a vector."""
    import numpy as np  # deferred: start-up of commands that never embed stays fast

    return np.asarray(vector, dtype=np.float32).tobytes()


#: RRF's damping constant (Cormack et al. 2009): ranks beyond ~60 barely count.
RRF_K = 60


@dataclass(slots=True)
class Passage:
    id: int
    text: str
    created_at: float
    source: str | None = None
    score: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "created_at": self.created_at,
            "source": self.source,
            "score": round(self.score, 6),
        }


class ArchivalStorage:
    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(
        self,
        conn: Connection,
        agent_id: str,
        embedder: Embedder,
        texts: list[str],
        source: str | None = None,
        vectors: np.ndarray | list[np.ndarray] | None = None,
    ) -> list[int]:
        """Store passages; pass `vectors` when they were computed outside the transaction."""
        if not texts:
            return []
        if vectors is None:
            vectors = embedder.embed(texts)
        table = self.db.vec_table(embedder.dim, conn)
        now = time.time()
        ids: list[int] = []
        for passage_text, vec in zip(texts, vectors, strict=True):
            pid = conn.execute(
                passages.insert().values(
                    agent_id=agent_id, text=passage_text, source=source, created_at=now
                )
            ).inserted_primary_key[0]
            conn.exec_driver_sql(
                f"INSERT INTO {table}(rowid, agent_id, embedding) VALUES (?, ?, ?)",
                (pid, agent_id, _f32(vec)),
            )
            ids.append(pid)
        return ids

    def count(self, conn: Connection, agent_id: str) -> int:
        return conn.execute(
            select(func.count()).select_from(passages).where(passages.c.agent_id == agent_id)
        ).scalar_one()

    def list(
        self, conn: Connection, agent_id: str, offset: int = 0, limit: int = 50
    ) -> list[Passage]:
        rows = conn.execute(
            select(passages)
            .where(passages.c.agent_id == agent_id)
            .order_by(passages.c.id)
            .offset(offset)
            .limit(limit)
        ).fetchall()
        return [Passage(r.id, r.text, r.created_at, r.source) for r in rows]

    def delete(self, conn: Connection, agent_id: str, passage_id: int) -> bool:
        gone = conn.execute(
            delete(passages).where(passages.c.agent_id == agent_id, passages.c.id == passage_id)
        ).rowcount
        if gone:
            for table in self.db.vec_tables():
                conn.exec_driver_sql(f"DELETE FROM {table} WHERE rowid = ?", (passage_id,))
        return bool(gone)

    def get(self, conn: Connection, agent_id: str, passage_id: int) -> Passage | None:
        """One of the agent's passages by id (None: no such passage of this agent)."""
        r = conn.execute(
            select(passages).where(passages.c.agent_id == agent_id, passages.c.id == passage_id)
        ).first()
        return None if r is None else Passage(r.id, r.text, r.created_at, r.source)

    def update(
        self,
        conn: Connection,
        agent_id: str,
        embedder: Embedder,
        passage_id: int,
        passage_text: str,
        source: str | None,
        vector: np.ndarray,
    ) -> bool:
        """Rewrite one passage in place (same id): its text, source and vector.
        False if the agent has no such passage."""
        done = conn.execute(
            update(passages)
            .where(passages.c.agent_id == agent_id, passages.c.id == passage_id)
            .values(text=passage_text, source=source)
        ).rowcount
        if not done:
            return False
        for table in self.db.vec_tables():
            conn.exec_driver_sql(f"DELETE FROM {table} WHERE rowid = ?", (passage_id,))
        table = self.db.vec_table(embedder.dim, conn)
        conn.exec_driver_sql(
            f"INSERT INTO {table}(rowid, agent_id, embedding) VALUES (?, ?, ?)",
            (passage_id, agent_id, _f32(vector)),
        )
        return True

    def texts_after(
        self, conn: Connection, agent_id: str, after_id: int = 0, limit: int = 256
    ) -> list[tuple[int, str]]:
        """(id, text) of the agent's passages with id > `after_id`, oldest first."""
        rows = conn.execute(
            select(passages.c.id, passages.c.text)
            .where(passages.c.agent_id == agent_id, passages.c.id > after_id)
            .order_by(passages.c.id)
            .limit(limit)
        ).fetchall()
        return [(r.id, r.text) for r in rows]

    def replace_vectors(
        self, conn: Connection, agent_id: str, dim: int, ids: list[int], vectors: Any
    ) -> None:
        """Drop all of the agent's vectors (every dimension) and store `vectors` for `ids`.

        Run in one transaction, so a crash leaves either the old index or the new one.
        """
        tables = self.db.vec_tables()
        table = self.db.vec_table(dim, conn)
        for old in {*tables, table}:
            conn.exec_driver_sql(f"DELETE FROM {old} WHERE agent_id = ?", (agent_id,))
        for pid, vec in zip(ids, vectors, strict=True):
            conn.exec_driver_sql(
                f"INSERT INTO {table}(rowid, agent_id, embedding) VALUES (?, ?, ?)",
                (pid, agent_id, _f32(vec)),
            )

    def delete_agent(self, conn: Connection, agent_id: str) -> None:
        for table in self.db.vec_tables():
            conn.exec_driver_sql(f"DELETE FROM {table} WHERE agent_id = ?", (agent_id,))

    def search(
        self,
        conn: Connection,
        agent_id: str,
        embedder: Embedder,
        query: str,
        page: int = 0,
        page_size: int = 5,
        query_vector: np.ndarray | None = None,
    ) -> tuple[list[Passage], int]:
        """Hybrid search: returns (page of passages best first, number of candidates)."""
        depth = max(50, (page + 1) * page_size * 2)
        fused: dict[int, float] = {}

        if query_vector is None:
            query_vector = embedder.embed([query])[0]
        table = self.db.vec_table(embedder.dim, conn)
        vec_rows = conn.exec_driver_sql(
            f"SELECT rowid FROM {table} WHERE embedding MATCH ? AND k = ? AND agent_id = ? "
            "ORDER BY distance",
            (_f32(query_vector), depth, agent_id),
        ).fetchall()
        for rank, (pid,) in enumerate(vec_rows):
            fused[pid] = fused.get(pid, 0.0) + 1.0 / (RRF_K + rank + 1)

        match = fts_query(query)
        if match is not None:
            kw_rows = conn.execute(
                text(
                    "SELECT p.id FROM passages_fts JOIN passages p ON p.id = passages_fts.rowid "
                    "WHERE passages_fts MATCH :q AND p.agent_id = :a "
                    "ORDER BY bm25(passages_fts) LIMIT :n"
                ),
                {"q": match, "a": agent_id, "n": depth},
            ).fetchall()
            for rank, (pid,) in enumerate(kw_rows):
                fused[pid] = fused.get(pid, 0.0) + 1.0 / (RRF_K + rank + 1)

        ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
        window = ranked[page * page_size : (page + 1) * page_size]
        if not window:
            return [], len(ranked)
        ids = [pid for pid, _ in window]
        rows = {
            r.id: r for r in conn.execute(select(passages).where(passages.c.id.in_(ids))).fetchall()
        }
        out = [
            Passage(pid, rows[pid].text, rows[pid].created_at, rows[pid].source, score)
            for pid, score in window
            if pid in rows
        ]
        return out, len(ranked)
