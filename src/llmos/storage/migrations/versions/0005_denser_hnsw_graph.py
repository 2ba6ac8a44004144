"""PostgreSQL archival vectors get a denser HNSW graph (m 32, ef_construction 128).

With pgvector's default graph (m 16, ef_construction 64) an agent of 1M
passages needed `ef_search` 1,000 for recall@10 0.95 (60 ms a search); the
denser graph passes it at 500 (0.966, 15 ms; see `storage/vectors.py`). Each
`passages_vec_{dim}` table's index takes the new settings and is rebuilt.

The rebuild reads every vector of the table and blocks writes to it while it
runs: seconds for thousands of vectors, about 45 minutes for a million on
two cores. An operator who cannot stop writes that long runs the same
`ALTER INDEX ... SET (m = 32, ef_construction = 128)` and then
`REINDEX INDEX CONCURRENTLY` before upgrading; this revision then finds the
index done and leaves it. SQLite: nothing changes (no HNSW there).

Revision ID: 0005
Revises: 0004
Created: 2026-12-01
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _rebuild(m: int, ef_construction: int) -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    want = sorted([f"m={m}", f"ef_construction={ef_construction}"])
    indexes = conn.execute(
        text(
            "SELECT c.relname, c.reloptions FROM pg_class c "
            "JOIN pg_index i ON i.indexrelid = c.oid "
            "WHERE c.relkind = 'i' AND c.relname ~ '^ix_passages_vec_[0-9]+_hnsw$' "
            "AND pg_catalog.pg_table_is_visible(c.oid)"
        )
    ).all()
    for name, options in indexes:
        if sorted(options or []) == want:
            continue  # rebuilt beforehand (see the module docstring)
        conn.exec_driver_sql(
            f"ALTER INDEX {name} SET (m = {m}, ef_construction = {ef_construction})"
        )
        conn.exec_driver_sql(f"REINDEX INDEX {name}")


def upgrade() -> None:
    _rebuild(32, 128)


def downgrade() -> None:
    _rebuild(16, 64)
