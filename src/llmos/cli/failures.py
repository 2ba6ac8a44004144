"""How a command reports a user's mistake: one `error: ...` line on stderr and exit code 1.

Shared by the typer commands (`cli/common.py`) and the launcher's fast path
(`cli/launch.py`), so it imports nothing but llmos's error families.
"""

from __future__ import annotations

import sys

from llmos.errors import LLMOSError


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions a user's own input can cause: reported, never a traceback."""
    # llmos's families cover unknown agents, names taken, messages too long, failed
    # cores and the server's answers (llmos.client.base); ValueError covers bad model
    # strings, layouts, block limits and names; OSError unreadable files and homes.
    return (LLMOSError, LookupError, ValueError, OSError)


def error_text(exc: BaseException) -> str:
    """The exception's message as a user should read it."""
    # LookupError's str() is the repr of its argument; show the plain text.
    return str(exc.args[0]) if isinstance(exc, LookupError) and exc.args else str(exc)


def print_error(message: str) -> None:
    """`error: MESSAGE` (its first line) on stderr."""
    # One plain line: scripts grep it, and rich would wrap it at 80 columns.
    first, *_ = (message.strip() or "unknown error").splitlines() or [""]
    print(f"error: {first}", file=sys.stderr)
