"""Kernel commands of the shell: the local kernel service, `llmos ps` and `llmos kernel stats`.

    llmos kernel start [--idle S]      start the local kernel service (if it is not running)
    llmos kernel stop                  stop it (turns in flight finish first)
    llmos kernel restart [--idle S]    stop it and start one with this command's settings
    llmos kernel status [--json]       pid, uptime, socket, version, models, agents in memory, nodes
    llmos ps [--json]                  the process table and the nodes on the database
    llmos kernel stats [--json]        per-core and per-agent totals

`ps` and `stats` ask the kernel the other commands use (`GET /v1/kernel`):
the local service, a remote `llmos serve` with `--url`/`--key`, or an
in-process one with `--no-daemon` (where every agent is idle: it was just
booted). `start`, `stop` and `status` are about this machine's service for
`--home`.

`ps` and `status` also list the nodes: every kernel on the database (the
`llmos serve` nodes sharing a PostgreSQL, the local service), live or stale,
as `GET /v1/kernel` reports them to the caller: of the agents a node holds,
your own by name and a count of all.

Left out: watching (`--watch`) — the web console refreshes live.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from llmos.cli.common import State, api, dump, fail, out, user_errors

kernel_app = typer.Typer(
    help="The kernel: the local service (start, stop, status), cores, queues, usage.",
    no_args_is_help=True,
)

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="LLMOS_URL",
        help="A running `llmos serve`, e.g. http://127.0.0.1:8283 (same as llmos --url).",
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--key", envvar=["LLMOS_KEY", "LLMOS_API_KEY"], help="Your API key for --url."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _status(ctx: typer.Context, url: str | None, key: str | None) -> dict[str, Any]:
    if isinstance(ctx.obj, State):
        ctx.obj.url = url or ctx.obj.url
        ctx.obj.key = key or ctx.obj.key
    with api(ctx) as client:
        return client.get("/kernel")


def _state(ctx: typer.Context) -> State:
    return ctx.obj if isinstance(ctx.obj, State) else State(home=None)


def _nodes_table(nodes: list[dict[str, Any]]) -> Table:
    """The nodes as `GET /v1/kernel` lists them (the caller's agents by name); the
    version and start time are in --json."""
    table = Table(
        title="nodes",
        caption="*: the node that answered; held: agents it holds",
        collapse_padding=True,
    )
    table.add_column("node", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("host:pid", overflow="fold", min_width=4)
    table.add_column("seen", justify="right")
    table.add_column("held", justify="right")
    # your agents' names whole (unless they alone are too wide); the host folds
    longest = max((len(a) for n in nodes for a in n.get("agents") or []), default=1)
    table.add_column("yours", min_width=min(longest, 24))
    for n in nodes:
        seen = n.get("seconds_since_seen")
        status = escape(str(n.get("status", "?")))
        if status != "live":
            status = f"[yellow]{status}[/]"
        table.add_row(
            escape(str(n.get("id"))) + (" *" if n.get("this") else ""),
            status,
            escape(f"{n.get('host', '')}:{n.get('pid', '')}"),
            "-" if seen is None else f"{_ago(float(seen))} ago",
            str(n.get("agents_held", len(n.get("agents") or []))),
            escape("\n".join(n.get("agents") or [])) or "-",
        )
    return table


def ps(
    ctx: typer.Context, url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """The process table (each agent's state, core, queued events and time in state) and
    the nodes on the database (your agents on each by name, a count of all)."""
    status = _status(ctx, url, key)
    if as_json:
        dump({"processes": status["processes"], "nodes": status.get("nodes", [])})
        return
    table = Table(title="processes")
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
    if not status["processes"]:
        out.print(f"[dim]no agent is in memory ({status.get('agents', 0)} agents in all)[/]")
    if status.get("nodes"):
        out.print(_nodes_table(status["nodes"]))


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
    usage = Table(title="usage per agent")
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


# --- the local kernel service -----------------------------------------------------------


def _paths(ctx: typer.Context) -> Any:
    from llmos.client.local import Paths, default_home

    state = _state(ctx)
    if state.url:
        fail("`llmos kernel start|stop|status` manage this machine's service; drop --url")
    return Paths((state.home or default_home()).expanduser().absolute())


#: `--idle` of `kernel start` and `kernel restart`
IdleOption = Annotated[
    float | None,
    typer.Option(
        "--idle",
        min=1,
        envvar="LLMOS_IDLE",
        help="Seconds to stay up with nothing to do. \\[default: 900]",
        show_default=False,
    ),
]


@kernel_app.command("start")
def start(
    ctx: typer.Context,
    idle: IdleOption = None,
) -> None:
    """Start the local kernel service in the background (other commands start it too).

    It serves this home's agents on a Unix socket only you can open, keeps
    models loaded and agents in memory between commands, logs to
    HOME/kernel.log and exits after --idle seconds with nothing to do.
    """
    from llmos.client.local import ensure, probe

    paths = _paths(ctx)
    before = probe(paths)
    if before:
        before[0].close()
    with user_errors():
        client = ensure(paths.home, idle if idle is not None else _state(ctx).idle)
        health = client.health()
        client.close()
    if before and before[1].get("pid") == health.get("pid"):
        out.print(f"the kernel service is already running (pid {health['pid']})")
    else:
        out.print(
            f"started the kernel service (pid {health['pid']}) on {escape(str(paths.socket))}"
        )


@kernel_app.command("stop")
def stop(ctx: typer.Context) -> None:
    """Stop the local kernel service; turns in flight finish first."""
    from llmos.client.local import read_state
    from llmos.client.local import stop as stop_service

    paths = _paths(ctx)
    pid = read_state(paths).get("pid")
    with user_errors():
        stopped = stop_service(paths)
    out.print(f"stopped the kernel service (pid {pid})" if stopped else "no kernel service runs")


@kernel_app.command("restart")
def restart(
    ctx: typer.Context,
    idle: IdleOption = None,
) -> None:
    """Stop the local kernel service (turns in flight finish first) and start a new one
    with this command's environment: its provider keys, base URLs and llmos settings."""
    from llmos.client.local import ensure, read_state
    from llmos.client.local import stop as stop_service

    paths = _paths(ctx)
    old = read_state(paths).get("pid")
    with user_errors():
        stopped = stop_service(paths)
        client = ensure(paths.home, idle if idle is not None else _state(ctx).idle)
        health = client.health()
        client.close()
    was = f" (was pid {old})" if stopped else ""
    out.print(f"started the kernel service (pid {health['pid']}){was} with these settings")


@kernel_app.command("status")
def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Whether the local kernel service runs: pid, uptime, socket, version, loaded models,
    agents in memory, idle limit, and the nodes on its database. Exits 3 when it is not
    running."""
    from llmos.client.local import probe, read_state, running

    paths = _paths(ctx)
    found = probe(paths)
    if found is None:
        info: dict[str, Any] = {"running": running(paths), "answering": False}
        info["socket"] = str(paths.socket)
        if as_json:
            dump(info)
        elif info["running"]:
            out.print("the kernel service is starting or stopping (it holds its lock but does "
                      "not answer)")  # fmt: skip
        else:
            out.print("no kernel service runs (the next command starts one)")
        raise typer.Exit(3)
    client, health = found
    with user_errors(), client:
        kernel = client.get("/kernel")
    state = read_state(paths)
    info = {
        "running": True,
        "pid": health.get("pid"),
        "version": health.get("version"),
        "uptime_seconds": health.get("uptime_seconds"),
        "socket": str(paths.socket),
        "log": str(paths.log),
        "idle_seconds": state.get("idle_seconds"),
        "models_loaded": sorted({str(c.get("core")) for c in kernel.get("cores", [])}),
        "agents_in_memory": len(kernel.get("processes", [])),
        "agents": kernel.get("agents"),
        "nodes": kernel.get("nodes", []),
    }
    if as_json:
        dump(info)
        return
    up = info["uptime_seconds"] or 0
    out.print(f"kernel service: pid {info['pid']}, llmos {info['version']}, up {_span(up)}")
    out.print(f"  socket {escape(info['socket'])}  log {escape(info['log'])}")
    out.print(f"  models loaded: {escape(', '.join(info['models_loaded']) or 'none')}")
    out.print(f"  agents in memory: {info['agents_in_memory']} of {info['agents']}")
    if info["idle_seconds"]:
        out.print(f"  exits after {_span(float(info['idle_seconds']))} with nothing to do")
    if info["nodes"]:
        out.print(_nodes_table(info["nodes"]))


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes = int(seconds // 60)
    return f"{minutes}m{int(seconds % 60)}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60}m"


def _span(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds >= 60 else f"{seconds:.1f}s"
