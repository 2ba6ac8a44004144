"""`llmos serve`: the HTTP API (OpenAI-compatible too), in one process or several.

    llmos serve [--host H] [--port P] [--workers N] [--policy fifo|rr|priority] ...

With `--workers N` each worker process boots its own kernel on the same
database and takes agent leases; the options reach the workers through
environment variables. Make a user and a key first: `llmos user create NAME`.
`--aios-user NAME [--aios-port N]` also serves AIOS's kernel API as NAME on
a loopback port (`server/aios/listener.py`), in one process.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from llmos.cli.common import err, fail, home_dir, user_errors


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port.")] = 8283,
    rate: Annotated[
        float, typer.Option("--rate-limit", min=0, help="Requests per second per user (0: off).")
    ] = 50.0,
    burst: Annotated[
        float, typer.Option("--burst", min=1, help="Largest burst of requests per user.")
    ] = 200.0,
    max_body: Annotated[
        int, typer.Option("--max-body", min=1024, help="Largest request body, in bytes.")
    ] = 1 << 20,
    allow_model: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-model",
            metavar="PATTERN",
            help="Model strings users may choose (glob, repeatable). \\[default: any]",
            show_default=False,
        ),
    ] = None,
    allow_base_url: Annotated[
        bool,
        typer.Option(
            "--allow-base-url",
            help="Let users choose an agent's base_url (the server's provider key goes there).",
        ),
    ] = False,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy",
            envvar="LLMOS_POLICY",
            help="Scheduling of LLM calls on each core: fifo, rr (round robin; preempts the "
            "embedded model every --quantum tokens) or priority (with aging).",
        ),
    ] = None,
    quantum: Annotated[
        int | None,
        typer.Option(
            "--quantum", envvar="LLMOS_QUANTUM", min=1, help="Round-robin quantum, tokens."
        ),
    ] = None,
    unsafe_tools: Annotated[
        bool,
        typer.Option(
            "--unsafe-tools",
            help="Run users' tools even without an OS sandbox (bubblewrap): any user with a "
            "key could then run code as this server's account.",
        ),
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="LLMOS_DATABASE_URL",
            help="Run on this database: postgresql+psycopg://USER:PASSWORD@HOST/DB (PostgreSQL "
            "with pgvector) or sqlite:///PATH. \\[default: llmos.db in --home]",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Server processes, each with its own kernel on the same database; an agent "
            "runs in one of them at a time (agent leases). More CPU for many agents on "
            "remote models; each process has its own rate limiter and process table.",
        ),
    ] = 1,
    aios_user: Annotated[
        str | None,
        typer.Option(
            "--aios-user",
            metavar="NAME",
            help="Also serve AIOS's kernel API (for agents written with its SDK, Cerebrum) as "
            "this llmos user, with no key, on a second listener on loopback only.",
        ),
    ] = None,
    aios_port: Annotated[
        int,
        typer.Option(
            "--aios-port", min=0, max=65535, help="Port of the AIOS listener (with --aios-user)."
        ),
    ] = 8000,
    keep_alive: Annotated[
        int,
        typer.Option(
            "--keep-alive",
            envvar="LLMOS_KEEP_ALIVE",
            min=1,
            metavar="SECONDS",
            help="Close an idle HTTP connection after this long. Behind a load balancer, "
            "make it longer than the balancer's idle timeout, so that the balancer closes "
            "idle connections, never a node under a request it is sending.",
        ),
    ] = 5,
) -> None:
    """Serve the HTTP API: many users, one kernel; OpenAPI docs at /docs.

    Make a key first with: llmos user create NAME
    Example: llmos serve --port 8283, then
    curl -H "Authorization: Bearer $KEY" localhost:8283/v1/agents
    """
    import uvicorn

    from llmos.server.app import create_app
    from llmos.server.deps import ServerConfig

    config = ServerConfig(
        max_body_bytes=max_body,
        rate=rate,
        burst=burst,
        models=tuple(allow_model) if allow_model else None,
        allow_base_url=allow_base_url,
        unsafe_tools=unsafe_tools,
    )
    if policy is not None:
        from llmos.kernel.policies import POLICIES

        if policy not in POLICIES:
            fail(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
        os.environ["LLMOS_POLICY"] = policy  # the kernel reads these when it boots
    if quantum is not None:
        os.environ["LLMOS_QUANTUM"] = str(quantum)
    if aios_user is not None and workers > 1:
        fail("--aios-user needs one server process: drop --workers")
    if database_url:
        os.environ["LLMOS_DATABASE_URL"] = database_url  # the kernel(s) open it
    if workers > 1:
        import dataclasses
        import json

        home = home_dir(ctx)
        if home is not None:
            os.environ["LLMOS_HOME"] = str(home)
        os.environ["LLMOS_SHARED_DB"] = "1"  # each worker's kernel takes agent leases
        os.environ["LLMOS_SERVE_CONFIG"] = json.dumps(dataclasses.asdict(config))
        err.print(f"llmos serving on http://{host}:{port} with {workers} workers (docs at /docs)")
        uvicorn.run(
            "llmos.server.app:app_from_env",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="info",
            timeout_keep_alive=keep_alive,
        )
        return
    with user_errors():
        application = create_app(config=config, home=home_dir(ctx))
        if aios_user is not None:
            from llmos.access.policy import UserNotFound
            from llmos.kernel.kernel import default_home
            from llmos.server.aios import listener

            try:
                listener.check_user(home_dir(ctx) or default_home(), aios_user)
            except UserNotFound as e:
                fail(str(e))
            err.print(f"llmos serving on http://{host}:{port} (docs at /docs)")
            listener.serve(
                application,
                host=host,
                port=port,
                user_name=aios_user,
                aios_port=aios_port,
                keep_alive=keep_alive,
                on_ready=lambda url: err.print(
                    f"AIOS kernel API as user {aios_user} on {url} (loopback only, no key)"
                ),
            )
            return
        err.print(f"llmos serving on http://{host}:{port} (docs at /docs)")
        uvicorn.run(
            application, host=host, port=port, log_level="info", timeout_keep_alive=keep_alive
        )
