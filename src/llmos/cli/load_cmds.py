"""`llmos load AGENT PATH...`: documents into an agent's archival memory, with progress bars.

Text, Markdown, HTML and PDF files (directories are searched recursively) are
chunked, embedded with the agent's embedder and stored as passages; see
`memory/loader.py`. Rerunning the same command resumes an interrupted load and
adds nothing for files already in.

It runs in the kernel service (`POST /v1/agents/{agent}/documents`, with
its progress streamed to the bars here), which reads the files from this
machine's disk: the service's image of the agent (its passage count) stays
right, and a load never races the agent's turns there. Paths are sent
absolute, as the service runs in `/`.

Left out: loading through a remote server (`--url`), which would need the
files' contents uploaded; a server refuses paths of its own disk (403).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from llmos.cli.common import api, dump, err, fail, out, streamed
from llmos.client.base import seg


def load(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="The agent whose archival memory gets the text.")],
    paths: Annotated[list[Path], typer.Argument(help="Files or directories to load.")],
    chunk_size: Annotated[int, typer.Option(help="Characters per chunk.")] = 800,
    overlap: Annotated[int, typer.Option(help="Characters repeated between chunks.")] = 100,
    batch_size: Annotated[int, typer.Option(help="Chunks embedded per batch.")] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Load documents (text, Markdown, HTML, PDF) into an agent's archival memory."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"no such file or directory: {', '.join(missing)}")

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=as_json,
    )
    tasks: dict[str, Any] = {}

    def on_progress(p: dict[str, Any]) -> None:
        bars.start()  # on the first event: a refused request shows no bars
        if "overall" not in tasks:
            tasks["overall"] = bars.add_task("all files", total=p["total"])
        bars.update(tasks["overall"], completed=p["done"], total=p["total"])
        task = tasks.get(p["path"])
        if task is None:
            # one bar per file, added as the file starts
            name = escape(Path(p["path"]).name)
            task = tasks[p["path"]] = bars.add_task(
                f"  [{p['file_index'] + 1}/{p['files_total']}] {name}", total=p["file_total"]
            )
        bars.update(task, completed=p["file_done"])

    body = {
        "paths": [str(p.expanduser().absolute()) for p in paths],
        "chunk_size": chunk_size,
        "overlap": overlap,
        "batch_size": batch_size,
    }
    try:
        with api(ctx) as client:
            report = streamed(client, f"/agents/{seg(agent)}/documents", body, on_progress)
    finally:
        if bars.live.is_started:
            bars.stop()
    if as_json:
        dump(report)
    else:
        for f in report["files"]:
            line = f"{f['status']:<9} {escape(f['path'])}: "
            line += f"{f['added']} of {f['chunks']} chunks added"
            if f["removed"]:
                line += f", {f['removed']} old passages removed"
            if f["error"]:
                line += f" — {escape(f['error'])}"
            out.print(line)
        seconds = float(report["seconds"])
        out.print(f"{report['added']} passages added to {escape(agent)} in {seconds:.1f} s")
    if any(f["status"] == "failed" for f in report["files"]):
        raise typer.Exit(1)
