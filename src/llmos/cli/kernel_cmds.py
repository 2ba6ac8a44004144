"""Kernel commands of the shell: `llmos ps` and `llmos kernel stats`.

    llmos ps [--url URL --key KEY] [--json]             the process table
    llmos kernel stats [--url URL --key KEY] [--json]   per-core and per-agent totals

With `--url` (or `LLMOS_URL`) they ask a running `llmos serve` for its live
kernel, scoped to the key's user (`LLMOS_API_KEY`); without, they open the
local database, where every agent is idle (no kernel runs between commands)
and the totals are the agents' stored lifetime usage.

Left out: watching (`--watch`) — the web console refreshes live.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from llmos.cli.common import dump, fail, out, run

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

kernel_app = typer.Typer(help="Inspect the kernel: cores, queues, syscalls, usage.")

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", envvar="LLMOS_URL", help="A running `llmos serve`, e.g. http://127.0.0.1:8283."
    ),
]
KeyOpt = Annotated[
    str | None, typer.Option("--key", envvar="LLMOS_API_KEY", help="Your API key for --url.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _remote(url: str, key: str | None) -> dict[str, Any]:
    import httpx

    if not key:
        fail("--url needs an API key: pass --key or set LLMOS_API_KEY")
    try:
        resp = httpx.get(
            url.rstrip("/") + "/v1/kernel", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {type(exc).__name__}")
    if resp.status_code == 401:
        fail("the server rejected the API key")
    if resp.status_code != 200:
        fail(f"{url} answered {resp.status_code}")
    return resp.json()


def _local(ctx: typer.Context) -> dict[str, Any]:
    async def body(kernel: Kernel) -> dict[str, Any]:
        agents = kernel.list_agents()
        usage = {}
        for a in agents:
            u = kernel.agent_usage(a["id"])
            usage[a["name"]] = {
                "requests": u.requests,
                "prompt_tokens": u.prompt_tokens,
                "cached_prompt_tokens": u.cached_prompt_tokens,
                "completion_tokens": u.completion_tokens,
            }
        processes = [
            {
                "agent_id": a["id"],
                "name": a["name"],
                "state": "ready",
                "core": a["model"],
                "waiting": 0,
                "seconds_in_state": None,
            }
            for a in agents
        ]
        return {"agents": len(agents), "processes": processes, "cores": [], "usage": usage}

    return run(ctx, body)


def _status(ctx: typer.Context, url: str | None, key: str | None) -> dict[str, Any]:
    return _remote(url, key) if url else _local(ctx)


def ps(
    ctx: typer.Context, url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """The process table: each agent's state, core, queued events and time in state."""
    status = _status(ctx, url, key)
    if as_json:
        dump(status["processes"])
        return
    table = Table(title="processes" + ("" if url else " (local: no kernel is running)"))
    for col in ("pid", "agent", "state", "core", "queued", "in state"):
        table.add_column(col, justify="right" if col in ("queued", "in state") else "left")
    for p in status["processes"]:
        since = p.get("seconds_in_state")
        table.add_row(
            str(p["agent_id"]),
            str(p["name"]),
            str(p["state"]),
            str(p.get("core") or "-"),
            str(p.get("waiting", 0)),
            "-" if since is None else f"{since:.1f}s",
        )
    out.print(table)


@kernel_app.command("stats")
def stats(
    ctx: typer.Context, url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Per-core queues and totals, and per-agent usage."""
    status = _status(ctx, url, key)
    if as_json:
        dump(status)
        return
    if status.get("cores"):
        cores = Table(title="cores")
        keys = (
            "core",
            "policy",
            "capacity",
            "running",
            "queued",
            "served",
            "retried",
            "context_switches",
            "prompt_tokens",
            "completion_tokens",
            "cache_hit_rate",
        )
        for k in keys:
            cores.add_column(k.replace("_", " "))
        for c in status["cores"]:
            cores.add_row(*(str(c.get(k, "")) for k in keys))
        out.print(cores)
        for c in status["cores"]:
            kv = c.get("kv")
            if kv:  # the embedded model's prompt-state cache and context switches
                store = kv.get("store", {})
                out.print(
                    f"{c['core']}: prompt states reused {kv.get('hits', 0)} "
                    f"(+{kv.get('live_hits', 0)} in place), missed {kv.get('misses', 0)}; "
                    f"suspends {kv.get('suspends', 0)}, snapshot restores "
                    f"{kv.get('snapshot_restores', 0)}; KV store "
                    f"{store.get('ram_bytes', 0) / 2**20:.1f} MiB in RAM, "
                    f"{store.get('disk_bytes', 0) / 2**20:.1f} MiB on disk"
                )
    usage = Table(title="usage per agent" + ("" if url else " (stored lifetime totals)"))
    usage.add_column("agent")
    fields: list[str] = []
    for row in status.get("usage", {}).values():
        fields = list(row)
        break
    for f in fields:
        usage.add_column(f.replace("_", " "), justify="right")
    for name, row in status.get("usage", {}).items():
        usage.add_row(name, *(str(row[f]) for f in fields))
    out.print(usage)
