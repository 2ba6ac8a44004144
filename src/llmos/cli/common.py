"""What every `llmos` command shares: the consoles, the API client, the kernel, user errors.

Each command module imports its plumbing from here and nothing from
`cli/main.py` (which imports them all to wire the app), so the package has no
import cycle. `api()` gives a command with a route its HTTP client (the local
kernel service, `--url`, or the app in-process with `--no-daemon`); `run()`
opens the kernel on `--home` for the few commands without a route, awaits the
body on a fresh event loop and closes the kernel; `user_errors()` turns the
errors a user can cause into one `error: ...` line on stderr and exit code 1
(`LLMOS_DEBUG=1` shows the traceback instead).

Start-up time matters (`llmos send` is called from scripts), so the kernel is
imported inside the functions that open it, never at module level.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from llmos.cli.failures import error_text, print_error, user_error_types

if TYPE_CHECKING:
    from llmos.client.base import BaseClient
    from llmos.kernel.kernel import Kernel

T = TypeVar("T")

#: `-h` works as well as `--help`, on the app and on every command group
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def group(help: str) -> typer.Typer:
    """A command group (`llmos agent ...`) that shows its help when given no command."""
    return typer.Typer(help=help, no_args_is_help=True, context_settings=CONTEXT_SETTINGS)


@dataclass(slots=True)
class State:
    """The app's options, set by its callback on the typer context every command gets."""

    home: Path | None  # None: the kernel's default ($LLMOS_HOME or ~/.llmos)
    url: str | None = None  # a remote `llmos serve`
    key: str | None = None  # the API key for `url`
    no_daemon: bool = False  # serve the app in this process instead of the service
    idle: float | None = None  # the service's idle limit when this command starts it


def home_dir(ctx: typer.Context) -> Path | None:
    """The `--home` the command was given, or None for the kernel's default."""
    return ctx.obj.home if isinstance(ctx.obj, State) else None


def fail(message: str) -> NoReturn:
    """End the command with `error: MESSAGE` (its first line) on stderr and exit code 1."""
    print_error(message)
    raise typer.Exit(1)


@contextmanager
def user_errors() -> Iterator[None]:
    """Report a user error raised inside the block with `fail()`."""
    types = user_error_types()
    try:
        yield
    except types as exc:
        if os.environ.get("LLMOS_DEBUG"):
            raise
        fail(error_text(exc))


@contextmanager
def api(ctx: typer.Context) -> Iterator[BaseClient]:
    """The command's client of the HTTP API; user errors inside end the command."""
    state = ctx.obj if isinstance(ctx.obj, State) else State(home=None)
    with user_errors(), ExitStack() as stack:
        if state.url:
            from llmos.client.api import Client

            if not state.key:
                fail("--url needs an API key: pass --key or set LLMOS_KEY")
            client = Client(state.url, state.key)
        elif state.no_daemon:
            from llmos.client.unix import UnixClient
            from llmos.server.service import in_process

            path = stack.enter_context(in_process(state.home))
            client = UnixClient(path, where="the in-process kernel")
        else:
            from llmos.client.local import default_home, ensure

            client = ensure(state.home or default_home(), state.idle)
        with client:
            yield client


def streamed(
    client: BaseClient,
    path: str,
    body: dict[str, Any],
    on_progress: Callable[[dict[str, Any]], None],
) -> Any:
    """POST a long operation with `stream` (server/routes/bulk.py): pass each progress
    event to `on_progress`, and return the result (an error event ends the command)."""
    for event in client.stream(path, body):
        kind = event.get("type")
        if kind == "progress":
            on_progress(event)
        elif kind == "error":
            fail(str(event.get("error", {}).get("message") or "the operation failed"))
        elif kind == "done":
            return event.get("result")
    fail(f"{client.where} ended the stream without a result")


def run(ctx: typer.Context, body: Callable[[Kernel], Awaitable[T]]) -> T:
    """Open the kernel in this process, await `body(kernel)` on a fresh event loop, close
    the kernel: for the commands with no HTTP route, which work on the local home only."""
    import asyncio

    from llmos.kernel.kernel import Kernel

    if isinstance(ctx.obj, State) and ctx.obj.url:
        fail(f"`{ctx.command_path}` has no HTTP route: it works on this machine's home, not --url")

    async def main() -> T:
        kernel = Kernel.open(home_dir(ctx))
        try:
            return await body(kernel)
        finally:
            await kernel.close()

    with user_errors():
        return asyncio.run(main())


def dump(data: Any) -> None:
    """Print `data` as indented JSON (for `--json`)."""
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
