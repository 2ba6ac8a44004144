"""`llmos load AGENT PATH...`: documents into an agent's archival memory, with progress bars.

Text, Markdown, HTML and PDF files (directories are searched recursively) are
chunked, embedded with the agent's embedder and stored as passages; see
`memory/loader.py`. Rerunning the same command resumes an interrupted load and
adds nothing for files already in.

Left out: loading through a server (`--url`); this command opens the local
database, like `llmos agent set-embedder`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from llmos.cli.common import dump, err, fail, out, run

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel
    from llmos.memory.loader import LoadProgress


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

    def on_progress(p: LoadProgress) -> None:
        if "overall" not in tasks:
            tasks["overall"] = bars.add_task("all files", total=p.total)
        bars.update(tasks["overall"], completed=p.done, total=p.total)
        task = tasks.get(p.path)
        if task is None:
            # one bar per file, added as the file starts
            name = escape(Path(p.path).name)
            task = tasks[p.path] = bars.add_task(
                f"  [{p.file_index + 1}/{p.files_total}] {name}", total=p.file_total
            )
        bars.update(task, completed=p.file_done)

    async def body(kernel: Kernel) -> Any:
        from llmos.memory.embedders import EmbeddingError

        try:
            with bars:
                return await kernel.load_documents(
                    agent,
                    list(paths),
                    progress=on_progress,
                    chunk_size=chunk_size,
                    overlap=overlap,
                    batch_size=batch_size,
                )
        except EmbeddingError as e:
            # what was committed stays: the same command continues from there
            raise ValueError(f"{e} (the load stopped; run the command again to resume)") from e

    report = run(ctx, body)
    if as_json:
        dump(report.as_dict())
    else:
        for f in report.files:
            line = f"{f.status:<9} {escape(f.path)}: {f.added} of {f.chunks} chunks added"
            if f.removed:
                line += f", {f.removed} old passages removed"
            if f.error:
                line += f" — {escape(f.error)}"
            out.print(line)
        out.print(f"{report.added} passages added to {escape(agent)} in {report.seconds:.1f} s")
    if report.failed:
        raise typer.Exit(1)
