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

Second part, fairness (issue 11 measured 30 tool registrations by one user
stalling another user's archival search 14.8 s): a real server on loopback
(uvicorn in a thread, scripted core, a hash embedder); user A posts FLOOD
tool registrations at once while user B searches archival memory every
100 ms; reported: B's search latency (p50, max) and A's statuses, for the
server as it is and for the server without its per-user work limit and with
the sandbox's runs on the event loop's shared threads (issue 11's state).

    PYTHONPATH=src python benchmarks/sandbox.py --flood 30 [--calls 0]

Writes benchmarks/results/sandbox.json (the parts run). Left out: a tool
that imports heavy packages (both backends pay the same imports; the
difference is the namespaces' set-up and tear-down).
"""

from __future__ import annotations

import argparse
import json
import os
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
sys.path.insert(0, str(ROOT))  # tests/fakes: the stand-in embedder

from tests.fakes.embedders import HashEmbedder  # noqa: E402

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
    parser.add_argument("--calls", type=int, default=200, help="calls per backend (0: skip)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--flood", type=int, default=0, help="registrations of the flood (0: skip)")
    args = parser.parse_args()
    missing = bwrap.missing()
    if missing is not None:
        sys.exit(f"no bubblewrap here: {missing}")
    out: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpus": _cpus()}}
    out["load_average_1min_at_start"] = round(os.getloadavg()[0], 1)
    if RESULTS.exists():
        out = json.loads(RESULTS.read_text()) | out
    if args.calls:
        out |= _per_call(args.calls, args.warmup)
    if args.flood:
        out["flood"] = {
            "registrations": args.flood,
            "as_is": _flood(args.flood, fair=True),
            "issue_11_state": _flood(args.flood, fair=False),
        }
        print(f"{'server':<16} {'B search p50':>13} {'B max':>9}   A's statuses")
        for name in ("as_is", "issue_11_state"):
            row = out["flood"][name]
            print(
                f"{name:<16} {row['search_p50_ms']:>11.1f}ms {row['search_max_ms']:>7.0f}ms"
                f"   {row['statuses']}"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")


def _flood(n: int, *, fair: bool) -> dict[str, Any]:
    """B's search latency while A registers `n` tools at once, on a fresh server."""
    import tempfile
    import threading

    import httpx
    import uvicorn

    from llmos import Kernel
    from llmos.access.policy import AccessManager
    from llmos.llm.replay import ScriptedCore, call
    from llmos.server.app import create_app
    from llmos.server.deps import ServerConfig

    pool = sandbox._POOL
    if not fair:  # issue 11's state: sandbox runs on the loop's shared threads
        sandbox._POOL = None  # type: ignore[assignment]
    home = tempfile.mkdtemp(prefix="llmos-bench-flood-")
    kernel = Kernel.open(home, embedders={"test/hash": HashEmbedder()})
    core = ScriptedCore(lambda _r: call("send_message", message="ok"), name="scripted/echo")
    kernel.add_core(core, model="scripted/echo")
    access = AccessManager(kernel.db)
    keys = {name: access.create_user(name)[1] for name in ("a", "b")}
    config = ServerConfig(
        models=("scripted/*",),
        default_model="scripted/echo",
        default_embedder="test/hash",
        rate=1000,
        burst=10_000,
        **({} if fair else {"work_running": 10**6, "work_waiting": 0}),
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(kernel, config), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    def client(user: str) -> httpx.Client:
        return httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {keys[user]}"}, timeout=300
        )

    with client("b") as b:
        b.post("/v1/agents", json={"name": "b", "model": "scripted/echo"}).raise_for_status()
        b.post("/v1/agents/b/archival", json={"texts": ["the cat sat"]}).raise_for_status()
    statuses: list[int] = []

    def register(i: int) -> None:
        src = TOOL.replace("def tool", f"def tool_{i}")
        with client("a") as a:
            statuses.append(a.post("/v1/tools", json={"source": src}).status_code)

    try:
        flood = [threading.Thread(target=register, args=(i,)) for i in range(n)]
        for t in flood:
            t.start()
        time.sleep(0.3)
        ms: list[float] = []
        with client("b") as b:
            while any(t.is_alive() for t in flood):
                t0 = time.perf_counter()
                b.get("/v1/agents/b/archival/search", params={"query": "cat"}).raise_for_status()
                ms.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.1)
        for t in flood:
            t.join()
    finally:
        sandbox._POOL = pool
        server.should_exit = True
        thread.join(30)
    counts = {str(code): statuses.count(code) for code in sorted(set(statuses))}
    return {
        "search_p50_ms": round(statistics.median(ms), 1) if ms else None,
        "search_max_ms": round(max(ms), 1) if ms else None,
        "searches": len(ms),
        "statuses": counts,
    }


def _per_call(calls: int, warmup: int) -> dict[str, Any]:
    path = bwrap.binary()
    assert path is not None
    backends: dict[str, sandbox.Sandbox] = {
        "subprocess": sandbox.PlainProcess(),
        "bubblewrap": bwrap.Bubblewrap(path),
    }
    limits = sandbox.Limits()
    times: dict[str, list[float]] = {name: [] for name in backends}
    for i in range(warmup + calls):
        for name, backend in backends.items():
            t0 = time.perf_counter()
            r = sandbox.call(TOOL, "tool", {"a": i, "b": 1}, limits, backend)
            elapsed = (time.perf_counter() - t0) * 1000
            if not r.ok or r.result != i + 1:
                sys.exit(f"{name}: the call failed: {r.error}")
            if i >= warmup:
                times[name].append(elapsed)
    rows = {name: _summary(ms) for name, ms in times.items()}
    overhead = round(rows["bubblewrap"]["p50_ms"] - rows["subprocess"]["p50_ms"], 2)
    print(f"{'backend':<12} {'p50':>9} {'p90':>9} {'p99':>9} {'mean':>9}   ({calls} calls)")
    for name, row in rows.items():
        cells = " ".join(f"{row[k]:>7.1f}ms" for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"))
        print(f"{name:<12} {cells}")
    print(f"bubblewrap costs {overhead:+.1f} ms at p50 over the plain subprocess (target < 50)")
    return {
        "calls": calls,
        "backends": rows,
        "bubblewrap_overhead_p50_ms": overhead,
        "target_overhead_p50_ms": 50,
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
