"""`llmos send` latency: a client of the warm kernel service against a kernel in the command.

What it measures, side by side in one run (each figure the median of N fresh
`llmos` processes, default 10, run alternately so load on the machine hits
both alike), against a `FakeOpenAIServer` on loopback that answers at once:

1. warm: `llmos send A "hi"` with the local kernel service already up
   (the launcher's plain send: a standard-library client on the service's
   Unix socket), and the same through the typer app (`llmos --home H send`,
   as any command with an option runs);
2. no-daemon: `llmos --no-daemon send A "hi"` (the kernel boots in the
   command, as every command did before the service);
3. cold: the first command on a machine with no service (a fresh home each
   time, agent created through the HTTP API of an in-process kernel first):
   `llmos send` including starting the service, against the same first
   command with `--no-daemon`.

Each row also gives the command's own CPU time (user + system of its
process, not the service's), which load on the machine barely changes. Also:
the imports alone, of the launcher's plain send and of the typer app
(`python -c "import llmos.cli.main"`), and the bare interpreter, as a floor.
Targets: warm under 0.25 s whole command; cold no slower than in-process.
The load average is recorded because other work on the machine skews every
number.

Left out: the embedded model (its time per token and prompt evaluation) and
time to first token, which depend on the cores' streaming.

Run: python benchmarks/cli_latency.py [--runs N]
Writes benchmarks/results/cli_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

from llmos.client.local import Paths, stop  # noqa: E402

# `python -m llmos` runs what the `llmos` executable runs (llmos.cli.launch)
LLMOS = [sys.executable, "-m", "llmos"]
FAST_IMPORTS = "import llmos.cli.launch, llmos.cli.sending, llmos.client.local"


def _policy(request: dict[str, Any]) -> Any:
    return {"tool_calls": [{"name": "send_message", "arguments": {"message": "ok"}}]}


def _env(home: Path, server: FakeOpenAIServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOS_")}
    env.update(
        LLMOS_HOME=str(home),
        OPENAI_API_KEY="bench",
        LLMOS_EMBEDDING_BASE_URL=server.base_url,
        LLMOS_EMBEDDING_API_KEY="bench",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p),
    )
    return env


WALL: dict[str, list[float]] = {}
CPU: dict[str, list[float]] = {}


def _timed(cmd: list[str], env: dict[str, str], key: str | None = None) -> float:
    """Wall seconds of the command; its CPU seconds (user + system, the command's own
    process: not the service's) go to CPU[key]."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[2:])} failed: {done.stderr.strip()[:300]}")
    if key:
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        CPU.setdefault(key, []).append(cpu)
        WALL.setdefault(key, []).append(took)
    return took


def _create(env: dict[str, str], server: FakeOpenAIServer, *flags: str) -> None:
    cmd = [*LLMOS, *flags, "agent", "create", "a", "--model", "openai/fake", "--base-url",
           server.base_url, "--context-window", "8192",
           "--embedder", "openai/text-embedding-3-small"]  # fmt: skip
    _timed(cmd, env)


def _stats(xs: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(xs), 4),
        "min_s": round(min(xs), 4),
        "max_s": round(max(xs), 4),
        "n": len(xs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with FakeOpenAIServer(policy=_policy) as server, tempfile.TemporaryDirectory() as tmp:
        warm_home = Path(tmp) / "warm"
        env = _env(warm_home, server)
        _create(env, server)  # starts the service
        _timed([*LLMOS, "send", "a", "warm-up"], env)
        try:
            for i in range(args.runs):
                _timed([sys.executable, "-c", "pass"], env, "bare")
                _timed([sys.executable, "-c", FAST_IMPORTS], env, "fast_imports")
                _timed([sys.executable, "-c", "import llmos.cli.main"], env, "imports")
                _timed([*LLMOS, "send", "a", "hi"], env, "warm")
                # a global option sends the command through the typer app
                _timed([*LLMOS, "--home", str(warm_home), "send", "a", "hi"], env, "warm_typer")
                _timed([*LLMOS, "--no-daemon", "send", "a", "hi"], env, "no_daemon")
                cold = Path(tmp) / f"cold{i}"
                cold_env = _env(cold, server)
                _create(cold_env, server, "--no-daemon")
                _timed([*LLMOS, "--no-daemon", "send", "a", "hi"], cold_env, "cold_no_daemon")
                _timed([*LLMOS, "send", "a", "hi"], cold_env, "cold_service")
                stop(Paths(cold))
        finally:
            stop(Paths(warm_home))
            for i in range(args.runs):
                stop(Paths(Path(tmp) / f"cold{i}"))
    result = {
        "figures": {k: _stats(v) for k, v in WALL.items()},
        # load-independent: the command's own CPU (the service's is not counted)
        "cpu_median_s": {k: round(statistics.median(v), 4) for k, v in CPU.items()},
        "targets": {"warm_median_s": 0.25, "cold_service_vs_cold_no_daemon": "<= 1.0x"},
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    f = result["figures"]
    result["warm_speedup_vs_no_daemon"] = round(
        f["no_daemon"]["median_s"] / f["warm"]["median_s"], 2
    )
    result["cold_ratio_service_vs_no_daemon"] = round(
        f["cold_service"]["median_s"] / f["cold_no_daemon"]["median_s"], 2
    )
    print(f"{'what':<44}{'median s':>10}{'min s':>9}{'max s':>9}{'cpu s':>8}")
    labels = {
        "bare": "python -c pass (floor)",
        "fast_imports": "imports of the launcher's plain send",
        "imports": "import llmos.cli.main (the typer app)",
        "warm": "llmos send, warm service",
        "warm_typer": "llmos --home H send (typer), warm service",
        "no_daemon": "llmos --no-daemon send",
        "cold_service": "first llmos send, service start included",
        "cold_no_daemon": "first llmos --no-daemon send",
    }
    for key, label in labels.items():
        s = f[key]
        cpu = result["cpu_median_s"].get(key, float("nan"))
        print(f"{label:<44}{s['median_s']:>10.3f}{s['min_s']:>9.3f}{s['max_s']:>9.3f}{cpu:>8.3f}")
    print(f"warm is {result['warm_speedup_vs_no_daemon']}x faster than --no-daemon; cold "
          f"service/in-process = {result['cold_ratio_service_vs_no_daemon']}; "
          f"load average {result['load_average'][0]:.1f}")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "cli_latency.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
