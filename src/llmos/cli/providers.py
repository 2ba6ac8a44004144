"""Provider commands of the shell: `llmos models` and `llmos agent set-embedder`.

    llmos models [--no-check] [--json]        configured models, capabilities, reachability
    llmos agent set-embedder NAME SPEC        switch embedder, re-embed archival (progress bar)

`llmos models` lists the models the agents use and the providers configured
in the environment (OpenAI-compatible, Ollama, Anthropic, Bedrock, the
embedded model, the user's overrides file) with each one's context window and
capabilities from `llm/models.py`, and probes every endpoint at once with a
short timeout under one overall deadline, so it never hangs.

These commands register themselves on the apps of `cli/main.py` when it
imports this module; like everything there, they import the kernel and the
providers only when they run.

Left out: editing the overrides file from the command line, and re-embedding
only some of an agent's passages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from llmos.cli import render
from llmos.cli.main import _dump, _run, agent_app, app, err, out

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel


@app.command("models")
def models(
    ctx: typer.Context,
    check: Annotated[
        bool,
        typer.Option("--check/--no-check", help="Probe whether each endpoint answers."),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List configured models: context window, capabilities, and whether each is reachable.

    Example: llmos models --no-check
    """

    async def body(kernel: Kernel) -> list[dict[str, Any]]:
        from llmos.llm.models import check as probe_all
        from llmos.llm.models import configured

        endpoints = configured(kernel.agent_models())
        if not check:
            return [ep.as_dict() for ep in endpoints]
        with err.status("checking endpoints…"):
            reach = await probe_all(endpoints)
        return [ep.as_dict(r) for ep, r in zip(endpoints, reach, strict=True)]

    rows = _run(ctx, body)
    if as_json:
        _dump(rows)
    else:
        out.print(render.models_table(rows))


@agent_app.command("set-embedder")
def agent_set_embedder(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Agent name or id.")],
    spec: Annotated[
        str,
        typer.Argument(
            help="Embedder: local/all-MiniLM-L6-v2, openai/MODEL, or bedrock/MODEL_ID "
            "(amazon.titan-embed-text-v2:0, cohere.embed-english-v3)."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Switch an agent's embedder and re-embed all its archival passages.

    The old vectors are replaced in one transaction at the end: if anything
    fails, the agent keeps its old embedder.
    Example: llmos agent set-embedder alice bedrock/amazon.titan-embed-text-v2:0
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(
        TextColumn("re-embedding archival memory"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )

    async def body(kernel: Kernel) -> dict[str, Any]:
        from llmos.memory.embedders import EmbeddingError

        task = bar.add_task("embed", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            with bar:
                return await kernel.set_embedder(name, spec, progress=progress)
        except EmbeddingError as exc:
            # A user-facing failure (bad key, unreachable endpoint): one line, no traceback.
            raise ValueError(str(exc)) from None

    result = _run(ctx, body)
    if as_json:
        _dump(result)
    else:
        out.print(
            f"Agent [bold]{escape(result['agent'])}[/] now embeds with "
            f"{escape(result['embedder'])} ({result['dim']}-d): {result['passages']} passages "
            f"re-embedded (was {escape(result['previous'])})."
        )
