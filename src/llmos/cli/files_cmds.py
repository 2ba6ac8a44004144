"""File commands of the shell: an agent's files or a shared area, with versions.

    llmos files list    (--agent A | --shared AREA) [PREFIX]
    llmos files read    (--agent A | --shared AREA) PATH [--version N]
    llmos files write   (--agent A | --shared AREA) PATH [FILE | -]   (stdin with -)
    llmos files delete|versions (--agent A | --shared AREA) PATH
    llmos files rollback (--agent A | --shared AREA) PATH VERSION
    llmos files search  (--agent A | --shared AREA) QUERY

All are clients of the HTTP API (`cli/common.api`); `search` is
`GET .../file-search`.

Left out: quotas from the command line (a user's own writes are not capped).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.table import Table

from llmos.cli import render
from llmos.cli.common import api, dump, fail, group, out
from llmos.client.base import seg

files_app = group("Versioned files of agents and shared areas.")

Agent = Annotated[str | None, typer.Option("--agent", "-a", help="An agent's own files.")]
Shared = Annotated[str | None, typer.Option("--shared", "-s", help="A shared area.")]


def _area(agent: str | None, shared: str | None) -> str:
    """The API path of the area the options name."""
    if bool(agent) == bool(shared):
        fail("name exactly one of --agent or --shared")
    return f"/agents/{seg(agent)}" if agent else f"/shared/{seg(shared or '')}"


def _file(path: str) -> str:
    return quote(path.lstrip("/"), safe="/")


def _call(ctx: typer.Context, method: str, url: str, body: Any = None, **params: Any) -> Any:
    with api(ctx) as client:
        return client.request(method, url, json_body=body, params=params)


@files_app.command("list")
def files_list(
    ctx: typer.Context,
    prefix: str = "",
    agent: Agent = None,
    shared: Shared = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List files."""
    rows = _call(ctx, "GET", _area(agent, shared) + "/files", prefix=prefix)["files"]
    if as_json:
        dump(rows)
        return
    table = Table("path", "bytes", "version", "updated")
    for r in rows:
        table.add_row(r["path"], str(r["size"]), str(r["version"]), render.when(r["updated_at"]))
    out.print(table if rows else "no files")


@files_app.command("read")
def files_read(
    ctx: typer.Context,
    path: str,
    version: int | None = None,
    agent: Agent = None,
    shared: Shared = None,
) -> None:
    """Print a file (or one of its versions)."""
    f = _call(ctx, "GET", f"{_area(agent, shared)}/files/{_file(path)}", version=version)
    sys.stdout.write(f["content"])


@files_app.command("write")
def files_write(
    ctx: typer.Context,
    path: str,
    source: Annotated[str, typer.Argument(help="A local file, or - for stdin.")] = "-",
    agent: Agent = None,
    shared: Shared = None,
) -> None:
    """Write a file from a local file or stdin (a new version)."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as e:
        fail(f"cannot read {source}: {e.strerror or e}")
    url = f"{_area(agent, shared)}/files/{_file(path)}"
    v = _call(ctx, "PUT", url, {"content": text})["version"]
    out.print(f"wrote {escape(path)} (version {v})")


@files_app.command("delete")
def files_delete(ctx: typer.Context, path: str, agent: Agent = None, shared: Shared = None) -> None:
    """Delete a file (its versions stay)."""
    v = _call(ctx, "DELETE", f"{_area(agent, shared)}/files/{_file(path)}")["version"]
    out.print(f"deleted {escape(path)} (version {v})")


@files_app.command("versions")
def files_versions(
    ctx: typer.Context, path: str, agent: Agent = None, shared: Shared = None
) -> None:
    """List a file's versions."""
    url = f"{_area(agent, shared)}/file-versions/{_file(path)}"
    rows = _call(ctx, "GET", url)["versions"]
    table = Table("version", "bytes", "deleted", "when")
    for r in rows:
        table.add_row(
            str(r["version"]), str(r["size"]), "yes" if r["deleted"] else "", render.when(r["at"])
        )
    out.print(table)


@files_app.command("rollback")
def files_rollback(
    ctx: typer.Context, path: str, version: int, agent: Agent = None, shared: Shared = None
) -> None:
    """Make an old version current again (as a new version)."""
    url = f"{_area(agent, shared)}/file-rollback/{_file(path)}"
    v = _call(ctx, "POST", url, {"version": version})["version"]
    out.print(f"{escape(path)} is back at version {version}'s content (now version {v})")


@files_app.command("search")
def files_search(
    ctx: typer.Context, query: str, agent: Agent = None, shared: Shared = None
) -> None:
    """Find files by name or content."""
    if not query.strip():
        fail("the search query is empty")
    rows = _call(ctx, "GET", f"{_area(agent, shared)}/file-search", query=query)["results"]
    for r in rows:
        out.print(f"[bold]{escape(r['path'])}[/]: {escape(r['snippet'])}")
    if not rows:
        out.print("no matches")
