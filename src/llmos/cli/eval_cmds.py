"""`llmos eval`: measure a model's memory the way the memory papers do.

    llmos eval nested-kv --model local/gemma-3-270m [--size 10] [--baseline]
    llmos eval dmr --model openai/gpt-4o-mini --judge openai/gpt-4o
    llmos eval locomo locomo10.json --model ollama/llama3.1 --size 50
    llmos eval longmemeval longmemeval_s.json --model ... --judge ...
    llmos eval archival                                  (no model: retrieval only)

The evaluation runs in-process on a scratch kernel in a temporary directory
(its agents never appear among the user's), writes the report to `--json`
and appends each finished item to the state file beside it, so a rerun of the
same command resumes. The task modules are in `llmos/evals/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmos.cli.common import err, fail, out, user_errors

TASK_HELP = """Measure an agent's memory on a model, as MemGPT, LoCoMo and LongMemEval do.

TASK is one of:

  nested-kv: MemGPT's nested key-value retrieval (UUID pairs in archival
  memory, nesting levels 0-4, generated from --seed); accuracy.

  dmr: deep memory retrieval; a generated multi-session chat, asked about a
  fact of an early session that has left the window; accuracy by --judge
  (without one: the answer present in the reply) and token F1.

  locomo FILE: LoCoMo's QA over FILE (locomo10.json format); token F1.

  longmemeval FILE: LongMemEval over FILE (longmemeval_s.json format);
  accuracy by --judge (without one: answer in the reply) and token F1.

  archival: recall@5 and MRR of archival search on a built-in labelled set;
  no model is called (the agent's embedder is).

Each item runs through a fresh llmos agent that must page its memory back
in. --baseline also asks the same model in plain chat, the history cut to
the window. Results: a table, the JSON report (--json) and a state file
beside it (NAME.state.jsonl): rerun the same command to resume."""


def eval_(
    task: Annotated[
        str,
        typer.Argument(help="nested-kv, dmr, locomo, longmemeval or archival.", show_default=False),
    ],
    file: Annotated[
        Path | None, typer.Argument(help="The data file (locomo and longmemeval only).")
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="The model under test, as `llmos agent create "
            "--model` takes it (local/gemma-3-270m, openai/NAME, ollama/NAME, ...).",
        ),
    ] = "local/gemma-3-270m",
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="Server URL for openai/ and ollama/ models.")
    ] = None,
    baseline: Annotated[
        bool, typer.Option("--baseline", help="Also run the no-memory baseline (plain chat).")
    ] = False,
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Where to write the JSON report; the state file goes "
            "beside it. [default: ./llmos-eval-TASK-MODEL.json]",
            show_default=False,
        ),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(
            "--judge",
            help="A model that grades answers (dmr, longmemeval), "
            "e.g. openai/gpt-4o. Without it: is the answer in the reply.",
        ),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            "-n",
            min=1,
            help="How many items: generated tasks make this "
            "many (default 10); file tasks take the first N (default all).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated tasks.")] = 0,
    context_window: Annotated[
        int, typer.Option("--context-window", min=1024, help="The agents' context window.")
    ] = 2048,
    embedder: Annotated[
        str | None, typer.Option("--embedder", help="The agents' embedder (default: llmos's).")
    ] = None,
    memory_mode: Annotated[
        str | None,
        typer.Option(
            "--memory-mode",
            help="Who moves memory: the model by function calls (self), the kernel by "
            "paging (auto), or both (hybrid). Default: the model's (auto for small models).",
        ),
    ] = None,
) -> None:
    import asyncio
    import tempfile

    from llmos.evals import make_task
    from llmos.evals.harness import Settings
    from llmos.evals.runner import run_eval, table

    with user_errors():
        the_task = make_task(task, file, size=size, seed=seed)
    if baseline and task == "archival":
        fail("the archival task calls no model, so it has no baseline; drop --baseline")
    slug = "".join(c if c.isalnum() or c in "-." else "-" for c in model)
    path = json_path or Path(f"llmos-eval-{task}-{slug}.json")
    if memory_mode not in (None, "self", "auto", "hybrid"):
        fail(f"--memory-mode must be self, auto or hybrid, not {memory_mode!r}")
    settings = Settings(
        model=model,
        base_url=base_url,
        context_window=context_window,
        embedder=embedder,
        memory_mode=memory_mode,
    )

    async def main() -> dict:
        from llmos.kernel.kernel import Kernel

        with tempfile.TemporaryDirectory(prefix="llmos-eval-") as scratch:
            kernel = Kernel.open(scratch)
            try:
                judge_core = kernel.core(judge) if judge else None
                return await run_eval(
                    kernel,
                    the_task,
                    settings,
                    json_path=path,
                    baseline=baseline,
                    judge=judge_core,
                    console=err,
                )
            finally:
                await kernel.close()

    with user_errors():
        try:
            report = asyncio.run(main())
        except KeyboardInterrupt:
            fail(f"interrupted; rerun the same command to resume from {path}")
    out.print(table(report, the_task.metrics))
    out.print(f"report: {path}")
