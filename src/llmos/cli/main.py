"""The `llmos` command: the shell of the OS, wired from one module per command group.

    llmos agent create|list|show|delete|set-embedder   manage agents (agent_cmds.py)
    llmos send NAME "message"                          one turn, reply on stdout (chat.py)
    llmos chat [NAME]                                  interactive chat with slash commands
    llmos serve [--host H] [--port P]                  the HTTP API (serve_cmds.py)
    llmos user create|list|key NAME                    users of the HTTP API (user_cmds.py)
    llmos files ...                                    versioned files (files_cmds.py)
    llmos ps · llmos kernel stats                      the process table (kernel_cmds.py)
    llmos load AGENT PATH...                           documents into archival memory
    llmos mcp add|list|remove                          MCP servers' tools (mcp_cmds.py)
    llmos models                                       models and providers (providers.py)
    llmos tool|grant|approvals|audit                   tools and access (tools_cmds.py)

This module holds the typer app, its `--home` option and the wiring; the
commands live in their modules and share `cli/common.py` (opening the kernel,
user errors, the consoles). Every command opens the kernel on `--home`
(default `$LLMOS_HOME` or `~/.llmos`), runs the async Kernel API under one
event loop, and closes it. User errors (unknown agent, duplicate name,
too-long message, bad model string, a failed turn) end with a one-line
`error: ...` on stderr and exit code 1, never a traceback; set `LLMOS_DEBUG=1`
to see the traceback anyway.

Start-up time matters (`llmos send` is called from scripts), so the kernel and
everything under it are imported inside the commands, never at module level.

Left out: `llmos bench` (the benchmarks are scripts in `benchmarks/`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmos.cli import (
    agent_cmds,
    chat,
    eval_cmds,
    files_cmds,
    kernel_cmds,
    load_cmds,
    mcp_cmds,
    providers,
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
    "See `llmos models`."
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
) -> None:
    ctx.obj = State(home=home.expanduser() if home else None)


# `llmos --help` lists the commands in the order they are added here (command
# groups after single commands), so keep this order.
app.add_typer(agent_cmds.agent_app, name="agent")
app.add_typer(user_cmds.user_app, name="user")
app.command("send")(chat.send)
app.command("chat")(chat.chat)
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
app.command("eval", help=eval_cmds.TASK_HELP)(eval_cmds.eval_)

if __name__ == "__main__":
    app(prog_name="llmos")
