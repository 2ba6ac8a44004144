"""Two checkouts of llmos, one benchmark, side by side: did a change move the figures?

Runs a benchmark script of each checkout (its own script, on its own source
tree: `PYTHONPATH=<tree>/src`) in alternation, `--rounds` times, so both see
the same machine load, then prints the median of each figure per checkout
and their ratio (after / before). Figures are read from the JSON the
benchmark writes, by dotted path (`steps.0.median_ms_per_step`).

Built for a refactor that must not change behaviour (issue 10): the turn
overhead and concurrency benchmarks before and after, in one run.

    python benchmarks/compare_revisions.py --before ../old-checkout --after . \\
        --rounds 3 turn_overhead

What it leaves out: installing anything (both trees run on this interpreter
and its packages), and restoring the results files the runs overwrite in each
tree (`git checkout benchmarks/results` does that).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# benchmark -> (arguments, results file, {label: dotted path in its JSON})
BENCHMARKS: dict[str, tuple[list[str], str, dict[str, str]]] = {
    "turn_overhead": (
        ["--no-startup"],
        "turn_overhead.json",
        {
            "plain ms/step (median)": "steps.0.median_ms_per_step",
            "plain CPU ms/step": "steps.0.median_cpu_ms_per_step",
            "edit ms/step (median)": "steps.1.median_ms_per_step",
            "edit CPU ms/step": "steps.1.median_cpu_ms_per_step",
            "SQL statements/step (plain)": "steps.0.sql_statements_per_step",
            "peak MiB": "peak_rss_mib",
        },
    ),
    "concurrency": (
        ["--in-process"],
        "concurrency_kernel.json",
        {
            "wall / ideal": "ratio_to_ideal",
            "kernel CPU ms/turn": "kernel_cpu_ms_per_turn",
            "p50 turn s": "p50_turn_s",
            "peak MiB": "peak_rss_mib",
            "errors": "errors",
        },
    ),
    "concurrency_scripted": (
        ["--in-process", "--backend", "scripted"],
        "concurrency_scripted.json",
        {
            "wall / ideal": "ratio_to_ideal",
            "kernel CPU ms/turn": "kernel_cpu_ms_per_turn",
            "peak MiB": "peak_rss_mib",
            "errors": "errors",
        },
    ),
}


def pick(data: Any, path: str) -> float:
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return float(data)


def run_once(tree: Path, name: str) -> dict[str, float]:
    args, result, fields = BENCHMARKS[name]
    script = "concurrency.py" if name.startswith("concurrency") else f"{name}.py"
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    subprocess.run(
        [sys.executable, str(tree / "benchmarks" / script), *args],
        cwd=tree,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    data = json.loads((tree / "benchmarks" / "results" / result).read_text())
    return {label: pick(data, path) for label, path in fields.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmarks", nargs="+", choices=sorted(BENCHMARKS))
    parser.add_argument("--before", type=Path, required=True, help="the older checkout")
    parser.add_argument("--after", type=Path, default=Path("."), help="the newer checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/compare.json"))
    opts = parser.parse_args()
    trees = {"before": opts.before.resolve(), "after": opts.after.resolve()}
    report: dict[str, Any] = {
        "benchmark": "compare_revisions",
        "command": "python benchmarks/compare_revisions.py " + " ".join(sys.argv[1:]),
        "trees": {k: str(v) for k, v in trees.items()},
        "rounds": opts.rounds,
        "load_average_before": os.getloadavg(),
        "results": {},
    }
    console = Console()
    for name in opts.benchmarks:
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for i in range(opts.rounds):
            for side in ("before", "after") if i % 2 == 0 else ("after", "before"):
                console.print(f"[dim]{name}: round {i + 1}, {side}[/dim]")
                runs[side].append(run_once(trees[side], name))
        table = Table(title=f"{name}: median of {opts.rounds} alternating runs")
        for col in ("figure", "before", "after", "after / before"):
            table.add_column(col, justify="left" if col == "figure" else "right")
        rows = {}
        for label in BENCHMARKS[name][2]:
            b = statistics.median(r[label] for r in runs["before"])
            a = statistics.median(r[label] for r in runs["after"])
            ratio = a / b if b else None
            rows[label] = {
                "before": b,
                "after": a,
                "ratio": ratio,
                "runs": {side: [r[label] for r in runs[side]] for side in runs},
            }
            table.add_row(label, f"{b:.3g}", f"{a:.3g}", "-" if ratio is None else f"{ratio:.2f}")
        console.print(table)
        report["results"][name] = rows
    report["load_average_after"] = os.getloadavg()
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {opts.json}")


if __name__ == "__main__":
    main()
