"""llmos's own overhead: time per agent step, peak memory, and start-up time.

What it measures.

1. Time per step with a core that answers instantly: an in-process
   `ScriptedCore` whose policy returns a canned function call, so the wall
   time of `kernel.send` is llmos's own work — compiling the window, counting
   tokens, the scheduler, validating and running the function, committing the
   step's messages to SQLite (WAL) — and not a model's. One agent, a warm-up,
   then N turns of each kind:
   * plain: the agent answers with `send_message` (1 step per turn);
   * edit: `core_memory_replace` with `request_heartbeat=true`, then
     `send_message` (2 steps per turn).
   Reported per turn kind: median and p95 of (turn wall time / steps), the
   median of the quietest batch of turns (other work on the machine inflates
   whole stretches), CPU time per step, SQL statements and commits per step
   (load-independent), and the median of the turns that flushed (evicted and
   summarised) memory. The window is 8,192 tokens, so long runs flush now and
   then, as a real agent does.
2. Peak memory (ru_maxrss) of this process after those turns.
3. Start-up, each the median of several fresh processes, with wall and CPU
   time and peak memory: `python -c pass` (the interpreter alone), `import
   llmos` (lazy exports), `from llmos import Kernel`, `import openai` (what an
   openai/ core imports on its first request), and the whole `llmos send
   NAME "hi"` against a `FakeOpenAIServer` on loopback that answers at once
   (the agent was created beforehand in a temporary LLMOS_HOME). If the CLI
   cannot run, that row says why and the rest is still measured.

Targets: under 2 ms median per step; under 1 s for the whole `llmos send`.
Anchors (FIELD-NOTES): MemGPT 0.3.25 spends 24-30 ms of its own time per turn
(p95 38-47), 4.8-5.2 s from process start to a ready agent, 246 MiB peak.

What it leaves out: model time, network, archival memory and its embedder (a
fake embedder is installed), several agents at once (the scheduler), and
disk speed beyond this machine's. The machine's load average is recorded
with the results because other work on a 2-core machine skews every number.

Run: python benchmarks/turn_overhead.py [--quick] [--profile]
Writes benchmarks/results/turn_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.fakes (not part of the installed package)

from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

from llmos import Kernel  # noqa: E402
from llmos.llm.core import ChatRequest, ChatResponse, Message  # noqa: E402
from llmos.llm.replay import ScriptedCore, call, say  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "turn_overhead.json"
PYTHON = sys.executable
LLMOS = str(Path(sys.executable).with_name("llmos"))
TARGET_STEP_MS = 2.0
TARGET_SEND_S = 1.0
ANCHOR = {"ms_per_turn": "24-30", "startup_s": "4.8-5.2", "peak_mib": 246}

USER_TEXT = (
    "I spent most of the weekend on the garden again. The tomatoes are finally "
    "ripening, but something keeps eating the basil. Any idea what it could be, "
    "and what I can do about it without using poison?"
)  # 38 words
REPLY_TEXT = (
    "That sounds like slugs or snails, which love basil and feed at night. Go out "
    "with a torch after dark to check. Copper tape around the pots, a ring of "
    "crushed eggshells, or a shallow beer trap all work without poison. Water in "
    "the morning rather than the evening, so the soil is drier when they come out. "
    "Let me know what you find."
)  # 62 words
THOUGHT = "Gardening question; suggest non-toxic slug control."
COLOURS = ("blue", "green")


def plain_policy(request: ChatRequest) -> ChatResponse:
    if not request.tools:  # a flush's summary request
        return say("The user gardens and asked about pests eating the basil.")
    return call("send_message", thought=THOUGHT, message=REPLY_TEXT, request_heartbeat=False)


class EditPolicy:
    """Edit a block (toggling a word, so it never grows), then answer."""

    def __init__(self) -> None:
        self.edits = 0

    def __call__(self, request: ChatRequest) -> ChatResponse:
        if not request.tools:
            return say("The user gardens and keeps changing their favourite colour.")
        # Look past a memory-pressure alert appended after the last message.
        last = next(m for m in reversed(request.messages) if not _is_alert(m))
        if last.role == "tool":
            return call("send_message", thought=THOUGHT, message=REPLY_TEXT)
        old, new = COLOURS[self.edits % 2], COLOURS[(self.edits + 1) % 2]
        self.edits += 1
        return call(
            "core_memory_replace",
            thought="The user changed their favourite colour; update core memory.",
            label="human",
            old_content=f"Favourite colour: {old}.",
            new_content=f"Favourite colour: {new}.",
            request_heartbeat=True,
        )


def _is_alert(m: Message) -> bool:
    return m.role == "user" and (m.content or "").startswith("[system alert]")


class FakeEmbedder:
    """Archival is not exercised here; this keeps any real embedding model unloaded."""

    name = "fake"
    dim = 8

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), self.dim), dtype=np.float32) / np.sqrt(self.dim)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


# --- 1. time per step ----------------------------------------------------------------


async def time_steps(kind: str, turns: int, warmup: int, batches: int, home: Path) -> dict:
    """Time `turns` turns of one kind on one agent; see the module docstring."""
    from sqlalchemy import event

    policy = plain_policy if kind == "plain" else EditPolicy()
    core = ScriptedCore(policy, context_window=8192, name=f"scripted/{kind}")
    async with Kernel.open(home / kind, embedders={"fake": FakeEmbedder()}) as kernel:
        kernel.add_core(core)
        await kernel.create_agent(
            kind, model=core.name, embedder="fake", human="Favourite colour: blue."
        )
        for _ in range(warmup):
            await kernel.send(kind, USER_TEXT)
        db = {"statements": 0, "commits": 0}  # load-independent: what a step asks of SQLite

        def count(key: str) -> Any:
            return lambda *_: db.__setitem__(key, db[key] + 1)

        event.listen(kernel.db.engine, "before_cursor_execute", count("statements"))
        event.listen(kernel.db.engine, "commit", count("commits"))
        wall: list[float] = []  # ms per step, one entry per turn
        cpu: list[float] = []  # this process's CPU ms per step
        flushed: list[bool] = []
        steps = 0
        for _ in range(turns):
            t0, c0 = time.perf_counter(), time.process_time()
            turn = await kernel.send(kind, USER_TEXT)
            wall.append((time.perf_counter() - t0) * 1000 / turn.steps)
            cpu.append((time.process_time() - c0) * 1000 / turn.steps)
            assert turn.stop_reason == "end_turn", (turn.stop_reason, turn.error)
            steps += turn.steps
            flushed.append(bool(turn.flushes))
    # Other work on the machine inflates whole stretches of turns: the median of
    # the quietest batch is the best estimate of llmos's own cost.
    size = max(1, turns // batches)
    batch_medians = [statistics.median(wall[i : i + size]) for i in range(0, turns, size)]
    plain = [w for w, f in zip(wall, flushed, strict=True) if not f]
    flush = [w for w, f in zip(wall, flushed, strict=True) if f]
    return {
        "kind": kind,
        "turns": turns,
        "steps_per_turn": steps / turns,
        "median_ms_per_step": statistics.median(wall),
        "p95_ms_per_step": _pct(wall, 95),
        "mean_ms_per_step": statistics.fmean(wall),
        "best_batch_median_ms_per_step": min(batch_medians),
        "batch_medians_ms": batch_medians,
        "median_cpu_ms_per_step": statistics.median(cpu),
        "median_ms_per_step_no_flush": statistics.median(plain) if plain else None,
        "flush_turns": len(flush),
        "median_ms_per_step_flush_turns": statistics.median(flush) if flush else None,
        "sql_statements_per_step": db["statements"] / steps,
        "commits_per_step": db["commits"] / steps,
    }


# --- 3. start-up -------------------------------------------------------------------

# Runs one command and reports on it from a minimal interpreter (-S -I), so the
# child's peak RSS is its own and not this process's (a fork's pre-exec pages
# count towards the child's ru_maxrss), and the clock covers only the child.
_SPAWN = """
import json, os, sys, time
out, err, *cmd = sys.argv[1:]
acts = [(os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
        (os.POSIX_SPAWN_OPEN, 2, err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)]
t0 = time.perf_counter()
pid = os.posix_spawn(cmd[0], cmd, os.environ, file_actions=acts)
_, status, ru = os.wait4(pid, 0)
print(json.dumps([time.perf_counter() - t0, os.waitstatus_to_exitcode(status),
                  ru.ru_maxrss / 1024, ru.ru_utime + ru.ru_stime]))
"""


def run_child(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run `cmd` once: seconds, exit code, peak RSS (MiB), CPU seconds, stdout, stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        out, err = f"{tmp}/out", f"{tmp}/err"
        done = subprocess.run(
            [PYTHON, "-S", "-I", "-c", _SPAWN, out, err, *cmd],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        seconds, code, peak, cpu = json.loads(done.stdout)
        return {
            "seconds": seconds, "code": code, "peak_mib": peak, "cpu_s": cpu,
            "stdout": Path(out).read_text(errors="replace"),
            "stderr": Path(err).read_text(errors="replace"),
        }  # fmt: skip


def time_command(label: str, cmd: list[str], env: dict[str, str], runs: int) -> dict[str, Any]:
    results = []
    for _ in range(runs):
        r = run_child(cmd, env)
        if r["code"] != 0:
            lines = r["stderr"].strip().splitlines() or [f"exit code {r['code']}"]
            return {"label": label, "ok": False, "error": lines[-1][:300]}
        results.append(r)
    times = [r["seconds"] for r in results]
    return {
        "label": label,
        "ok": True,
        "runs": runs,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "median_cpu_s": statistics.median(r["cpu_s"] for r in results),
        "peak_mib": max(r["peak_mib"] for r in results),
        "last_stdout": results[-1]["stdout"].strip()[:200],
    }


async def _create_cli_agent(home: Path, base_url: str) -> None:
    async with Kernel.open(home, embedders={"fake": FakeEmbedder()}) as kernel:
        await kernel.create_agent("bench", model="openai/bench", base_url=base_url, embedder="fake")


def time_startup(runs: int) -> list[dict[str, Any]]:
    env = dict(os.environ, OPENAI_API_KEY="sk-bench-dummy")
    rows = [
        time_command("python -c pass", [PYTHON, "-c", "pass"], env, runs),
        time_command('python -c "import llmos"', [PYTHON, "-c", "import llmos"], env, runs),
        # `llmos` exports lazily: the kernel is what a Python API user really imports.
        time_command(
            'python -c "from llmos import Kernel"',
            [PYTHON, "-c", "from llmos import Kernel"],
            env,
            runs,
        ),
        # What an openai/ agent's first request imports (llmos imports it lazily).
        time_command('python -c "import openai"', [PYTHON, "-c", "import openai"], env, runs),
    ]
    answer = {"name": "send_message", "arguments": {"message": "Hello from the fake server!"}}
    with (
        FakeOpenAIServer(lambda body: {"content": "Hi.", "tool_calls": [answer]}) as server,
        tempfile.TemporaryDirectory() as home,
    ):
        asyncio.run(_create_cli_agent(Path(home), server.base_url))
        cli = [LLMOS, "send", "bench", "hi"]
        row = time_command('llmos send bench "hi"', cli, dict(env, LLMOS_HOME=home), runs)
        if row["ok"] and "Hello from the fake server!" not in row["last_stdout"]:
            row = {"label": row["label"], "ok": False, "error": f"no reply: {row['last_stdout']!r}"}
        rows.append(row)
    return rows


# --- profile ------------------------------------------------------------------------


def profile_steps(turns: int, top: int = 25) -> str:
    """cProfile of plain turns (after a warm-up), sorted by cumulative time."""
    import cProfile
    import io
    import pstats

    async def run(home: Path) -> None:
        core = ScriptedCore(plain_policy, context_window=8192, name="scripted/profile")
        async with Kernel.open(home, embedders={"fake": FakeEmbedder()}) as kernel:
            kernel.add_core(core)
            await kernel.create_agent("p", model=core.name, embedder="fake")
            for _ in range(10):
                await kernel.send("p", USER_TEXT)
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(turns):
                await kernel.send("p", USER_TEXT)
            prof.disable()
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        profile_text.append(buf.getvalue())

    profile_text: list[str] = []
    with tempfile.TemporaryDirectory() as home:
        asyncio.run(run(Path(home)))
    return profile_text[0]


# --- report -------------------------------------------------------------------------


def _table(title: str, columns: list[str], rows: list[list[str]]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def print_report(steps: list[dict], peak_mib: float, startup: list[dict]) -> None:
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 132)
    rows = [
        [
            r["kind"], f"{r['steps_per_turn']:.2f}", _ms(r["median_ms_per_step"]),
            _ms(r["p95_ms_per_step"]), _ms(r["best_batch_median_ms_per_step"]),
            _ms(r["median_cpu_ms_per_step"]), f"{r['sql_statements_per_step']:.1f}",
            f"{r['commits_per_step']:.1f}", f"{r['flush_turns']}/{r['turns']}",
            _ms(r["median_ms_per_step_flush_turns"]),
        ]
        for r in steps
    ]  # fmt: skip
    rows.append(["MemGPT 0.3.25 (per turn)", "", ANCHOR["ms_per_turn"], *[""] * 7])
    columns = ["turn kind", "steps/turn", "median ms/step", "p95", "quietest batch",
               "median CPU ms", "SQL stmts/step", "commits/step", "flush turns",
               "median (flush turns)"]  # fmt: skip
    title = "llmos's own time per step (ScriptedCore answers instantly)"
    console.print(_table(title, columns, rows))
    console.print(
        f"Peak memory of this process (ru_maxrss): {peak_mib:.0f} MiB "
        f"(MemGPT 0.3.25: {ANCHOR['peak_mib']} MiB)"
    )
    if not startup:
        return
    rows = []
    for r in startup:
        if r["ok"]:
            rows.append([r["label"], f"{r['median_s']:.3f}", f"{r['min_s']:.3f}",
                         f"{r['max_s']:.3f}", f"{r['median_cpu_s']:.3f}",
                         f"{r['peak_mib']:.0f}"])  # fmt: skip
        else:
            rows.append([r["label"], "failed: " + r["error"], "", "", "", ""])
    rows.append(["MemGPT 0.3.25, to a ready agent", ANCHOR["startup_s"], "", "", "", ""])
    columns = ["fresh process", "median s", "min s", "max s", "median CPU s", "peak MiB"]
    console.print(_table("Start-up", columns, rows))


def verdict(steps: list[dict], startup: list[dict]) -> dict[str, Any]:
    plain = next(r for r in steps if r["kind"] == "plain")
    send = next((r for r in startup if r["label"].startswith("llmos send")), None)
    out: dict[str, Any] = {
        "step_median_ms": plain["median_ms_per_step"],
        "step_target_met": plain["median_ms_per_step"] < TARGET_STEP_MS,
    }
    if send and send["ok"]:
        out["send_median_s"] = send["median_s"]
        out["send_target_met"] = send["median_s"] < TARGET_SEND_S
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="60 turns, 3 start-up runs")
    parser.add_argument("--turns", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None, help="start-up runs per command")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of plain turns")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up part")
    args = parser.parse_args()
    turns = args.turns or (60 if args.quick else 300)
    runs = args.runs or (3 if args.quick else 5)
    warmup, batches = (10, 3) if args.quick else (20, 6)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as home:
        steps = [
            asyncio.run(time_steps(kind, turns, warmup, batches, Path(home)))
            for kind in ("plain", "edit")
        ]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    startup = [] if args.no_startup else time_startup(runs)
    print_report(steps, peak_mib, startup)
    result = verdict(steps, startup)
    met = {True: "met", False: "MISSED"}
    line = f"median {result['step_median_ms']:.2f} ms/step (target < {TARGET_STEP_MS:g}): "
    line += met[result["step_target_met"]]
    if "send_median_s" in result:
        line += f"; llmos send {result['send_median_s']:.2f} s (target < {TARGET_SEND_S:g}): "
        line += met[result["send_target_met"]]
    load_after = os.getloadavg()
    print(
        f"{line}; load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} CPUs"
    )
    profile = profile_steps(turns) if args.profile else None
    if profile:
        print(profile)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "turn_overhead",
        "command": " ".join(["python", "benchmarks/turn_overhead.py", *sys.argv[1:]]),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "targets": {"median_ms_per_step": TARGET_STEP_MS, "llmos_send_s": TARGET_SEND_S},
        "anchor_memgpt_0_3_25": ANCHOR,
        "verdict": result,
        "steps": steps,
        "peak_rss_mib": peak_mib,
        "startup": startup,
        "profile": profile,
    }
    RESULTS.write_text(json.dumps(out, indent=1))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
