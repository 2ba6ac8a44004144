"""Agent images in memory: how much one costs, and what loading one again costs.

A kernel keeps each active agent's image (`memory/image.py`: settings, core
memory, the window's messages, counts) in its process table, at most
`max_images` of them (`kernel/process.py`, `LLMOS_MAX_IMAGES`); past that it
drops the least recently used and loads it from the database on the agent's
next turn. This measures, on SQLite, for agents that have had 0, 10 and 40
turns (each turn: a ~200-character user message, a `send_message` call with
a ~400-character reply, its result):

- bytes per image in memory (tracemalloc: what loading `--agents` images
  from cold allocates and keeps, divided by their number), and per token of
  the window, to extrapolate to fuller windows;
- milliseconds to load one image from the database (median and p95 of
  loading every agent once, without tracemalloc).

With those, `max_images` is memory (images x bytes per image) traded against
reloads (a turn on an agent not in memory pays one load first).

    python benchmarks/agent_images.py [--agents 200] [--turns 0,10,40]

Writes benchmarks/results/agent_images.json. Left out: PostgreSQL (a load
is the same five queries, each a network round trip there), the KV state of
embedded models (kept elsewhere, `llm/llamacpp_kv.py`), and archival memory
(not part of the image).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

USER = "Please remember that my favourite colour is teal and that I live near the harbour. " * 2
REPLY = "Noted. " + "I will keep that in mind when we talk about colours and places. " * 6


async def measure(agents: int, turns: int) -> dict[str, Any]:
    from tests.conftest import HashEmbedder

    from llmos import Kernel
    from llmos.llm.replay import ScriptedCore, call

    async def respond(req: Any) -> Any:
        return call("send_message", message=REPLY)

    with tempfile.TemporaryDirectory() as home:
        kernel = Kernel.open(home, embedders={"test/hash": HashEmbedder()}, max_images=agents)
        kernel.add_core(ScriptedCore(respond, name="scripted/bench"))
        names = [f"agent-{i:04d}" for i in range(agents)]
        for name in names:
            await kernel.create_agent(
                name, model="scripted/bench", embedder="test/hash", context_window=32768
            )
        for _ in range(turns):
            await asyncio.gather(*(kernel.send(n, USER) for n in names))

        def drop_all() -> None:
            for name in names:
                proc = kernel.procs.peek(kernel.waker.image(name, "local").id)
                assert proc is not None
                proc.image = None
            kernel.procs._loaded.clear()
            gc.collect()

        # loading time, without tracemalloc's overhead
        drop_all()
        times = []
        for name in names:
            t0 = time.perf_counter()
            kernel.waker.image(name, "local")
            times.append(1000 * (time.perf_counter() - t0))
        tokens = [sum(m.tokens or 0 for m in kernel.waker.image(n, "local").window) for n in names]
        messages = [len(kernel.waker.image(n, "local").window) for n in names]
        drop_all()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        images = [kernel.waker.image(n, "local") for n in names]
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del images
        await kernel.close()
    per_image = (after - before) / agents
    window_tokens = statistics.mean(tokens)
    return {
        "turns": turns,
        "agents": agents,
        "window_messages": statistics.mean(messages),
        "window_tokens": round(window_tokens),
        "bytes_per_image": round(per_image),
        "bytes_per_window_token": round(per_image / window_tokens, 1) if window_tokens else None,
        "load_ms_p50": round(statistics.median(times), 3),
        "load_ms_p95": round(sorted(times)[int(0.95 * (len(times) - 1))], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--turns", default="0,10,40", help="comma-separated turns per agent")
    args = parser.parse_args()
    rows = [asyncio.run(measure(args.agents, int(t))) for t in args.turns.split(",")]
    cols = [
        ("turns", "turns"),
        ("window msgs", "window_messages"),
        ("window tokens", "window_tokens"),
        ("KiB/image", "bytes_per_image"),
        ("B/token", "bytes_per_window_token"),
        ("load p50 ms", "load_ms_p50"),
        ("load p95 ms", "load_ms_p95"),
    ]
    print(" | ".join(f"{h:>13}" for h, _ in cols))
    for r in rows:
        cells = [f"{r[k] / 1024:.1f}" if k == "bytes_per_image" else str(r[k]) for _, k in cols]
        print(" | ".join(f"{c:>13}" for c in cells))
    out = ROOT / "benchmarks" / "results" / "agent_images.json"
    out.write_text(json.dumps({"agents": args.agents, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
