"""PostgreSQL's archival search: pgvector's HNSW index, its settings and the query.

`vectors.py` owns the tables on both engines; this module is the PostgreSQL
side of a search:

- the index: HNSW over the vectors cast to half precision (`halfvec`), while
  the table keeps them exact. Half the bytes per vector: the graph of 1M
  384-d passages is 1.3 GB instead of 2 GB of shared_buffers, and searches
  were no worse (1M, ef_construction 128, ef_search 400 / 500: recall@10
  0.954 / 0.969 at p50 8.9 / 11.0 ms; full precision 0.941 / 0.966 at 11.1 /
  11.8 ms, in the next run). Searches rank through it and report the exact
  cosine distance of what they return;
- `ef_search`, chosen from the table's size;
- the statement: one per search, written once per table as SQL, with the
  query vector as a binary parameter. The client's share of a search is then
  about 0.7 ms of CPU, against 3 ms to build a SQLAlchemy statement and
  format 384 floats as text (benchmarks/archival_scale.py, `cpu p50`).

It leaves out index creation and rebuilding (`vectors.py`, migrations 0005 and
0007) and SQLite, which has no HNSW.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

from sqlalchemy import Index, cast

if TYPE_CHECKING:
    from sqlalchemy import Connection, Table

# HNSW: denser than pgvector's default graph (m 16, ef_construction 64), which
# needed ef_search 1000 for recall@10 0.95 at 1M (60 ms). On clustered data a
# search can land in the wrong cluster and find none of its ten: a graph built
# with a wider search (ef_construction) links the clusters better. Measured
# (one agent of 1M, half precision, the graph in shared_buffers, 2 cores,
# 1,000 queries, both graphs in one run): ef_construction 128, ef_search 200 /
# 300 / 400: recall@10 0.920 / 0.941 / 0.953 (39 / 27 / 19 queries finding
# none); 256: 0.967 / 0.980 / 0.989 (19 / 11 / 6), at the same server time
# (5-8 ms). The price is at insert: about twice the work of 128, and the 1M
# graph took 28 minutes to build on 2 cores (128: 21.5).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 256
# Tables (all agents of a dimension share one) of at most SMALL_TABLE vectors
# use SMALL_EF, others EF_SEARCH; LLMOS_HNSW_EF_SEARCH overrides both.
EF_SEARCH = 300
SMALL_TABLE = 100_000
SMALL_EF = 100

_DUMPER = "llmos.hnsw.dumper"  # key in a pooled connection's info: the dumper is registered


def ef_search(rows: int | None = None) -> int:
    """HNSW's search breadth (more: better recall, slower): LLMOS_HNSW_EF_SEARCH, else
    SMALL_EF for a table known to hold at most SMALL_TABLE vectors, else EF_SEARCH."""
    default = SMALL_EF if rows is not None and 0 <= rows <= SMALL_TABLE else EF_SEARCH
    try:
        return max(10, int(os.environ.get("LLMOS_HNSW_EF_SEARCH", str(default))))
    except ValueError:
        return default


def add_index(table: Table, dim: int) -> Index:
    """`table`'s HNSW index: over its vectors cast to half precision (halfvec)."""
    from pgvector.sqlalchemy import HALFVEC

    return Index(
        f"ix_{table.name}_hnsw",
        cast(table.c.embedding, HALFVEC(dim)).label("half"),
        postgresql_using="hnsw",
        postgresql_with={"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION},
        postgresql_ops={"half": "halfvec_cosine_ops"},
    )


@functools.cache
def search_sql(table: str, dim: int) -> str:
    """The search of `table` (a `passages_vec_{dim}` name, never user text).

    It sets ef_search and the iterative scan itself, LATERAL to their row so
    they are set before the scan: reads run in autocommit, where a setting local
    to a transaction lasts only the statement that made it. The iterative scan
    goes on until `k` rows of this agent are found."""
    return (
        "SELECT nearest.passage_id, nearest.distance FROM ("
        "SELECT set_config('hnsw.ef_search', %(ef)s, true) AS ef, "
        "set_config('hnsw.iterative_scan', 'strict_order', true) AS scan) AS settings "
        "JOIN LATERAL ("
        f"SELECT passage_id, embedding <=> %(query)b AS distance FROM {table} "
        "WHERE agent_id = %(agent)s AND settings.ef IS NOT NULL "
        f"ORDER BY embedding::halfvec({dim}) <=> %(query)b::halfvec({dim}) LIMIT %(k)s"
        ") AS nearest ON true ORDER BY nearest.distance"
    )


def search(
    conn: Connection, table: str, dim: int, rows: int | None, agent_id: str, query: Any, k: int
) -> list[tuple[int, float]]:
    """(id, cosine distance) of the agent's `k` vectors in `table` nearest to `query`."""
    from pgvector import Vector

    _send_vectors_in_binary(conn)
    ef = min(1000, max(ef_search(rows), 2 * k))
    params = {"ef": str(ef), "query": Vector(query), "agent": agent_id, "k": k}
    found = conn.exec_driver_sql(search_sql(table, dim), params).fetchall()
    return [(int(r[0]), float(r[1])) for r in found]


def _send_vectors_in_binary(conn: Connection) -> None:
    """Teach this pooled connection (once) to send a `pgvector.Vector` parameter in
    pgvector's binary form: 1.5 KB of floats instead of ~4 KB of text to format
    and parse. Only parameters of that class change; results are read as before."""
    pooled = conn.connection
    if pooled.info.get(_DUMPER):
        return
    from pgvector import Vector
    from pgvector.psycopg.vector import VectorBinaryDumper

    oid = conn.exec_driver_sql("SELECT 'vector'::regtype::oid").scalar_one()
    dumper = type("VectorParameter", (VectorBinaryDumper,), {"oid": oid})
    pooled.driver_connection.adapters.register_dumper(Vector, dumper)
    pooled.info[_DUMPER] = True
