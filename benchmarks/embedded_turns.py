"""Turns on the embedded model (Gemma 3 270M): prompt tokens evaluated, whole turn
time and time to first token, for short messages to one agent.

What it measures. One agent on `local/gemma-3-270m` in a temporary LLMOS_HOME,
N short user messages (`kernel.send` with an event sink, so the reply streams):

* cold: the first turn of a fresh kernel (model load included) — what every
  one-shot CLI process paid before the kernel stayed up;
* warm: the second and later turns in the same kernel, whose agent's prompt
  state is still in the model or the KV store;
* restart, from disk: a second kernel on the same home (the model loaded
  again), the agent's prompt state taken from `$LLMOS_HOME/kv/agents`, which
  the first kernel wrote when it closed;
* restart, cold: a third kernel after those files were removed: the whole
  prompt is evaluated again (what every restart cost before).

Per turn: prompt tokens in the request(s), prompt tokens evaluated (the core's
`prompt_tokens_evaluated` counter), completion tokens, whole turn time, and the
time to the first `token` event, and the process's CPU time for the turn (all
threads: less sensitive to other work on the machine than wall time). Medians
per phase.

Target (issue 13): a warm turn under 1.5 s whole for a reply of about 20 tokens.

Left out: the HTTP service around the kernel (the "service" work measures the
CLI against it). The machine's load average is recorded with the results:
other work on a 2-core machine inflates every time (not the token counts).

Run: python benchmarks/embedded_turns.py [--turns N]
Writes benchmarks/results/embedded_turns.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MESSAGES = ["hi", "how are you?", "what is your name?", "thanks!", "tell me a joke",
            "good morning", "nice", "ok", "see you", "bye", "hello again", "cool"]  # fmt: skip


async def turns(home: Path, agent: str, texts: list[str], create: bool) -> list[dict[str, Any]]:
    from llmos import Kernel

    kernel = Kernel.open(home)
    rows = []
    try:
        if create:
            await kernel.create_agent(agent, model="local/gemma-3-270m")
        core = kernel.core("local/gemma-3-270m")
        for text in texts:
            before = core.stats()  # type: ignore[attr-defined]
            first: list[float] = []

            def sink(event: dict[str, Any], first: list[float] = first) -> None:
                if event["type"] == "token" and not first:
                    first.append(time.perf_counter())

            t0, c0 = time.perf_counter(), time.process_time()
            turn = await kernel.send(agent, text, on_event=sink)
            t1, c1 = time.perf_counter(), time.process_time()
            after = core.stats()  # type: ignore[attr-defined]
            rows.append(
                {
                    "text": text,
                    "reply": turn.reply,
                    "steps": turn.steps,
                    "prompt_tokens": after["prompt_tokens"] - before["prompt_tokens"],
                    "evaluated": after["prompt_tokens_evaluated"]
                    - before["prompt_tokens_evaluated"],
                    "completion_tokens": after["completion_tokens"] - before["completion_tokens"],
                    "turn_s": round(t1 - t0, 3),
                    "cpu_s": round(c1 - c0, 3),
                    "first_token_s": round(first[0] - t0, 3) if first else None,
                }
            )
    finally:
        await kernel.close()
    return rows


def med(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r[key] is not None]
    return round(statistics.median(vals), 3) if vals else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=8, help="turns in the first kernel")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["LLMOS_HOME"] = str(home)
        first = asyncio.run(turns(home, "bench", MESSAGES[: args.turns], create=True))
        more = MESSAGES[args.turns :]
        again = asyncio.run(turns(home, "bench", more[:2], False))
        for f in (home / "kv" / "agents").glob("*.kv"):
            f.unlink()
        cold = asyncio.run(turns(home, "bench", more[2:3], False))
    phases = {"cold (new agent)": first[:1], "warm": first[1:] + again[1:],
              "restart, from disk": again[:1], "restart, cold": cold}  # fmt: skip
    head = ("phase", "n", "prompt", "evaluated", "out", "turn s", "ttft s", "cpu s")
    widths = (20, 3, 8, 11, 6, 8, 8, 8)
    print(
        "".join(
            f"{h:<{w}}" if i == 0 else f"{h:>{w}}"
            for i, (h, w) in enumerate(zip(head, widths, strict=True))
        )
    )
    summary = {}
    for name, rows in phases.items():
        if not rows:
            continue
        keys = ("prompt_tokens", "evaluated", "completion_tokens", "turn_s", "first_token_s",
                "cpu_s")  # fmt: skip
        s = {k: med(rows, k) for k in keys}
        summary[name] = {"n": len(rows), **s}
        cells = (name, len(rows), *(s[k] for k in keys))
        print("".join(f"{c!s:<{w}}" if i == 0 else f"{c!s:>{w}}"
                      for i, (c, w) in enumerate(zip(cells, widths, strict=True))))  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "embedded_turns.json"
    out.write_text(json.dumps({"summary": summary, "turns": first + again + cold,
                               "loadavg": os.getloadavg()}, indent=2))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
