"""`llmos send` and `llmos chat`: one turn for scripts, and the interactive chat REPL.

    llmos send NAME "message" [--json]   one turn, the reply on stdout ("-" reads stdin)
    llmos chat [NAME]                    a REPL with slash commands (/help lists them)

Both are clients of the HTTP API (`cli/common.api`). A turn is streamed
(`POST /v1/agents/{agent}/messages` with `stream`): the chat shows thoughts,
calls and replies as they happen, and a reply's `token` events as they are
generated, on cores that stream; `send` streams tokens only to a terminal, so
a script's stdout holds exactly the reply. A user error inside the chat is
printed and the session goes on; Ctrl-C during a turn cancels that turn
(`POST .../cancel`), keeping what it did so far.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from llmos.cli import render
from llmos.cli.common import (
    api,
    err,
    error_text,
    home_dir,
    out,
    user_error_types,
    user_errors,
)
from llmos.cli.sending import Tokens, message_text, send_turn
from llmos.client.base import RequestFailed, ServerFailed, seg

if TYPE_CHECKING:
    from rich.console import Console

    from llmos.client.base import BaseClient


def send(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Agent name or id.")],
    message: Annotated[str, typer.Argument(help='The message; "-" reads it from stdin.')],
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the whole turn (replies, calls, usage) as JSON."),
    ] = False,
) -> None:
    """Send one message, run the agent's turn, and print its reply.

    Exits 1 with an error on stderr if the turn failed.
    Example: llmos send alice "Remember that my sister is called Ada."
    """
    with user_errors():
        text = message_text(message)
    with api(ctx) as client:
        send_turn(client, name, text, as_json)


CHAT_HELP = """\
[bold]Commands[/]
  /memory          the agent's core memory blocks
  /context         the context window's sections and token counts
  /archival QUERY  search archival memory
  /search QUERY    search the conversation history (recall memory)
  /retry           forget the agent's last answer and run your last message again
  /rethink TEXT    rewrite the agent's last inner thoughts
  /help            this help
  /exit            leave (also Ctrl-D or Ctrl-C)
Anything else is sent to the agent."""


def chat(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            help='Agent name or id. \\[default: "assistant", created with the default model '
            "if missing]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Chat with an agent; its inner thoughts and function calls are shown dimmed.

    Example: llmos chat alice   (then /help for the slash commands)
    """
    from llmos.client.local import default_home

    with api(ctx) as client:
        try:
            desc = client.get(f"/agents/{seg(name or 'assistant')}")
        except RequestFailed as exc:
            if name is not None or exc.status != 404:
                raise
            with err.status("creating agent 'assistant'…"):
                desc = client.post("/agents", {"name": "assistant"})
            out.print(
                f"Created agent [bold]assistant[/] with the default model {escape(desc['model'])}."
            )
        _Chat(client, desc, home_dir(ctx) or default_home()).loop()


SMALL_MODEL_NOTE = """\
[dim]Note: {model} is a tiny model that runs offline on your CPU;
it answers short, simple messages and little more. For a stronger one:
  llmos agent create NAME --model openai/MODEL
    (any OpenAI-compatible server: OPENAI_BASE_URL, OPENAI_API_KEY)
  llmos agent create NAME --model ollama/MODEL   (a local Ollama server)
or anthropic/MODEL, bedrock/MODEL_ID; `llmos models` lists what is set up.
This note is shown once.[/]"""


def small_model_note(model: str, home: Path) -> None:
    """Say once per home, on stderr, that a small default model is small and how to change it."""
    from llmos.llm.models import lookup

    try:
        if lookup(model).size_class != "small":
            return
    except ValueError:  # a malformed overrides file is reported elsewhere
        return
    marker = home / ".small-model-note-shown"
    if marker.exists():
        return
    err.print(SMALL_MODEL_NOTE.format(model=escape(model)))
    with suppress(OSError):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


class _Chat:
    """The REPL: reads lines, runs slash commands, sends everything else."""

    def __init__(self, client: BaseClient, desc: dict[str, Any], home: Path) -> None:
        self.client = client
        self.agent = desc["id"]
        self.path = f"/agents/{seg(desc['id'])}"
        self.name = desc["name"]
        self.user_errors = user_error_types()
        self.tty = sys.stdin.isatty()
        out.print(
            f"Chatting with [bold]{escape(self.name)}[/] ({escape(desc['model'])}). "
            "Type /help for commands, /exit or Ctrl-D to leave."
        )
        small_model_note(desc["model"], home)

    def loop(self) -> None:
        while True:
            try:
                line = out.input("[bold cyan]you>[/] ").strip()
            except (EOFError, KeyboardInterrupt):
                out.print()
                return
            if not self.tty:
                out.print(escape(line))  # piped input: keep the transcript readable
            if not line:
                continue
            try:
                if line.startswith("/"):
                    if not self.command(line):
                        return
                else:
                    self.turn(self.client.stream(f"{self.path}/messages", {"text": line}))
            except self.user_errors as exc:
                if os.environ.get("LLMOS_DEBUG"):
                    raise
                out.print(f"[red]error:[/] {escape(error_text(exc))}")

    def command(self, line: str) -> bool:
        """Run one slash command; False means leave."""
        cmd, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        cmd = cmd.lower()
        c = self.client
        if cmd in ("exit", "quit", "q"):
            return False
        if cmd in ("help", "?"):
            out.print(CHAT_HELP)
        elif cmd == "memory":
            out.print(render.blocks_table(c.get(self.path)["blocks"]))
        elif cmd == "context":
            render.context_view(out, c.get(f"{self.path}/context"))
        elif cmd in ("archival", "search"):
            if not arg:
                out.print(f"[yellow]usage: /{cmd} QUERY[/]")
            elif cmd == "archival":
                with err.status("searching archival memory…"):
                    found = c.get(f"{self.path}/archival/search", query=arg)
                render.passages_view(out, found["results"], found["total"])
            else:
                found = c.get(f"{self.path}/recall/search", query=arg)
                render.recall_view(out, found["results"], found["total"])
        elif cmd == "retry":
            self.retry()
        elif cmd == "rethink":
            if not arg:
                out.print("[yellow]usage: /rethink TEXT[/]")
            else:
                c.post(f"{self.path}/rethink", {"thought": arg})
                out.print("[dim]Rewrote the agent's last inner thoughts.[/]")
        else:
            out.print(f"[yellow]unknown command /{escape(cmd)}; type /help for the list[/]")
        return True

    def retry(self) -> None:
        with err.status(f"{self.name} is thinking…", spinner="dots"):
            try:
                answer = self.client.post(f"{self.path}/messages/retry")
            except ServerFailed as exc:
                if not (isinstance(exc.body, dict) and "turn" in exc.body):
                    raise
                answer = exc.body["turn"]
        render.turn_view(out, answer)
        not_undone(out, answer)

    def turn(self, events: Iterator[dict[str, Any]]) -> None:
        # The spinner goes to stderr so piped stdout stays clean; it stops at the
        # first event, so nothing printed under it is erased.
        status = err.status(f"{self.name} is thinking…", spinner="dots")
        status.start()
        tokens = Tokens(out.file, live=True)
        try:
            for event in events:
                status.stop()
                show_event(out, event, tokens)
        except KeyboardInterrupt:
            status.stop()
            if tokens.pending():
                out.print()
            with suppress(*self.user_errors):
                self.client.post(f"{self.path}/cancel")
            out.print("[yellow]interrupted; what the turn did so far is kept[/]")
        finally:
            status.stop()


def show_event(console: Console, event: dict[str, Any], tokens: Tokens) -> None:
    """One event of a streamed turn, as the chat shows it."""
    kind = event.get("type")
    if kind == "token":
        tokens.token(event.get("text") or "")
        return
    if kind == "reply":
        text = event.get("text") or ""
        rest = tokens.rest(text)
        if rest is None:
            render.reply_line(console, text)
        elif rest:
            console.print(rest, style="bold", markup=False, highlight=False)
        return
    tokens.end_line()
    if kind == "reasoning":
        render.thought_line(console, (event.get("text") or "").strip())
    elif kind == "function_call":
        if event.get("name") != "send_message":
            render.call_line(console, event.get("name", "?"), event.get("arguments"))
    elif kind == "function_result":
        if not event.get("ok", True):
            render.failed_line(console, event.get("name", "?"), event.get("message"))
    elif kind == "error" and (event.get("error") or {}).get("type") == "server_error":
        # the server failed after the stream began (a failed turn's error comes with `done`)
        console.print(f"[red]error:[/] {escape(str(event['error'].get('message')))}")
    elif kind == "done":
        render.turn_end(console, event.get("turn") or {})


def not_undone(console: Console, answer: dict[str, Any]) -> None:
    """What a retry says it could not undo (effects beyond messages), if it says so."""
    for key in ("not_undone", "could_not_undo", "kept"):
        items = answer.get(key)
        if items:
            lines = items if isinstance(items, list) else [items]
            console.print("[yellow]the retry could not undo:[/]")
            for item in lines:
                console.print(f"[yellow]  - {escape(str(item))}[/]")
            return
