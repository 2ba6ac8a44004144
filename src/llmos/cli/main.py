"""The `llmos` command: the shell of the OS, wired from one module per command group.

    llmos agent create|list|show|delete|set-embedder   manage agents (agent_cmds.py)
    llmos send NAME "message"                          one turn, reply on stdout (chat.py)
    llmos chat [NAME]                                  interactive chat with slash commands
    llmos recall NAME [QUERY] [--start D] [--end D]    search the conversation history
    llmos serve [--host H] [--port P]                  the HTTP API (serve_cmds.py)
    llmos user create|list|key NAME                    users of the HTTP API (user_cmds.py)
    llmos files ...                                    versioned files (files_cmds.py)
    llmos ps · llmos kernel stats                      the process table (kernel_cmds.py)
    llmos load AGENT PATH...                           documents into archival memory
    llmos mcp add|list|remove                          MCP servers' tools (mcp_cmds.py)
    llmos models                                       models and providers (providers.py)
    llmos tool|grant|approvals|audit                   tools and access (tools_cmds.py)
    llmos db status|upgrade|copy                       the database (db_cmds.py)

This module holds the typer app, its global options (`--home`, `--url`,
`--key`, `--no-daemon`, `--idle`) and the wiring; the commands live in their
modules and share `cli/common.py`. A command with an HTTP route is a client
of the API: of the local kernel service (started in the background by the
first command that needs it, `llmos kernel start|stop|status`), of a remote
`llmos serve` (`--url`, `--key`), or of the same app run inside the command
(`--no-daemon`). Only `serve`, `user` and `models` have no route and open the
kernel in the command itself (they change nothing the service caches). User
errors (unknown agent, duplicate name, too-long message, bad model string, a
failed turn) end with a one-line `error: ...` on stderr
and exit code 1, never a traceback; set `LLMOS_DEBUG=1` to see the traceback.

Start-up time matters (`llmos send` is called from scripts), so a client
command imports only the client: no kernel, provider SDK, numpy, or (on the
local service's socket) httpx. The `llmos` executable is `cli/launch.py`,
which runs a plain `llmos send NAME MESSAGE [--json]` without this app at
all; `python -m llmos.cli.main` always runs the app.

Left out: `llmos bench` (the benchmarks are scripts in `benchmarks/`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmos.cli import (
    agent_cmds,
    chat,
    db_cmds,
    eval_cmds,
    files_cmds,
    kernel_cmds,
    load_cmds,
    mcp_cmds,
    providers,
    recall_cmds,
    serve_cmds,
    tools_cmds,
    user_cmds,
)
from llmos.cli.common import CONTEXT_SETTINGS, State

EPILOG = (
    "Examples:\n\n"
    "  llmos agent create alice --model openai/gpt-4o-mini --persona persona.txt\n\n"
    '  llmos send alice "Hi, I am Bob and I like sailing."\n\n'
    '  llmos send alice "What do I like?" --json | jq .reply\n\n'
    "  llmos chat alice\n\n"
    "Models: local/gemma-3-270m (embedded, the default), local:/path/model.gguf, "
    "openai/MODEL (with --base-url or OPENAI_BASE_URL), ollama/MODEL, anthropic/MODEL "
    "(ANTHROPIC_API_KEY), bedrock/MODEL_ID (AWS credentials, AWS_REGION). "
    "See `llmos models`.\n\n"
    "Commands talk to the local kernel service (started in the background when needed; "
    "`llmos kernel status|stop`), to `--url` with `--key`, or with `--no-daemon` to a kernel "
    "inside the command. No HTTP route, so always on this machine in-process: serve, user, "
    "models."
)

app = typer.Typer(
    name="llmos",
    help="llmos — an operating system for LLM agents with self-managed memory.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    # A user never sees a traceback for their own mistakes (see common.user_errors);
    # rich's traceback pretty-printer would only cost start-up time.
    pretty_exceptions_enable=False,
    context_settings=CONTEXT_SETTINGS,
)


@app.callback()
def _main(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="LLMOS_HOME",
            help="Directory holding llmos's database. \\[default: ~/.llmos]",
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="LLMOS_URL",
            help="Talk to this `llmos serve` (e.g. http://127.0.0.1:8283) instead of the "
            "local kernel service; needs --key.",
            show_default=False,
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar=["LLMOS_KEY", "LLMOS_API_KEY"],
            help="Your API key for --url (llmos user create NAME on the server makes one).",
            show_default=False,
        ),
    ] = None,
    no_daemon: Annotated[
        bool,
        typer.Option(
            "--no-daemon",
            envvar="LLMOS_NO_DAEMON",
            help="Run the kernel inside this command instead of the background kernel "
            "service (slower; for scripts and tests that want no process left behind).",
        ),
    ] = False,
    idle: Annotated[
        float | None,
        typer.Option(
            "--idle",
            envvar="LLMOS_IDLE",
            min=1,
            help="Seconds the kernel service stays up with nothing to do, when this command "
            "starts it. \\[default: 900]",
            show_default=False,
        ),
    ] = None,
) -> None:
    ctx.obj = State(
        home=home.expanduser() if home else None,
        url=url,
        key=key,
        no_daemon=no_daemon,
        idle=idle,
    )


# `llmos --help` lists the commands in the order they are added here (command
# groups after single commands), so keep this order.
app.add_typer(agent_cmds.agent_app, name="agent")
app.add_typer(user_cmds.user_app, name="user")
app.command("send")(chat.send)
app.command("chat")(chat.chat)
app.command("recall")(recall_cmds.recall)
app.command("serve")(serve_cmds.serve)
app.add_typer(files_cmds.files_app, name="files")
app.add_typer(kernel_cmds.kernel_app, name="kernel")
app.command("ps")(kernel_cmds.ps)
app.command("load")(load_cmds.load)
app.add_typer(mcp_cmds.mcp_app, name="mcp")
app.command("models")(providers.models)
app.add_typer(tools_cmds.tool_app, name="tool")
app.command("grant")(tools_cmds.grant)
app.command("approvals")(tools_cmds.approvals)
app.command("audit")(tools_cmds.audit)
app.add_typer(db_cmds.db_app, name="db")
app.command("eval", help=eval_cmds.TASK_HELP)(eval_cmds.eval_)

if __name__ == "__main__":
    app(prog_name="llmos")
