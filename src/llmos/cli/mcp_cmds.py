"""MCP commands of the shell: register MCP servers whose tools agents can attach.

    llmos mcp add NAME -- COMMAND ARGS...   a stdio server (started when first called)
    llmos mcp add NAME --url URL            a streamable-HTTP server
    llmos mcp list [--json]                 servers and their tools (llmos names, arguments)
    llmos mcp remove NAME                   forget a server; agents lose its tools

`add` connects once to list the server's tools, then stores them as tools
named `NAME__tool`: `llmos tool attach AGENT NAME__tool` gives one to an
agent. All three are clients of the HTTP API (`/v1/mcp`, server/routes/mcp.py):
they run in the kernel service, which runs the servers' sessions and caches
agents' tool lists, so what they change is what the agents there see. The
service runs a stdio server in `/` with its own environment: give its
command and files as absolute paths.

Left out: headers or auth for HTTP servers, and environment variables for
stdio servers (the MCP SDK starts one with only HOME, LOGNAME, PATH, SHELL,
TERM and USER of llmos's environment).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from llmos.cli.common import api, dump, fail, group, out
from llmos.client.base import seg

mcp_app = group("MCP servers: their tools become tools agents can attach.")


@mcp_app.command("add")
def mcp_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A short name; tools are named NAME__tool.")],
    command: Annotated[
        list[str] | None, typer.Argument(help="After --: the command that runs a stdio server.")
    ] = None,
    url: Annotated[str | None, typer.Option("--url", help="A streamable-HTTP server.")] = None,
    irreversible: Annotated[
        bool, typer.Option("--irreversible", help="Every call of its tools needs your approval.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Register an MCP server and its tools.

    Example: llmos mcp add fs -- npx -y @modelcontextprotocol/server-filesystem /tmp
    """
    if bool(command) == bool(url):
        fail("give a command after -- (stdio) or --url URL (streamable HTTP), not both")

    cmd, *args = command or [None]
    with api(ctx) as client:
        added = client.post(
            "/mcp",
            {"name": name, "command": cmd, "args": args, "url": url, "irreversible": irreversible},
        )
    if as_json:
        dump(added)
        return
    out.print(f"added MCP server [bold]{escape(name)}[/] with {len(added['tools'])} tools:")
    for t in added["tools"]:
        out.print(f"  {t['name']}: {escape(t['description'])}")


@mcp_app.command("list")
def mcp_list(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List your MCP servers and their tools."""

    with api(ctx) as client:
        rows = client.get("/mcp")["servers"]
    if as_json:
        dump(rows)
        return
    if not rows:
        out.print("no MCP servers")
        return
    table = Table("server", "transport", "target", "tool", "arguments", "description")
    for s in rows:
        for i, t in enumerate(s["tools"] or [{}]):
            args = ", ".join(
                k for k in t.get("parameters", {}).get("properties", {}) if k != "request_heartbeat"
            )
            first = i == 0
            table.add_row(
                s["name"] if first else "",
                s["transport"] if first else "",
                escape(s["target"]) if first else "",
                t.get("name", ""),
                args,
                escape(t.get("description", "")),
            )
    out.print(table)


@mcp_app.command("remove")
def mcp_remove(ctx: typer.Context, name: str) -> None:
    """Forget the MCP server NAME; agents lose its tools."""
    with api(ctx) as client:
        client.delete(f"/mcp/{seg(name)}")
    out.print(f"removed MCP server {name}")
