"""One turn from the command line, printed as `llmos send` prints it; standard library only.

`send_turn(client, agent, text, as_json)` posts the message and prints the
turn: with `as_json` the whole turn as indented JSON, otherwise the reply on
stdout, its tokens as they are generated when stdout is a terminal (so a
script's stdout holds exactly the reply). `Tokens` is that token printer,
which the chat's REPL shares. A failed turn raises `TurnFailed`; Ctrl-C
cancels the turn on the server and exits 130.

Both ways into `llmos send` run this code: the typer command (`cli/chat.py`)
and the launcher's fast path (`cli/launch.py`), which must not import typer,
rich or httpx, hence the standard library alone here.
"""

from __future__ import annotations

import json
import sys
from contextlib import suppress
from typing import Any

from llmos.client.base import BaseClient, ServerFailed, seg
from llmos.errors import BackendError, LLMOSError


class TurnFailed(BackendError):
    """The turn ended in an error, or its stream ended before the turn did."""

    backend = "the agent's turn"


def message_text(message: str) -> str:
    """The message to send: `message` itself, or stdin's text for "-"."""
    # From stdin, the trailing newline of `echo ... |` is not part of the message.
    text = sys.stdin.read().strip() if message == "-" else message
    if not text.strip():
        raise TurnFailed("the message is empty")
    return text


def send_turn(client: BaseClient, agent: str, text: str, as_json: bool) -> None:
    """Run one turn of `agent` on `text` and print it (see the module docstring)."""
    path = f"/agents/{seg(agent)}/messages"
    if as_json:
        try:
            turn = client.post(path, {"text": text})
        except ServerFailed as exc:  # a failed turn: 503 with the turn in the body
            if not (isinstance(exc.body, dict) and "turn" in exc.body):
                raise
            turn = exc.body["turn"]
        print(json.dumps(turn, indent=2, ensure_ascii=False, default=str))
    else:
        turn = _streamed(client, path, text)
    if turn.get("error"):
        raise TurnFailed(f"the turn failed ({turn.get('stop_reason')}): {turn['error']}")
    if not turn.get("reply") and not as_json:
        print(f"note: the turn ended ({turn.get('stop_reason')}) without a reply", file=sys.stderr)


def _streamed(client: BaseClient, path: str, text: str) -> dict[str, Any]:
    printer = Tokens(sys.stdout, live=sys.stdout.isatty())
    turn: dict[str, Any] = {}
    failure = "the stream ended before the turn did (its messages are kept)"
    try:
        for event in client.stream(path, {"text": text}):
            kind = event.get("type")
            if kind == "token":
                printer.token(event.get("text") or "")
            elif kind == "reply":
                printer.reply(event.get("text") or "")
            elif kind == "error":
                failure = str((event.get("error") or {}).get("message") or failure)
            elif kind == "done":
                turn = event.get("turn") or {}
    except KeyboardInterrupt:
        # the kernel would finish the turn without us: stop it, keep what it did
        with suppress(LLMOSError, OSError):
            client.post(path.removesuffix("/messages") + "/cancel")
        print("\ninterrupted: the turn was cancelled; what it did so far is kept", file=sys.stderr)
        raise SystemExit(130) from None
    if not turn:
        raise TurnFailed(failure)
    return turn


class Tokens:
    """Prints a reply's tokens as they come, then makes the printed text the reply.

    `shown` is the text streamed since the last reply event; `open` says the
    cursor is still on its line (another event may have ended the line: a core
    sends the inner thoughts after the reply's tokens)."""

    def __init__(self, stream: Any, live: bool) -> None:
        self.stream = stream
        self.live = live
        self.shown = ""
        self.open = False

    def token(self, delta: str) -> None:
        if self.live and delta:
            if self.shown and not self.open:
                self.stream.write("\n")  # tokens after another event: a fresh line
            self.stream.write(delta)
            self.stream.flush()
            self.shown += delta
            self.open = True

    def end_line(self) -> None:
        """Another event is about to print: end the tokens' line, keep what they said."""
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False

    def rest(self, text: str) -> str | None:
        """Finish the reply `text` after its tokens: None when they were not this reply
        (print it whole), else what is left to print on a line of its own ("": nothing).
        Forgets the streamed text."""
        shown, was_open = self.shown, self.open
        self.shown, self.open = "", False
        if shown and text.startswith(shown):
            remainder = text[len(shown) :]
            if not was_open:
                return remainder.lstrip()
            self.stream.write(remainder + "\n")  # finish the tokens' line
            self.stream.flush()
            return ""
        if was_open:
            self.stream.write("\n")  # the tokens were something else: end their line
        return None

    def reply(self, text: str) -> None:
        rest = self.rest(text)
        if rest is None:
            self.stream.write(text + "\n")
        elif rest:
            self.stream.write(rest + "\n")
        self.stream.flush()

    def pending(self) -> str:
        """Tokens shown since the last reply (nothing when the reply was printed)."""
        return self.shown
