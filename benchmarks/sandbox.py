"""The cost of the OS boundary: one sandboxed tool call, bubblewrap against the plain subprocess.

What it measures: the wall time of `sandbox.call()` (what every user tool call
and every registration costs) for a trivial tool, `def tool(a, b): return a +
b`, on each backend: `subprocess` (the child as a plain subprocess: issue
11's "today's path") and `bubblewrap` (the same child inside bwrap's
namespaces, with the seccomp filter). The backends run in alternation, call
by call, so both see the same machine load; after a warm-up, it reports p50,
p90, p99 and the mean per backend, and the difference of the medians.

Target (issue 11): the boundary costs under 50 ms p50 over today's path.

    PYTHONPATH=src python benchmarks/sandbox.py [--calls 200]

Writes benchmarks/results/sandbox.json. Left out: a tool that imports heavy
packages (both backends pay the same imports; the difference is the
namespaces' set-up and tear-down).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from llmos.tools import sandbox
from llmos.tools.sandbox import bwrap

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sandbox.json"
TOOL = 'def tool(a: int, b: int) -> int:\n    """Add."""\n    return a + b\n'


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p90_ms": round(_pct(ms, 0.90), 2),
        "p99_ms": round(_pct(ms, 0.99), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per backend")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    missing = bwrap.missing()
    if missing is not None:
        sys.exit(f"no bubblewrap here: {missing}")
    path = bwrap.binary()
    assert path is not None
    backends: dict[str, sandbox.Sandbox] = {
        "subprocess": sandbox.PlainProcess(),
        "bubblewrap": bwrap.Bubblewrap(path),
    }
    limits = sandbox.Limits()
    times: dict[str, list[float]] = {name: [] for name in backends}
    for i in range(args.warmup + args.calls):
        for name, backend in backends.items():
            t0 = time.perf_counter()
            r = sandbox.call(TOOL, "tool", {"a": i, "b": 1}, limits, backend)
            elapsed = (time.perf_counter() - t0) * 1000
            if not r.ok or r.result != i + 1:
                sys.exit(f"{name}: the call failed: {r.error}")
            if i >= args.warmup:
                times[name].append(elapsed)
    rows = {name: _summary(ms) for name, ms in times.items()}
    overhead = round(rows["bubblewrap"]["p50_ms"] - rows["subprocess"]["p50_ms"], 2)
    out: dict[str, Any] = {
        "calls": args.calls,
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "backends": rows,
        "bubblewrap_overhead_p50_ms": overhead,
        "target_overhead_p50_ms": 50,
    }
    print(f"{'backend':<12} {'p50':>9} {'p90':>9} {'p99':>9} {'mean':>9}   ({args.calls} calls)")
    for name, row in rows.items():
        cells = " ".join(f"{row[k]:>7.1f}ms" for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"))
        print(f"{name:<12} {cells}")
    print(f"bubblewrap costs {overhead:+.1f} ms at p50 over the plain subprocess (target < 50)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
