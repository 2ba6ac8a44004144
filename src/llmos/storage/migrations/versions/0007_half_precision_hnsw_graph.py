"""PostgreSQL's HNSW graphs: half precision (halfvec), built with ef_construction 256.

An HNSW search reads one vector of the graph for each neighbour it weighs, some
ten thousand at 1M passages. Each `passages_vec_{dim}` table keeps its exact
`vector(dim)` column, and its index `ix_passages_vec_{dim}_hnsw` becomes one
over `embedding::halfvec(dim)`: half the bytes per vector, a graph about
two thirds the size in shared_buffers. Searches rank with it and report the
exact distance (`storage/hnsw.py`). The graph is built with a wider search
(ef_construction 256, m 32 as in 0005), which links clusters of passages
better: at 1M, recall@10 0.98 at ef_search 300, against 0.94 (see hnsw.py).

The rebuild reads every vector of the table and blocks archival inserts while
it runs. An operator who cannot stop writes that long builds the new index
beforehand with `CREATE INDEX CONCURRENTLY ix_new ON passages_vec_384 USING
hnsw ((embedding::halfvec(384)) halfvec_cosine_ops) WITH (m = 32,
ef_construction = 256)`, drops the old one and renames the new one to
`ix_passages_vec_384_hnsw` (one per dimension); this revision then finds the
index done and leaves it. SQLite: nothing changes (no HNSW there).

Revision ID: 0007
Revises: 0006
Created: 2026-12-01
"""

from __future__ import annotations

import re

from alembic import op
from sqlalchemy import text

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _rebuild(half: bool) -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    tables = conn.execute(
        text(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_class c "
            "LEFT JOIN pg_class x ON x.relname = 'ix_' || c.relname || '_hnsw' "
            "AND x.relnamespace = c.relnamespace "
            "LEFT JOIN pg_index i ON i.indexrelid = x.oid "
            "WHERE c.relkind = 'r' AND c.relname ~ '^passages_vec_[0-9]+$' "
            "AND pg_catalog.pg_table_is_visible(c.oid)"
        )
    ).all()
    # downgrade: the graph of 0005 (full precision, ef_construction 128)
    settings = "m = 32, ef_construction = 256" if half else "m = 32, ef_construction = 128"
    for table, definition in tables:
        if definition is not None and _is_wanted(definition, half):
            continue  # done beforehand (see the module docstring)
        dim = int(re.sub(r"^passages_vec_", "", table))
        index = f"ix_{table}_hnsw"
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index}")
        if half:
            what = f"(CAST(embedding AS halfvec({dim})) halfvec_cosine_ops)"
        else:
            what = "(embedding vector_cosine_ops)"
        conn.exec_driver_sql(f"CREATE INDEX {index} ON {table} USING hnsw {what} WITH ({settings})")


def _is_wanted(definition: str, half: bool) -> bool:
    if half:
        return "halfvec_cosine_ops" in definition and "ef_construction='256'" in definition
    return "vector_cosine_ops" in definition


def upgrade() -> None:
    _rebuild(half=True)


def downgrade() -> None:
    _rebuild(half=False)
