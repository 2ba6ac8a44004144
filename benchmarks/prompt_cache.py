"""Prompt caching on every provider: how much of each prompt the provider serves from cache.

What it measures. One agent holds a 60-turn scripted conversation (a memory
edit every 5th turn; the MemGPT policy and messages of
`benchmarks/context_layout.py`) through the Kernel and each provider's real
SDK, against a loopback fake that emulates that provider's caching rules:

* openai — `FakeOpenAIServer(prompt_cache=True)`: automatic caching, the
  longest prefix shared with any earlier prompt in 128-token blocks, from
  1,024 tokens; llmos sends `prompt_cache_key`.
* anthropic — `FakeAnthropicServer(prompt_cache=True)`: explicit
  `cache_control` breakpoints; a prefix up to a breakpoint is read from the
  cache if an earlier request wrote exactly that prefix (looking back up to
  20 blocks from each breakpoint), and each breakpoint of 1,024+ tokens
  writes its prefix.
* bedrock — `FakeBedrockServer(prompt_cache=True)`: the same rules with
  Converse `cachePoint` blocks, through boto3 and the event-stream endpoint.

Each runs with both context layouts: "stable" (llmos's default: prompt,
core memory as of the last compaction, summary, append-only messages) and
"classic" (MemGPT's: current core memory and recall statistics re-rendered
into the system message each step). Reported per core and layout: requests,
prompt tokens, cached (read) tokens, cache writes, the cached-token ratio
(cached / prompt, over every request including flush summaries), and
billed-equivalent prompt tokens per user turn at list-price multipliers:
a cache read bills 0.1 of an input token everywhere, an Anthropic/Bedrock
cache write 1.25 (OpenAI has no write premium).

Tokens are the fakes' (4 characters per token over a JSON serialisation of
what each API receives), as each SDK reports them to llmos; the agent's
totals come from `Kernel.agent_usage` (the numbers `llmos agent show`
prints). The three providers serialise requests differently, so absolute
counts differ a little between cores; ratios are what to compare.

Left out: real tokenisers, cache expiry (5 minutes on Anthropic/Bedrock,
minutes to an hour on OpenAI; a fast conversation never meets it), latency,
archival memory (a fake embedder is installed).

Run: python benchmarks/prompt_cache.py [--quick]   (--quick: 20 turns)
Writes benchmarks/results/prompt_cache.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.fakes and benchmarks.* (not installed)

from benchmarks.context_layout import EDIT_EVERY, MemGPTPolicy, user_messages  # noqa: E402
from tests.fakes.anthropic_server import FakeAnthropicServer  # noqa: E402
from tests.fakes.bedrock_server import FakeBedrockServer  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

from llmos import Kernel  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "prompt_cache.json"
CORES = ("openai", "anthropic", "bedrock")
LAYOUTS = ("stable", "classic")
MODELS = {
    "openai": "openai/bench",
    "anthropic": "anthropic/claude-bench",
    "bedrock": "bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
}
READ_PRICE = 0.1
WRITE_PRICE = {"openai": 1.0, "anthropic": 1.25, "bedrock": 1.25}


class FakeEmbedder:
    name = "fake"
    dim = 8

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), self.dim), dtype=np.float32) / np.sqrt(self.dim)


@contextmanager
def provider(core: str, policy: MemGPTPolicy, window: int) -> Iterator[tuple[Any, str | None]]:
    """(server, base_url for the agent) with the environment the core's SDK needs."""
    saved = dict(os.environ)
    try:
        if core == "openai":
            os.environ["OPENAI_API_KEY"] = "sk-bench-dummy"
            with FakeOpenAIServer(policy, prompt_cache=True, context_window=window) as s:
                yield s, s.base_url
        elif core == "anthropic":
            os.environ["ANTHROPIC_API_KEY"] = "sk-ant-bench-dummy"
            with FakeAnthropicServer(policy, prompt_cache=True) as s:
                yield s, s.base_url
        else:
            os.environ.update(
                AWS_ACCESS_KEY_ID="AKIDBENCH",
                AWS_SECRET_ACCESS_KEY="bench-dummy-secret",
                AWS_REGION="us-east-1",
                AWS_EC2_METADATA_DISABLED="true",
            )
            with FakeBedrockServer(policy, prompt_cache=True) as s:
                os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = s.endpoint_url
                yield s, None
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def run_one(core: str, layout: str, texts: list[str], window: int) -> dict[str, Any]:
    policy = MemGPTPolicy()
    with (
        provider(core, policy, window) as (server, base_url),
        tempfile.TemporaryDirectory() as home,
    ):
        kernel = Kernel.open(home, embedders={"fake": FakeEmbedder()})
        try:
            agent = await kernel.create_agent(
                "bench",
                model=MODELS[core],
                base_url=base_url,
                layout=layout,
                context_window=window,
                embedder="fake",
            )
            t0 = time.perf_counter()
            flushes = 0
            for i, text in enumerate(texts, start=1):
                turn = await kernel.send("bench", text)
                assert turn.stop_reason == "end_turn", (core, layout, i, turn.error)
                flushes += turn.flushes
            elapsed = time.perf_counter() - t0
            usage = kernel.agent_usage(agent["id"])
            rate = kernel.get_agent("bench")["usage"]["cache_hit_rate"]
        finally:
            await kernel.close()
        writes = sum(u.cache_write for u in getattr(server, "usages", []))
    uncached = usage.prompt_tokens - usage.cached_prompt_tokens - writes
    billed = uncached + READ_PRICE * usage.cached_prompt_tokens + WRITE_PRICE[core] * writes
    return {
        "core": core,
        "model": MODELS[core],
        "layout": layout,
        "turns": len(texts),
        "requests": usage.requests,
        "flushes": flushes,
        "prompt_tokens": usage.prompt_tokens,
        "cached_tokens": usage.cached_prompt_tokens,
        "cache_write_tokens": writes,
        "cached_ratio": usage.cached_prompt_tokens / usage.prompt_tokens,
        "agent_show_cache_hit_rate": rate,
        "billed_eq_per_turn": billed / len(texts),
        "mean_prompt_tokens": usage.prompt_tokens / usage.requests,
        "wall_seconds": round(elapsed, 2),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120)
    table = Table(title="Prompt caching per core and context layout")
    for col in ("core", "layout", "requests", "prompt tokens", "cached", "cache writes",
                "cached ratio", "billed-eq/turn", "flushes"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("core", "layout") else "right")
    for r in rows:
        table.add_row(
            r["core"], r["layout"], str(r["requests"]), f"{r['prompt_tokens']:,}",
            f"{r['cached_tokens']:,}", f"{r['cache_write_tokens']:,}",
            f"{r['cached_ratio']:.1%}", f"{r['billed_eq_per_turn']:,.0f}", str(r["flushes"]),
        )  # fmt: skip
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="20 turns instead of 60")
    parser.add_argument("--turns", type=int, default=None)
    parser.add_argument("--window", type=int, default=16384, help="context window (tokens)")
    parser.add_argument("--cores", default=",".join(CORES), help="comma-separated subset")
    args = parser.parse_args()
    turns = args.turns or (20 if args.quick else 60)
    texts = user_messages(turns)
    rows = []
    for core in args.cores.split(","):
        for layout in LAYOUTS:
            rows.append(asyncio.run(run_one(core, layout, texts, args.window)))
    print_table(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "prompt_cache",
                "command": " ".join(["python", "benchmarks/prompt_cache.py", *sys.argv[1:]]),
                "turns": turns,
                "edit_every": EDIT_EVERY,
                "window": args.window,
                "prices": {"cache_read": READ_PRICE, "cache_write": WRITE_PRICE},
                "results": rows,
            },
            indent=1,
        )
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
