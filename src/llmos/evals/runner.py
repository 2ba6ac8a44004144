"""Running an evaluation: items in order, a progress bar, a resumable state file, a summary.

`run_eval(kernel, task, settings, json_path=...)` runs every item of the task
in each mode ("memory": through an llmos agent; "baseline": plain chat, when
asked; "retrieval" for the archival task, which needs no model) and appends
one JSON line per finished item to the state file beside the JSON
(`results.json` -> `results.state.jsonl`), flushed to disk before the next
item starts. A rerun reads it and skips what is done, so an interrupted run
(Ctrl-C, a model server that went away) resumes where it stopped. The state
file's first line names the run (task, model, data, seed, size): a rerun with
different settings is refused rather than mixed into the old figures.

The summary (written to the JSON and shown as a table) has each metric's mean
per mode, per category where the task has categories, and for the baseline
the mean over the items whose evidence was cut from its prompt (the evicted
facts).

Left out: running items concurrently (one model, scored in order).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmos.errors import InvalidRequest

if TYPE_CHECKING:
    from rich.console import Console

    from llmos.evals.harness import Settings
    from llmos.kernel.kernel import Kernel
    from llmos.llm.core import Core


class EvalStateMismatch(InvalidRequest):
    """The state file beside the JSON belongs to a run with other settings."""

    code = "eval_state_mismatch"


class Task(Protocol):
    name: str
    metrics: tuple[str, ...]  # the first is the headline figure
    modes: tuple[str, ...]  # what --baseline adds to is "memory"; archival has "retrieval"

    def identity(self) -> dict[str, Any]: ...

    def items(self) -> list[Any]: ...

    async def run(
        self, kernel: Kernel, settings: Settings, item: Any, mode: str, judge: Core | None
    ) -> dict[str, Any]: ...


@dataclass(slots=True)
class StateFile:
    """The append-only record of finished items (one JSON object a line)."""

    path: Path

    def load(self, identity: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        if not self.path.exists():
            self._write({"run": identity})
            return {}
        done: dict[tuple[str, str], dict[str, Any]] = {}
        text = self.path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            # a line torn by a crash: end it, so the next record starts on a line of its own
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write("\n")
        lines = text.splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except ValueError:
            header = {}
        if header.get("run") != identity:
            raise EvalStateMismatch(
                f"{self.path} holds results of another run ({_describe(header.get('run'))}); "
                "use another --json path, or delete that file to start over"
            )
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash: that item runs again
            done[(record["mode"], record["id"])] = record
        return done

    def append(self, record: dict[str, Any]) -> None:
        self._write(record)

    def _write(self, obj: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _describe(run: Any) -> str:
    if not isinstance(run, dict):
        return "unreadable header"
    return ", ".join(f"{k}={v}" for k, v in run.items() if k in ("task", "model", "seed", "size"))


def state_path(json_path: Path) -> Path:
    return json_path.with_name(json_path.stem + ".state.jsonl")


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def summarize(task: Task, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode: n, each metric's mean, by category, and (baseline) on evicted facts."""
    out: dict[str, Any] = {}
    for mode in dict.fromkeys(r["mode"] for r in records):  # in the order they ran
        rows = [r for r in records if r["mode"] == mode]
        entry: dict[str, Any] = {
            "n": len(rows),
            "metrics": {
                m: _mean([r[m] for r in rows if r.get(m) is not None]) for m in task.metrics
            },
        }
        cats: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            if r.get("category"):
                cats[str(r["category"])].append(r)
        if len(cats) > 1:
            entry["by_category"] = {
                c: {"n": len(rs), task.metrics[0]: _mean([r[task.metrics[0]] for r in rs])}
                for c, rs in sorted(cats.items())
            }
        evicted = [r for r in rows if r.get("evidence_in_prompt") is False]
        if mode == "baseline" and evicted:
            entry["evicted"] = {
                "n": len(evicted),
                task.metrics[0]: _mean([r[task.metrics[0]] for r in evicted]),
            }
        out[mode] = entry
    return out


async def run_eval(
    kernel: Kernel,
    task: Task,
    settings: Settings,
    *,
    json_path: Path,
    baseline: bool = False,
    judge: Core | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run (or resume) the task; write and return the report."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    identity = {"task": task.name, "model": settings.model, **task.identity()}
    if settings.memory_mode:
        identity["memory_mode"] = settings.memory_mode
    if judge is not None:
        identity["judge"] = judge.name
    if "retrieval" in task.modes:
        from llmos.kernel.agents import default_embedder

        identity["embedder"] = settings.embedder or default_embedder()
    state = StateFile(state_path(json_path))
    done = state.load(identity)
    items = task.items()
    modes = list(task.modes) + (["baseline"] if baseline and "memory" in task.modes else [])
    todo = [(mode, item) for mode in modes for item in items if (mode, item.id) not in done]
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=console is None,
        transient=False,
    )
    with progress:
        bar = progress.add_task(f"{task.name} · {settings.model}", total=len(items) * len(modes))
        progress.advance(bar, len(items) * len(modes) - len(todo))
        for mode, item in todo:
            record = await task.run(kernel, settings, item, mode, judge)
            record = {"mode": mode, "id": item.id, **record}
            state.append(record)
            done[(mode, item.id)] = record
            progress.advance(bar)
    records = [done[(mode, item.id)] for mode in modes for item in items]
    report = {
        "task": task.name,
        "model": settings.model,
        "run": identity,
        "summary": summarize(task, records),
        "items": records,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    return report


def table(report: dict[str, Any], metrics: tuple[str, ...]) -> Any:
    """The report's summary as a rich Table: one row per mode (and category)."""
    from rich.table import Table

    t = Table(title=f"llmos eval {report['task']} · {report['model']}")
    t.add_column("mode")
    t.add_column("items", justify="right")
    for m in metrics:
        t.add_column(m, justify="right")

    def fmt(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}"

    for mode, entry in report["summary"].items():
        t.add_row(mode, str(entry["n"]), *(fmt(entry["metrics"].get(m)) for m in metrics))
        for cat, c in (entry.get("by_category") or {}).items():
            t.add_row(f"  {cat}", str(c["n"]), fmt(c.get(metrics[0])), *[""] * (len(metrics) - 1))
        if ev := entry.get("evicted"):
            t.add_row(
                "  evicted facts", str(ev["n"]), fmt(ev.get(metrics[0])), *[""] * (len(metrics) - 1)
            )
    return t
