"""`llmos models`: the configured models and providers, and whether each answers.

    llmos models [--no-check] [--json]        configured models, capabilities, reachability

`llmos models` lists the models the agents use and the providers configured
in the environment (OpenAI-compatible, Ollama, Anthropic, Bedrock, the
embedded model, the user's overrides file) with each one's context window and
capabilities from `llm/models.py`, and probes every endpoint at once with a
short timeout under one overall deadline, so it never hangs.

The command imports the kernel and the providers only when it runs.

Left out: editing the overrides file from the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmos.cli import render
from llmos.cli.common import dump, err, out, run

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel


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
        from llmos.llm.endpoints import check as probe_all
        from llmos.llm.endpoints import configured

        endpoints = configured(kernel.agent_models())
        if not check:
            return [ep.as_dict() for ep in endpoints]
        with err.status("checking endpoints…"):
            reach = await probe_all(endpoints)
        return [ep.as_dict(r) for ep, r in zip(endpoints, reach, strict=True)]

    rows = run(ctx, body)
    if as_json:
        dump(rows)
    else:
        out.print(render.models_table(rows))
