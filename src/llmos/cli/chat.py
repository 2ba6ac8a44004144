"""`llmos send` and `llmos chat`: one turn for scripts, and the interactive chat REPL.

    llmos send NAME "message" [--json]   one turn, the reply on stdout ("-" reads stdin)
    llmos chat [NAME]                    a REPL with slash commands (/help lists them)

The chat keeps one kernel and one event loop for the whole session; a user
error inside it is printed and the session goes on. Replies are printed whole
when the turn ends: they are not streamed token by token.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from llmos.cli import render
from llmos.cli.common import (
    dump,
    err,
    error_text,
    fail,
    home_dir,
    out,
    run,
    user_error_types,
    user_errors,
)

if TYPE_CHECKING:
    from llmos.agent.loop import Turn
    from llmos.kernel.kernel import Kernel


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
    # From stdin, the trailing newline of `echo ... |` is not part of the message.
    text = sys.stdin.read().strip() if message == "-" else message
    if not text.strip():
        fail("the message is empty")

    async def body(kernel: Kernel) -> Turn:
        return await kernel.send(name, text)

    turn = run(ctx, body)
    if as_json:
        dump(turn.as_dict())
    elif turn.reply:
        print(turn.reply)
    if turn.error:
        fail(f"the turn failed ({turn.stop_reason}): {turn.error}")
    if not turn.reply and not as_json:
        print(f"note: the turn ended ({turn.stop_reason}) without a reply", file=sys.stderr)


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
    from llmos.kernel.kernel import AgentNotFound, Kernel, default_home

    with user_errors(), asyncio.Runner() as runner:
        # One event loop for the whole session: cores hold HTTP clients bound to it.
        kernel = Kernel.open(home_dir(ctx))
        try:
            try:
                desc = kernel.get_agent(name or "assistant")
            except AgentNotFound:
                if name is not None:
                    raise
                with err.status("creating agent 'assistant'…"):
                    desc = runner.run(kernel.create_agent("assistant"))
                out.print(
                    f"Created agent [bold]assistant[/] with the default model "
                    f"{escape(desc['model'])}."
                )
            _Chat(kernel, runner, desc, home_dir(ctx) or default_home()).loop()
        finally:
            runner.run(kernel.close())


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

    def __init__(
        self, kernel: Kernel, runner: asyncio.Runner, desc: dict[str, Any], home: Path
    ) -> None:
        self.kernel = kernel
        self.runner = runner
        self.agent = desc["id"]
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
                    self.turn(self.kernel.send(self.agent, line))
            except self.user_errors as exc:
                if os.environ.get("LLMOS_DEBUG"):
                    raise
                out.print(f"[red]error:[/] {escape(error_text(exc))}")

    def command(self, line: str) -> bool:
        """Run one slash command; False means leave."""
        cmd, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        cmd = cmd.lower()
        if cmd in ("exit", "quit", "q"):
            return False
        if cmd in ("help", "?"):
            out.print(CHAT_HELP)
        elif cmd == "memory":
            out.print(render.blocks_table(self.kernel.get_agent(self.agent)["blocks"]))
        elif cmd == "context":
            render.context_view(out, self.kernel.context(self.agent).as_dict())
        elif cmd in ("archival", "search"):
            if not arg:
                out.print(f"[yellow]usage: /{cmd} QUERY[/]")
            elif cmd == "archival":
                with err.status("searching archival memory…"):
                    found, total = self.runner.run(self.kernel.search_archival(self.agent, arg))
                render.passages_view(out, found, total)
            else:
                msgs, total = self.runner.run(self.kernel.search_recall(self.agent, arg))
                render.recall_view(out, msgs, total)
        elif cmd == "retry":
            self.turn(self.kernel.retry(self.agent))
        elif cmd == "rethink":
            if not arg:
                out.print("[yellow]usage: /rethink TEXT[/]")
            else:
                self.runner.run(self.kernel.rethink(self.agent, arg))
                out.print("[dim]Rewrote the agent's last inner thoughts.[/]")
        else:
            out.print(f"[yellow]unknown command /{escape(cmd)}; type /help for the list[/]")
        return True

    def turn(self, running: Coroutine[Any, Any, Turn]) -> None:
        turn: Turn | None = None
        # The spinner goes to stderr so piped stdout stays clean; print only after
        # it stops, or its transient line would erase what was printed under it.
        # Ctrl-C during a turn cancels the turn, not the session.
        with err.status(f"{self.name} is thinking…", spinner="dots"), suppress(KeyboardInterrupt):
            turn = self.runner.run(running)
        if turn is None:
            out.print("[yellow]interrupted; what the turn did so far is kept[/]")
        else:
            render.turn_view(out, turn)
