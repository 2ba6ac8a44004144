"""Archival storage: an agent's unbounded store of passages, searched by meaning and words.

Each passage's text goes to the `passages` table (with a full-text index,
`storage/search.py`) and its embedding to the vector table of its dimension
(`storage/vectors.py`: binary codes with a float rescoring pass on SQLite,
pgvector with HNSW on PostgreSQL). A search runs
both retrievers and fuses their rankings with reciprocal rank fusion (RRF):
semantic matches and exact keyword matches (names, numbers, codes that
sentence embeddings blur) both surface, with no score calibration needed.
Keyword matches ignore stopwords, and a passage far from the query in meaning
(under its embedder's `RELEVANCE_FLOORS`) that shares no word with it is not
returned at all.

Vector search is approximate for large agents on both engines (recall@10
at least 0.95; benchmarks/archival_scale.py). Re-embedding under a new
embedder is `texts_after` + `replace_vectors`, driven by `Kernel.set_embedder`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, select, update

from llmos.storage.models import passages
from llmos.storage.search import keyword_ids

if TYPE_CHECKING:
    import numpy as np

    from llmos.memory.embedders import Embedder
    from llmos.storage.db import Database


#: RRF's damping constant (Cormack et al. 2009): ranks beyond ~60 barely count.
RRF_K = 60

#: Per embedder, the cosine similarity below which a passage that shares no word
#: with the query is not an answer. all-MiniLM-L6-v2 on `llmos eval archival`:
#: answering passages scored 0.15-0.78, the nearest non-answers up to 0.36;
#: 0.1 keeps every answer and drops what is unrelated. Embedders not listed
#: (no measurement yet) keep every passage.
RELEVANCE_FLOORS: dict[str, float] = {"local/all-MiniLM-L6-v2": 0.1}


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
        if len(vectors) != len(texts):
            raise ValueError(f"{len(texts)} passages but {len(vectors)} vectors")
        now = time.time()
        rows = [
            {"agent_id": agent_id, "text": t, "source": source, "created_at": now} for t in texts
        ]
        # One statement for the batch, ids back in the order given.
        returning = passages.insert().returning(passages.c.id, sort_by_parameter_order=True)
        ids = [r[0] for r in conn.execute(returning, rows)]
        self.db.vectors.insert(conn, agent_id, embedder.dim, ids, vectors)
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
            self.db.vectors.delete(conn, passage_id)
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
        self.db.vectors.delete(conn, passage_id)
        self.db.vectors.insert(conn, agent_id, embedder.dim, [passage_id], [vector])
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
        self.db.vectors.delete_agent(conn, agent_id, also=dim)
        self.db.vectors.insert(conn, agent_id, dim, ids, vectors)

    def delete_agent(self, conn: Connection, agent_id: str) -> None:
        self.db.vectors.delete_agent(conn, agent_id)

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
        nearest = self.db.vectors.search(conn, agent_id, embedder.dim, query_vector, depth)
        # Passages too far from the query in meaning are left out, unless they
        # share a word with it: a search answers with what is relevant, not all.
        floor = RELEVANCE_FLOORS.get(embedder.name, -1.0)
        for rank, (pid, distance) in enumerate(nearest):
            if 1.0 - distance >= floor:
                fused[pid] = fused.get(pid, 0.0) + 1.0 / (RRF_K + rank + 1)
        for rank, pid in enumerate(keyword_ids(conn, "passages", agent_id, query, limit=depth)):
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
