"""The `llmos` executable: a plain `llmos send` goes straight to the kernel service.

`llmos send NAME MESSAGE [--json]` is what scripts call in loops, so the
command should cost little beyond its turn. Loading the typer app (typer,
click, rich, its commands) takes a fresh process about 0.3 s before it
parses a word, and typer's parameter conversion more, so the launcher takes
a plain send itself, on the standard library: the local kernel service's
client (`client.local.ensure`, which starts the service when none answers)
and the code the typer command runs too (`cli.sending.send_turn`). A send is
plain when it has exactly two arguments and at most `--json`, with no
global option and neither `LLMOS_URL` nor `LLMOS_NO_DAEMON` set. Every
other command line, `--help` and anything unusual included, goes to the
typer app (`cli/main.py`) unchanged, so the two never read one command line
two ways.

Left out: a fast path for other commands (none is called in loops).
"""

from __future__ import annotations

import os
import sys


def plain_send(argv: list[str]) -> tuple[str, str, bool] | None:
    """(agent, message, as_json) when `argv` is a plain `send` (see above), else None."""
    if not argv or argv[0] != "send" or argv.count("--json") > 1:
        return None
    args = [a for a in argv[1:] if a != "--json"]
    if len(args) != 2 or any(a.startswith("-") and a != "-" for a in args):
        return None
    if os.environ.get("LLMOS_URL") or os.environ.get("LLMOS_NO_DAEMON"):
        return None
    return args[0], args[1], "--json" in argv


def main() -> None:
    """Run `llmos` with `sys.argv`."""
    send = plain_send(sys.argv[1:])
    if send is None:
        from llmos.cli.main import app

        app(prog_name="llmos")
        return
    sys.exit(_send(*send))


def _send(agent: str, message: str, as_json: bool) -> int:
    from llmos.cli.failures import error_text, print_error, user_error_types
    from llmos.cli.sending import message_text, send_turn
    from llmos.client.local import default_home, ensure

    try:
        text = message_text(message)
        with ensure(default_home()) as client:
            send_turn(client, agent, text, as_json)
    except user_error_types() as exc:
        if os.environ.get("LLMOS_DEBUG"):
            raise
        print_error(error_text(exc))
        return 1
    except KeyboardInterrupt:  # before the turn began (during it, send_turn cancels it)
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    main()
