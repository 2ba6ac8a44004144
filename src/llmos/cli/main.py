"""The `llmos` command: the shell of the OS — agents, one-shot messages, and a chat REPL.

    llmos agent create|list|show|delete   manage agents
    llmos send NAME "message"             one turn, reply on stdout (for scripts)
    llmos chat [NAME]                     interactive chat with slash commands
    llmos serve [--host H] [--port P]     the HTTP API (OpenAI-compatible too)
    llmos user create|list|key NAME       users of the HTTP API and their keys

Every command opens the kernel on `--home` (default `$LLMOS_HOME` or
`~/.llmos`), runs the async Kernel API under one event loop, and closes it.
User errors (unknown agent, duplicate name, too-long message, bad model
string, a failed turn) end with a one-line `error: ...` on stderr and exit
code 1, never a traceback; set `LLMOS_DEBUG=1` to see the traceback anyway.

Start-up time matters (`llmos send` is called from scripts), so the kernel and
everything under it are imported inside the commands, never at module level.

Left out: `llmos load`, `llmos bench` (their own issues),
editing blocks from the command line, and streaming replies token by token.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from llmos.cli import render

if TYPE_CHECKING:
    from llmos.agent.loop import Turn
    from llmos.kernel.kernel import Kernel

T = TypeVar("T")

EPILOG = (
    "Examples:\n\n"
    "  llmos agent create alice --model openai/gpt-4o-mini --persona persona.txt\n\n"
    '  llmos send alice "Hi, I am Bob and I like sailing."\n\n'
    '  llmos send alice "What do I like?" --json | jq .reply\n\n'
    "  llmos chat alice\n\n"
    "Models: local/gemma-3-270m (embedded, the default), local:/path/model.gguf, "
    "openai/MODEL (with --base-url or OPENAI_BASE_URL), ollama/MODEL, anthropic/MODEL "
    "(ANTHROPIC_API_KEY), bedrock/MODEL_ID (AWS credentials, AWS_REGION). "
    "See `llmos models`."
)

app = typer.Typer(
    name="llmos",
    help="llmos — an operating system for LLM agents with self-managed memory.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    # A user never sees a traceback for their own mistakes (see _user_errors);
    # rich's traceback pretty-printer would only cost start-up time.
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
agent_app = typer.Typer(
    help="Create, list, inspect and delete agents.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(agent_app, name="agent")
user_app = typer.Typer(
    help="Users of the HTTP API (llmos serve) and their API keys.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(user_app, name="user")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class Layout(enum.StrEnum):
    stable = "stable"
    classic = "classic"


@dataclass(slots=True)
class _State:
    home: Path | None  # None: the kernel's default ($LLMOS_HOME or ~/.llmos)


@app.callback()
def _main(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="LLMOS_HOME",
            help="Directory holding llmos's database. \\[default: ~/.llmos]",
            show_default=False,
        ),
    ] = None,
) -> None:
    ctx.obj = _State(home=home.expanduser() if home else None)


# --- plumbing -----------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    # One plain line: scripts grep it, and rich would wrap it at 80 columns.
    first, *_ = (message.strip() or "unknown error").splitlines() or [""]
    print(f"error: {first}", file=sys.stderr)
    raise typer.Exit(1)


def _user_error_types() -> tuple[type[BaseException], ...]:
    from llmos.kernel.kernel import AgentExists, AgentNotFound, MessageTooLong
    from llmos.llm.core import CoreError

    # ValueError covers bad model strings, layouts, block limits and names.
    return (AgentNotFound, AgentExists, MessageTooLong, CoreError, ValueError, OSError)


@contextmanager
def _user_errors() -> Iterator[None]:
    types = _user_error_types()
    try:
        yield
    except types as exc:
        if os.environ.get("LLMOS_DEBUG"):
            raise
        _fail(_message(exc))


def _message(exc: BaseException) -> str:
    # LookupError's str() is the repr of its argument; show the plain text.
    return str(exc.args[0]) if isinstance(exc, LookupError) and exc.args else str(exc)


def _home(ctx: typer.Context) -> Path | None:
    return ctx.obj.home if isinstance(ctx.obj, _State) else None


def _run(ctx: typer.Context, body: Callable[[Kernel], Awaitable[T]]) -> T:
    """Open the kernel, await `body(kernel)` on a fresh event loop, close the kernel."""
    from llmos.kernel.kernel import Kernel

    async def main() -> T:
        kernel = Kernel.open(_home(ctx))
        try:
            return await body(kernel)
        finally:
            await kernel.close()

    with _user_errors():
        return asyncio.run(main())


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


def _dump(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# --- agent ----------------------------------------------------------------------------


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
            _fail(f"--block wants LABEL=TEXT, got {item!r}")
        extra[label.strip()] = _text_or_file(text) or ""

    async def body(kernel: Kernel) -> dict[str, Any]:
        from llmos.llm.registry import DEFAULT_MODEL

        return await kernel.create_agent(
            name,
            model=model or DEFAULT_MODEL,
            base_url=base_url,
            persona=_text_or_file(persona),
            human=_text_or_file(human),
            blocks_=extra,
            block_limit=block_limit,
            context_window=context_window,
            layout=layout.value,
            embedder=embedder,
        )

    desc = _run(ctx, body)
    if as_json:
        _dump(desc)
    else:
        render.agent_created(out, desc)


@agent_app.command("list")
def agent_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List agents: name, model, and when each was created."""

    async def body(kernel: Kernel) -> list[dict[str, Any]]:
        return kernel.list_agents()

    rows = _run(ctx, body)
    if as_json:
        _dump(rows)
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

    async def body(kernel: Kernel) -> dict[str, Any]:
        return kernel.get_agent(name)

    desc = _run(ctx, body)
    if as_json:
        _dump(desc)
    else:
        render.agent_details(out, desc)


@agent_app.command("delete")
def agent_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Agent name or id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an agent with all its messages and archival memory (asks first)."""

    async def check(kernel: Kernel) -> dict[str, Any]:
        return kernel.get_agent(name)

    desc = _run(ctx, check)  # an unknown name fails before the question
    if not yes:
        typer.confirm(
            f"Delete agent {desc['name']!r} with {desc['recall_count']} messages and "
            f"{desc['archival_count']} archival passages?",
            abort=True,
        )

    async def body(kernel: Kernel) -> None:
        await kernel.delete_agent(desc["id"])

    _run(ctx, body)
    out.print(f"Deleted agent {escape(desc['name'])}.")


# --- send -----------------------------------------------------------------------------


@app.command("send")
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
        _fail("the message is empty")

    async def body(kernel: Kernel) -> Turn:
        return await kernel.send(name, text)

    turn = _run(ctx, body)
    if as_json:
        _dump(turn.as_dict())
    elif turn.reply:
        print(turn.reply)
    if turn.error:
        _fail(f"the turn failed ({turn.stop_reason}): {turn.error}")
    if not turn.reply and not as_json:
        print(f"note: the turn ended ({turn.stop_reason}) without a reply", file=sys.stderr)


# --- chat -----------------------------------------------------------------------------

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


@app.command("chat")
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
    from llmos.kernel.kernel import AgentNotFound, Kernel

    with _user_errors(), asyncio.Runner() as runner:
        # One event loop for the whole session: cores hold HTTP clients bound to it.
        kernel = Kernel.open(_home(ctx))
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
            _Chat(kernel, runner, desc).loop()
        finally:
            runner.run(kernel.close())


class _Chat:
    """The REPL: reads lines, runs slash commands, sends everything else."""

    def __init__(self, kernel: Kernel, runner: asyncio.Runner, desc: dict[str, Any]) -> None:
        self.kernel = kernel
        self.runner = runner
        self.agent = desc["id"]
        self.name = desc["name"]
        self.user_errors = _user_error_types()
        self.tty = sys.stdin.isatty()
        out.print(
            f"Chatting with [bold]{escape(self.name)}[/] ({escape(desc['model'])}). "
            "Type /help for commands, /exit or Ctrl-D to leave."
        )

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
                out.print(f"[red]error:[/] {escape(_message(exc))}")

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


# --- users and the server -----------------------------------------------------------


def _access(ctx: typer.Context) -> Any:
    from llmos.access.policy import AccessManager
    from llmos.kernel.kernel import default_home
    from llmos.storage.db import Database

    home = _home(ctx) or default_home()
    return AccessManager(Database.open(Path(home) / "llmos.db"))


def _user_call(ctx: typer.Context, body: Callable[[Any], T]) -> T:
    from llmos.access.policy import UserExists, UserNotFound

    access = None
    try:
        access = _access(ctx)
        return body(access)
    except (UserExists, UserNotFound, ValueError, OSError) as exc:
        if os.environ.get("LLMOS_DEBUG"):
            raise
        _fail(_message(exc))
    finally:
        if access is not None:
            access.db.close()


@user_app.command("create")
def user_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The user's name (owner of their agents).")],
) -> None:
    """Create a user and print their API key (shown once: store it now).

    Example: llmos user create alice
    """
    user, key = _user_call(ctx, lambda access: access.create_user(name))
    # The key alone on stdout, so `KEY=$(llmos user create alice)` works.
    print(key)
    print(
        f"Created user {user.name}. This key is shown only now; send it as "
        "'Authorization: Bearer <key>'.",
        file=sys.stderr,
    )


@user_app.command("key")
def user_key(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="An existing user.")],
    revoke: Annotated[
        bool, typer.Option("--revoke-old", help="Revoke the user's other keys first.")
    ] = False,
) -> None:
    """Issue a new API key for a user (e.g. one who lost theirs) and print it once."""

    def body(access: Any) -> str:
        if revoke:
            access.revoke_keys(name)
        return access.create_key(name)

    print(_user_call(ctx, body))


@user_app.command("list")
def user_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List users and how many live keys each has (keys themselves are never shown)."""
    rows = _user_call(ctx, lambda access: access.list_users())
    if as_json:
        _dump(rows)
    elif not rows:
        out.print("No users yet. Create one with: llmos user create NAME")
    else:
        for r in rows:
            out.print(f"{escape(r['name'])}  keys: {r['keys']}  id: {r['id']}")


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port.")] = 8283,
    rate: Annotated[
        float, typer.Option("--rate-limit", min=0, help="Requests per second per user (0: off).")
    ] = 50.0,
    burst: Annotated[
        float, typer.Option("--burst", min=1, help="Largest burst of requests per user.")
    ] = 200.0,
    max_body: Annotated[
        int, typer.Option("--max-body", min=1024, help="Largest request body, in bytes.")
    ] = 1 << 20,
    allow_model: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-model",
            metavar="PATTERN",
            help="Model strings users may choose (glob, repeatable). \\[default: any]",
            show_default=False,
        ),
    ] = None,
    allow_base_url: Annotated[
        bool,
        typer.Option(
            "--allow-base-url",
            help="Let users choose an agent's base_url (the server's provider key goes there).",
        ),
    ] = False,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy",
            envvar="LLMOS_POLICY",
            help="Scheduling of LLM calls on each core: fifo, rr (round robin; preempts the "
            "embedded model every --quantum tokens) or priority (with aging).",
        ),
    ] = None,
    quantum: Annotated[
        int | None,
        typer.Option(
            "--quantum", envvar="LLMOS_QUANTUM", min=1, help="Round-robin quantum, tokens."
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Server processes, each with its own kernel on the same database; an agent "
            "runs in one of them at a time (agent leases). More CPU for many agents on "
            "remote models; each process has its own rate limiter and process table.",
        ),
    ] = 1,
) -> None:
    """Serve the HTTP API: many users, one kernel; OpenAPI docs at /docs.

    Make a key first with: llmos user create NAME
    Example: llmos serve --port 8283, then
    curl -H "Authorization: Bearer $KEY" localhost:8283/v1/agents
    """
    import uvicorn

    from llmos.server.app import create_app
    from llmos.server.deps import ServerConfig

    config = ServerConfig(
        max_body_bytes=max_body,
        rate=rate,
        burst=burst,
        models=tuple(allow_model) if allow_model else None,
        allow_base_url=allow_base_url,
    )
    if policy is not None:
        from llmos.kernel.policies import POLICIES

        if policy not in POLICIES:
            _fail(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
        os.environ["LLMOS_POLICY"] = policy  # the kernel reads these when it boots
    if quantum is not None:
        os.environ["LLMOS_QUANTUM"] = str(quantum)
    if workers > 1:
        import dataclasses
        import json

        home = _home(ctx)
        if home is not None:
            os.environ["LLMOS_HOME"] = str(home)
        os.environ["LLMOS_SHARED_DB"] = "1"  # each worker's kernel takes agent leases
        os.environ["LLMOS_SERVE_CONFIG"] = json.dumps(dataclasses.asdict(config))
        err.print(f"llmos serving on http://{host}:{port} with {workers} workers (docs at /docs)")
        uvicorn.run(
            "llmos.server.app:app_from_env",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="info",
        )
        return
    with _user_errors():
        application = create_app(config=config, home=_home(ctx))
        err.print(f"llmos serving on http://{host}:{port} (docs at /docs)")
        uvicorn.run(application, host=host, port=port, log_level="info")


# `llmos models` and `llmos agent set-embedder` live in their own module.
from llmos.cli import files_cmds as _files_cmds  # noqa: E402, F401
from llmos.cli import kernel_cmds as _kernel_cmds  # noqa: E402, F401

# `llmos load AGENT PATH...`: documents into archival memory.
from llmos.cli import load_cmds as _load_cmds  # noqa: E402, F401

# `llmos mcp add|list|remove`: MCP servers' tools.
from llmos.cli import mcp_cmds as _mcp_cmds  # noqa: E402, F401
from llmos.cli import providers as _providers  # noqa: E402, F401

# `llmos tool|grant|approvals|audit` (issue 6) too.
from llmos.cli import tools_cmds as _tools_cmds  # noqa: E402, F401

if __name__ == "__main__":
    app(prog_name="llmos")
