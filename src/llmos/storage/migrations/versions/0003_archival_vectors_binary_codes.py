"""SQLite archival vectors leave sqlite-vec's `vec0` tables for a plain table plus binary codes.

Each `passages_vec_{dim}` `vec0` virtual table (exact search only) becomes
the plain table of `storage/vectors.py` (float32 vectors by passage id) and
`passages_vec_{dim}_bits` (the agents' binary codes in blocks), filled from
the old table: every vector keeps its passage id, agent and value; vectors
whose passage is gone (a `vec0` table has no foreign key) are dropped. The
table and code formats are `vectors.sqlite_ddl` and `vectors.append_codes`
(a later change to either rebuilds the codes in a revision of its own).
PostgreSQL: nothing changes (pgvector with HNSW already).

The conversion reads and writes every vector once, in the upgrade's
transaction: a crash leaves the old tables as they were.

Revision ID: 0003
Revises: 0002
Created: 2026-12-01
"""

from __future__ import annotations

import re
from collections import defaultdict

from alembic import op

from llmos.storage.vectors import BLOCK, append_codes, sqlite_ddl

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BATCH = BLOCK


def _vector_tables(virtual: bool) -> list[tuple[str, int]]:
    rows = op.get_bind().exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name LIKE 'passages_vec_%'"
    )
    out = []
    for name, sql in rows:
        found = re.fullmatch(r"passages_vec_([0-9]+)", name)
        if found and sql.upper().startswith("CREATE VIRTUAL") == virtual:
            out.append((name, int(found.group(1))))
    return out


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    import numpy as np

    for name, dim in _vector_tables(virtual=True):
        new = f"{name}_converting"
        for ddl in sqlite_ddl(dim, name=new):
            conn.exec_driver_sql(ddl)
        # A cursor of its own: the rows stream while the new tables fill.
        reader = conn.connection.driver_connection.cursor()
        reader.execute(f"SELECT rowid, agent_id, embedding FROM {name}")
        while rows := reader.fetchmany(_BATCH):
            ids = [r[0] for r in rows]
            marks = ", ".join("?" * len(ids))
            alive = {
                r[0]
                for r in conn.exec_driver_sql(
                    f"SELECT id FROM passages WHERE id IN ({marks})", tuple(ids)
                )
            }
            by_agent: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
            for pid, agent, blob in rows:
                if pid in alive:
                    by_agent[agent].append((pid, blob))
            for agent, pairs in by_agent.items():
                matrix = np.frombuffer(b"".join(b for _, b in pairs), dtype=np.float32)
                matrix = matrix.reshape(len(pairs), dim)
                blocks = append_codes(conn, new, agent, [p for p, _ in pairs], matrix)
                conn.exec_driver_sql(
                    f"INSERT INTO {new} (passage_id, agent_id, block, embedding) "
                    "VALUES (?, ?, ?, ?)",
                    [(p, agent, b, blob) for (p, blob), b in zip(pairs, blocks, strict=True)],
                )
        reader.close()
        conn.exec_driver_sql(f"DROP TABLE {name}")  # vec0 drops its shadow tables too
        conn.exec_driver_sql(f"DROP INDEX ix_{new}_agent")
        conn.exec_driver_sql(f"ALTER TABLE {new} RENAME TO {name}")
        conn.exec_driver_sql(f"ALTER TABLE {new}_bits RENAME TO {name}_bits")
        conn.exec_driver_sql(f"CREATE INDEX ix_{name}_agent ON {name} (agent_id)")


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    for name, dim in _vector_tables(virtual=False):
        # vec0 tables cannot be renamed (their shadow tables keep the old name):
        # the plain table moves aside and the vec0 table takes its name.
        conn.exec_driver_sql(f"DROP TABLE {name}_bits")
        conn.exec_driver_sql(f"DROP INDEX ix_{name}_agent")
        conn.exec_driver_sql(f"ALTER TABLE {name} RENAME TO {name}_plain")
        conn.exec_driver_sql(
            f"CREATE VIRTUAL TABLE {name} USING vec0(agent_id text partition key, "
            f"embedding float[{dim}] distance_metric=cosine)"
        )
        conn.exec_driver_sql(
            f"INSERT INTO {name} (rowid, agent_id, embedding) "
            f"SELECT passage_id, agent_id, embedding FROM {name}_plain"
        )
        conn.exec_driver_sql(f"DROP TABLE {name}_plain")
