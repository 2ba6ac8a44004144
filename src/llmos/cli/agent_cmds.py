"""`llmos agent`: create, list, show, delete, export and import agents; switch an embedder.

    llmos agent create NAME [--model M] [--persona P] ...   an agent with its core memory
    llmos agent list|show NAME|delete NAME                  the agents and their state
    llmos agent export NAME [-o FILE]                       the agent as one JSON document
    llmos agent import FILE [--name NEW]                    an agent from such a document
    llmos agent set NAME KEY=VALUE ...                      change settings (KEY= resets)
    llmos agent set-embedder NAME SPEC                      re-embed archival memory

All are clients of the HTTP API (`cli/common.api`). `set-embedder` runs in
the server's kernel (`POST /v1/agents/{agent}/embedder`, whose progress it
shows as a bar on stderr), so the service's image of the agent changes with
it; the old vectors are replaced in one transaction at the end, and if
anything fails (or the command is interrupted) the agent keeps its old embedder.

Left out: editing memory blocks from the command line (the HTTP API and the
agent itself do that), and re-embedding only some of an agent's passages.
"""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from llmos.cli import render
from llmos.cli.common import api, dump, err, fail, group, out, streamed
from llmos.client.base import RequestFailed, seg

agent_app = group("Create, list, inspect and delete agents.")


class Layout(enum.StrEnum):
    stable = "stable"
    classic = "classic"


def _text_or_file(value: str | None) -> str | None:
    """The value itself, or the contents of the file it names if that file exists."""
    if value is None:
        return None
    try:
        path = Path(value).expanduser()
        if path.is_file():
            return path.read_text(encoding="utf-8").strip()
    except OSError:
        pass  # e.g. a long persona text is "File name too long" as a path
    return value


@agent_app.command("create")
def agent_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The agent's name (unique per user).")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model string: local/gemma-3-270m (default), local:/path.gguf, "
            "openai/MODEL, ollama/MODEL, anthropic/MODEL, bedrock/MODEL_ID.",
            show_default=False,
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="Server URL for openai/ and ollama/ models."),
    ] = None,
    persona: Annotated[
        str | None,
        typer.Option("--persona", help="The agent's persona block: text, or a file to read."),
    ] = None,
    human: Annotated[
        str | None,
        typer.Option("--human", help="What the agent knows of its user: text, or a file."),
    ] = None,
    context_window: Annotated[
        int | None,
        typer.Option(
            "--context-window",
            min=1024,
            help="Tokens of context to use (at most the model's). \\[default: the model's]",
            show_default=False,
        ),
    ] = None,
    layout: Annotated[
        Layout,
        typer.Option(
            "--layout",
            help="stable: prefix-cache friendly window order; classic: MemGPT's layout.",
        ),
    ] = Layout.stable,
    embedder: Annotated[
        str | None,
        typer.Option(
            "--embedder",
            help="Embedder for archival memory. \\[default: $LLMOS_EMBEDDER or the built-in]",
            show_default=False,
        ),
    ] = None,
    block: Annotated[
        list[str] | None,
        typer.Option(
            "--block",
            "-b",
            metavar="LABEL=TEXT",
            help="An extra core memory block (TEXT may name a file). Repeatable.",
        ),
    ] = None,
    block_limit: Annotated[
        int, typer.Option("--block-limit", min=1, help="Characters allowed per block.")
    ] = 2000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the agent as JSON.")] = False,
) -> None:
    """Create an agent with its core memory.

    Example: llmos agent create alice --model openai/gpt-4o-mini --persona persona.txt
    """
    extra: dict[str, str] = {}
    for item in block or []:
        label, sep, text = item.partition("=")
        if not sep or not label.strip():
            fail(f"--block wants LABEL=TEXT, got {item!r}")
        extra[label.strip()] = _text_or_file(text) or ""

    if model and model.startswith("local:") and not Path(model[6:]).expanduser().is_absolute():
        # a model file named relative to here: the kernel may run in another directory
        model = "local:" + str(Path(model[6:]).expanduser().absolute())
    body = {
        "name": name,
        "model": model,
        "base_url": base_url,
        "persona": _text_or_file(persona),
        "human": _text_or_file(human),
        "blocks": extra or None,
        "block_limit": block_limit,
        "context_window": context_window,
        "layout": layout.value,
        "embedder": embedder,
    }
    with api(ctx) as client:
        desc = client.post("/agents", {k: v for k, v in body.items() if v is not None})
    if as_json:
        dump(desc)
    else:
        render.agent_created(out, desc)


@agent_app.command("list")
def agent_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List agents: name, model, and when each was created."""

    with api(ctx) as client:
        rows = client.get("/agents")["agents"]
    if as_json:
        dump(rows)
    elif not rows:
        out.print("No agents yet. Create one with: llmos agent create NAME")
    else:
        out.print(render.agents_table(rows))


@agent_app.command("show")
def agent_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Agent name or id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the description as JSON.")] = False,
) -> None:
    """Show an agent: model, window, memory blocks, summary, message counts, settings."""

    with api(ctx) as client:
        desc = client.get(f"/agents/{seg(name)}")
    if as_json:
        dump(desc)
    else:
        render.agent_details(out, desc)


@agent_app.command("delete")
def agent_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Agent name or id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an agent with all its messages and archival memory (asks first)."""

    with api(ctx) as client:
        desc = client.get(f"/agents/{seg(name)}")  # an unknown name fails before the question
        if not yes:
            typer.confirm(
                f"Delete agent {desc['name']!r} with {desc['recall_count']} messages and "
                f"{desc['archival_count']} archival passages?",
                abort=True,
            )
        client.delete(f"/agents/{seg(desc['id'])}")
    out.print(f"Deleted agent {escape(desc['name'])}.")


@agent_app.command("export")
def agent_export(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Agent name or id.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file. \\[default: stdout]"),
    ] = None,
) -> None:
    """Export an agent (blocks, messages, summary, archival passages) as one JSON document.

    Example: llmos agent export alice -o alice.llmos.json
    """
    with api(ctx) as client:
        doc = client.get(f"/agents/{seg(name)}/export")
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.expanduser().write_text(text, encoding="utf-8")
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror or e}")
    err.print(f"Exported agent {escape(doc['agent']['name'])} to {escape(str(output))}.")


@agent_app.command("import")
def agent_import(
    ctx: typer.Context,
    file: Annotated[
        str, typer.Argument(help="An export document (`llmos agent export`); - reads stdin.")
    ],
    new_name: Annotated[
        str | None, typer.Option("--name", help="Import under this name (the export's name taken).")
    ] = None,
    embedder: Annotated[
        str | None,
        typer.Option("--embedder", help="Embed its passages with this embedder instead."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the agent as JSON.")] = False,
) -> None:
    """Import an agent from an export document; its passages are embedded again.

    Example: llmos agent import alice.llmos.json --name alice2
    """
    try:
        raw = sys.stdin.read() if file == "-" else Path(file).expanduser().read_text("utf-8")
        doc = json.loads(raw)
    except OSError as e:
        fail(f"cannot read {file}: {e.strerror or e}")
    except ValueError as e:
        fail(f"{file} is not JSON: {e}")
    with api(ctx) as client:
        desc = client.post("/agents/import", doc, name=new_name, embedder=embedder)
    if as_json:
        dump(desc)
    else:
        render.agent_created(out, desc)


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

    task = bar.add_task("embed", total=None)

    def progress(p: dict[str, Any]) -> None:
        bar.start()  # on the first event: a refused request shows no bar
        bar.update(task, completed=p["done"], total=p["total"])

    try:
        with api(ctx) as client:
            path = f"/agents/{seg(name)}/embedder"
            result = streamed(client, path, {"embedder": spec}, progress)
    finally:
        if bar.live.is_started:
            bar.stop()
    if as_json:
        dump(result)
    else:
        out.print(
            f"Agent [bold]{escape(result['agent'])}[/] now embeds with "
            f"{escape(result['embedder'])} ({result['dim']}-d): {result['passages']} passages "
            f"re-embedded (was {escape(result['previous'])})."
        )


@agent_app.command("set")
def agent_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Agent name or id.")],
    pairs: Annotated[
        list[str],
        typer.Argument(
            metavar="KEY=VALUE...",
            help="Settings to change; KEY= (or KEY=default) resets one to its default.",
            show_default=False,
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the settings as JSON.")] = False,
) -> None:
    """Change an agent's settings, all checked before any is applied.

    Settings: max_steps, warning_fraction, flush_fraction, flush_target,
    max_tokens, temperature, priority, memory_mode (self|auto|hybrid),
    file_tools, agent_tools, self_tools (true|false), file_quota (bytes).

    Example: llmos agent set alice self_tools=true max_steps=20 temperature=
    """

    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"settings: want KEY=VALUE, got {pair!r}")
        # the server reads "5", "true", "0.3" as each setting's type; null resets it
        value = value.strip()
        changes[key.strip()] = None if value.lower() in ("", "null", "none", "default") else value
    with api(ctx) as client:
        try:
            desc = client.patch(f"/agents/{seg(name)}", {"settings": changes})
        except RequestFailed as exc:
            if exc.status != 422:
                raise
            # the kernel's own reading of the pairs names an unknown key with the known ones
            from llmos.kernel.settings import parse_settings

            parse_settings(pairs)  # raises InvalidRequest: one line
            raise
    if as_json:
        dump(desc["settings"])
        return
    settings = desc["settings"]
    shown = ", ".join(
        f"{k}={settings.get(k)}" + (" (default)" if v is None else "") for k, v in changes.items()
    )
    out.print(f"{escape(desc['name'])}: {escape(shown)}")
