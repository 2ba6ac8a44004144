"""Tool, access and approval commands of the shell.

    llmos tool add FILE.py [--exclusive] [--irreversible]   register a file's functions
    llmos tool list [AGENT | --builtin]                      your, an agent's or built-in tools
    llmos tool attach|detach AGENT TOOL                      give or take an agent's tool
    llmos tool versions TOOL [--source]                      every version, who wrote/approved
    llmos tool rollback TOOL VERSION                         put an older version back in use
    llmos tool remove TOOL                                   delete a tool
    llmos grant AGENT KIND TARGET [--mode r|rw] [--revoke]   agent / shared-files grants
    llmos approvals [list|show ID|approve ID|deny ID]        pending calls and agent-written
                    [--reason R]                             tools (show: with their source)
    llmos audit [--agent NAME] [--limit N]                   the audit log

They are clients of the HTTP API (`cli/common.api`); on the local kernel
service the CLI acts as the user "local" (the owner of the CLI's agents).

Left out: acting as another user from the CLI (the HTTP API does that).
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from llmos.cli import render
from llmos.cli.common import api, dump, fail, group, out
from llmos.client.base import seg

tool_app = group("User tools: Python functions agents can call (run in a sandbox).")


@tool_app.command("add")
def tool_add(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A .py file; each public function is a tool.")],
    exclusive: Annotated[
        bool | None, typer.Option("--exclusive/--shared", help="One call at a time.")
    ] = None,
    irreversible: Annotated[
        bool | None,
        typer.Option("--irreversible/--reversible", help="Each call needs your approval."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Register the functions of FILE as tools (schema from signature and docstring).

    Example: llmos tool add weather.py && llmos tool attach alice get_weather
    """
    try:
        source = file.expanduser().read_text(encoding="utf-8")
    except OSError as e:
        fail(f"cannot read {file}: {e.strerror or e}")

    body = {"source": source, "exclusive": exclusive, "irreversible": irreversible}
    with api(ctx) as client:
        added = client.post("/tools", body)["tools"]
    if as_json:
        dump(added)
        return
    for t in added:
        flags = [f for f in ("exclusive", "irreversible") if t[f]]
        extra = f" [{', '.join(flags)}]" if flags else ""
        out.print(
            f"added [bold]{t['name']}[/] v{t['version']}{escape(extra)}: {escape(t['description'])}"
        )


@tool_app.command("list")
def tool_list(
    ctx: typer.Context,
    agent_arg: Annotated[
        str | None, typer.Argument(metavar="[AGENT]", help="Only the tools attached to this agent.")
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", "-a", help="Same as AGENT.", hidden=True)
    ] = None,
    builtin: Annotated[
        bool, typer.Option("--builtin", help="The built-in tools you can attach.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List your tools, the tools attached to an agent, or the built-in tools.

    Example: llmos tool list alice · llmos tool list --builtin && llmos tool attach alice calculate
    """
    if agent_arg and agent and agent_arg != agent:
        fail(f"name one agent: {agent_arg!r} or {agent!r}")
    who = agent_arg or agent
    if builtin and who:
        fail("--builtin and an agent do not go together")
    with api(ctx) as client:
        if who:
            rows = client.get(f"/agents/{seg(who)}/tools")["tools"]
        else:
            rows = client.get("/tools", builtin=builtin or None)["tools"]
    if as_json:
        dump(rows)
        return
    table = Table("name", "version", "flags", "arguments", "description")
    for t in rows:
        flags = ", ".join(f for f in ("builtin", "exclusive", "irreversible") if t.get(f))
        args = ", ".join(
            k for k in t["parameters"].get("properties", {}) if k != "request_heartbeat"
        )
        version = "" if t.get("builtin") else str(t["version"])
        table.add_row(t["name"], version, flags, args, escape(t["description"]))
    out.print(table if rows else "no tools")


@tool_app.command("attach")
def tool_attach(ctx: typer.Context, agent: str, tool: str) -> None:
    """Give AGENT the tool TOOL (and the grant to call it)."""

    with api(ctx) as client:
        client.put(f"/agents/{seg(agent)}/tools/{seg(tool)}")
    out.print(f"attached {tool} to {agent}")


@tool_app.command("detach")
def tool_detach(ctx: typer.Context, agent: str, tool: str) -> None:
    """Take TOOL away from AGENT."""

    with api(ctx) as client:
        client.delete(f"/agents/{seg(agent)}/tools/{seg(tool)}")
    out.print(f"detached {tool} from {agent}")


@tool_app.command("versions")
def tool_versions(
    ctx: typer.Context,
    tool: str,
    source: Annotated[bool, typer.Option("--source", help="Print each version's source.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List every version of TOOL: who wrote it, who approved it, which is in use."""

    with api(ctx) as client:
        rows = client.get(f"/tools/{seg(tool)}/versions")["versions"]
    if as_json:
        dump(rows)
        return
    table = Table("version", "in use", "written by", "approved by", "when", "description")
    for v in rows:
        table.add_row(
            str(v["version"]),
            "*" if v["current"] else "",
            escape(v["author"] or ""),
            escape(v["approved_by"] or ""),
            render.when(v["created_at"]) if v["created_at"] else "",
            escape(v["description"]),
        )
    out.print(table)
    for v in rows if source else []:
        out.rule(f"{tool} v{v['version']}")
        out.print(v["source"], markup=False, highlight=False)


@tool_app.command("rollback")
def tool_rollback(ctx: typer.Context, tool: str, version: int) -> None:
    """Put VERSION of TOOL back in use (agents that have TOOL get it at their next step).

    Example: llmos tool versions get_weather && llmos tool rollback get_weather 1
    """

    with api(ctx) as client:
        restored = client.post(f"/tools/{seg(tool)}/rollback", {"version": version})
    out.print(f"{tool} is at version {restored['version']} again")


@tool_app.command("remove")
def tool_remove(ctx: typer.Context, tool: str) -> None:
    """Delete a tool (every agent loses it)."""

    with api(ctx) as client:
        client.delete(f"/tools/{seg(tool)}")
    out.print(f"removed {tool}")


class GrantKind(enum.StrEnum):
    agent = "agent"
    files = "files"
    net = "net"


def grant(
    ctx: typer.Context,
    agent: str,
    kind: Annotated[
        GrantKind,
        typer.Argument(help="agent: may message TARGET; files: area; net: its tools reach host"),
    ],
    target: Annotated[
        str, typer.Argument(help="An agent name, a shared area, '*', or a host[:port].")
    ],
    mode: Annotated[str, typer.Option("--mode", help="For files: r or rw.")] = "rw",
    revoke: Annotated[bool, typer.Option("--revoke", help="Remove the grant.")] = False,
) -> None:
    """Grant AGENT access to message another agent or to use a shared file area.

    Example: llmos grant alice agent bob · llmos grant alice files team --mode r ·
    llmos grant alice net api.example.com:443
    """

    from llmos.client.base import RequestFailed

    with api(ctx) as client:
        if revoke:
            try:
                client.delete(f"/agents/{seg(agent)}/grants/{kind.value}/{seg(target)}")
                result: Any = True
            except RequestFailed as exc:
                if exc.status != 404 or "grant" not in str(exc):
                    raise
                result = False
        else:
            body = {"kind": kind.value, "target": target, "mode": mode}
            result = client.post(f"/agents/{seg(agent)}/grants", body)["grants"]
    if revoke:
        out.print(f"revoked {kind.value} {target} from {agent}" if result else "no such grant")
    else:
        out.print(
            f"{agent} now holds: "
            + ", ".join(f"{g['kind']}:{g['target']}({g['mode']})" for g in result)
        )


class ApprovalAction(enum.StrEnum):
    list = "list"
    show = "show"
    approve = "approve"
    deny = "deny"


def approvals(
    ctx: typer.Context,
    action: Annotated[ApprovalAction, typer.Argument()] = ApprovalAction.list,
    approval_id: Annotated[str | None, typer.Argument(help="For approve/deny.")] = None,
    reason: Annotated[str | None, typer.Option("--reason", "-r", help="Told to the agent.")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Decided ones too.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List, show, approve or deny what waits for you: calls of irreversible tools and
    tools your agents wrote (`show` prints such a tool's source and test results).

    Example: llmos approvals show appr-1234 · llmos approvals approve appr-1234
    """
    if action is ApprovalAction.list:
        with api(ctx) as client:
            rows = client.get("/approvals", status="all" if show_all else "pending")["approvals"]
        if as_json:
            dump(rows)
            return
        if not rows:
            out.print("no pending approvals")
            return
        table = Table("id", "agent", "tool", "arguments", "status", "asked")
        for a in rows:
            table.add_row(
                a["id"],
                a["agent"] or "",
                a["tool"],
                escape(_arguments_line(a)),
                a["status"],
                render.when(a["created_at"]),
            )
        out.print(table)
        return
    if not approval_id:
        fail(f"`llmos approvals {action.value}` needs an approval id (see `llmos approvals`)")
    if action is ApprovalAction.show:
        with api(ctx) as client:
            record = client.get(f"/approvals/{seg(approval_id)}")
        if as_json:
            dump(record)
        else:
            _show_approval(record)
        return

    body = {"approve": action is ApprovalAction.approve, "reason": reason}
    with api(ctx) as client:
        decided = client.post(f"/approvals/{seg(approval_id)}", body)
    turn = decided["turn"]
    if as_json:
        print(json.dumps(turn, ensure_ascii=False, default=str))
        return
    verb = "approved" if action is ApprovalAction.approve else "denied"
    out.print(f"{verb} {approval_id}; the agent's turn:")
    render.turn_view(out, turn)


def _proposal(a: dict[str, Any]) -> dict[str, Any] | None:
    """An agent-written tool's proposal (name, description, source, tests), else None."""
    if a["tool"] != "create_tool":
        return None
    try:
        found = json.loads(a["arguments"])
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _arguments_line(a: dict[str, Any]) -> str:
    p = _proposal(a)
    if p is None:
        return str(a["arguments"])
    lines = len(str(p.get("source", "")).splitlines())
    return f"new tool {p.get('name')}: {p.get('description')} ({lines} lines; approvals show)"


def _show_approval(a: dict[str, Any]) -> None:
    out.print(f"[bold]{a['id']}[/] · agent {escape(a['agent'] or a['agent_id'])} · {a['status']}")
    p = _proposal(a)
    if p is None:
        out.print(f"call: {escape(a['tool'])}({escape(a['arguments'])})")
    else:
        out.print(f"the agent wrote the tool [bold]{escape(str(p.get('name')))}[/]:")
        out.print(f"description: {escape(str(p.get('description')))}")
        out.rule("source")
        out.print(str(p.get("source", "")), markup=False, highlight=False)
        out.rule("test calls (in the sandbox)")
        for t in p.get("tests", []):
            out.print(f"{p.get('name')}({json.dumps(t['args'])}) -> {t['result']}", markup=False)
    if a["reason"]:
        out.print(f"reason: {escape(a['reason'])}")
    if a["result"]:
        out.print(f"outcome: {escape(a['result'])}")


def audit(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option("--agent", "-a")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the audit log: tool calls, denials, approvals (newest first)."""

    with api(ctx) as client:
        rows = client.get("/audit", agent=agent, limit=limit)["entries"]
    if as_json:
        dump(rows)
        return
    table = Table("time", "user", "agent", "syscall", "target", "decision", "detail")
    for e in rows:
        table.add_row(
            render.when(e["time"]),
            e["user"],
            e["agent"] or "",
            e["syscall"],
            e["target"] or "",
            e["decision"],
            escape(render.preview(e["detail"], 60)),
        )
    out.print(table if rows else "the audit log is empty")
