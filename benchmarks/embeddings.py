"""How fast llmos's numpy all-MiniLM-L6-v2 embeds passages on this machine.

    python benchmarks/embeddings.py [--passages 500] [--words 60] [--batch-size 32]
                                    [--workers N] [--blas-threads N (0: numpy's default)]

Embeds synthetic ~60-word passages (fixed seed, so runs are comparable) with
MiniLMEmbedder, prints a small table and writes benchmarks/results/embeddings.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from llmos.memory.embedders import MiniLMEmbedder

_VOCABULARY = (
    "agent memory context window page archival recall search kernel process schedule "
    "message user assistant remember sister birthday project deadline meeting coffee "
    "the a of to and in is that it for on with as was at by an be this from or have "
    "python database vector token summary conversation earlier topic moved yesterday "
    "tomorrow because however although quickly carefully important note travel Paris"
)
WORDS = _VOCABULARY.split()


def passages(count: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(words - 10, words + 10))) + "."
        for _ in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=500)
    parser.add_argument("--words", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="default: one per CPU, max 4")
    parser.add_argument(
        "--blas-threads", type=int, default=1, help="0: leave numpy's BLAS threading alone"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "embeddings.json"
    )
    args = parser.parse_args()

    texts = passages(args.passages, args.words)
    t0 = time.perf_counter()
    embedder = MiniLMEmbedder(
        batch_size=args.batch_size, workers=args.workers, blas_threads=args.blas_threads or None
    )
    embedder.load()
    load_s = time.perf_counter() - t0
    tokens = sum(len(ids) for ids in embedder.tokenize(texts))

    embedder.embed(texts[:4])  # first-call costs (page faults, BLAS thread start) off the clock
    t0 = time.perf_counter()
    vectors = embedder.embed(texts)
    total_s = time.perf_counter() - t0
    assert vectors.shape == (len(texts), embedder.dim)

    query_ms = []
    for i in range(20):
        t1 = time.perf_counter()
        embedder.embed([f"what did I say about the {WORDS[i]} last week?"])
        query_ms.append((time.perf_counter() - t1) * 1000)

    result = {
        "command": " ".join(["python", "benchmarks/embeddings.py", *sys.argv[1:]]),
        "embedder": embedder.name,
        "passages": len(texts),
        "mean_tokens": round(tokens / len(texts), 1),
        "batch_size": args.batch_size,
        "workers": embedder.workers,
        "blas_threads": embedder.blas_threads,
        "load_s": round(load_s, 3),
        "total_s": round(total_s, 3),
        "passages_per_s": round(len(texts) / total_s, 1),
        "ms_per_passage": round(total_s * 1000 / len(texts), 2),
        "tokens_per_s": round(tokens / total_s),
        "single_query_ms_median": round(statistics.median(query_ms), 2),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        },
    }
    rows = [
        ("passages", f"{len(texts)} (~{result['mean_tokens']} tokens each)"),
        ("load time", f"{load_s:.2f} s"),
        ("throughput", f"{result['passages_per_s']} passages/s ({result['tokens_per_s']} tok/s)"),
        ("per passage", f"{result['ms_per_passage']} ms"),
        ("single query", f"{result['single_query_ms_median']} ms (median of 20)"),
        ("load average", f"{result['machine']['load_avg_1m']} on {os.cpu_count()} cpus"),
    ]
    for label, value in rows:
        print(f"{label:<14} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
