"""How `llmos chat` and `llmos send` print a streamed turn: tokens as they come, then
the reply event completes the line without printing the text twice."""

from __future__ import annotations

import io

from rich.console import Console

from llmos.cli.chat import show_event
from llmos.cli.sending import Tokens


def _chat(events: list[dict]) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=200, no_color=True, highlight=False)
    tokens = Tokens(buf, live=True)
    for e in events:
        show_event(console, e, tokens)
    return buf.getvalue()


def test_tokens_then_their_reply_print_the_reply_once() -> None:
    shown = _chat([
        {"type": "reasoning", "text": "Greet them."},
        {"type": "token", "text": "Hel"},
        {"type": "token", "text": "lo!"},
        {"type": "reply", "text": "Hello! How are you?"},
        {"type": "done", "turn": {"steps": 1, "stop_reason": "end_turn", "usage": {}}},
    ])  # fmt: skip
    assert shown.count("Hello!") == 1 and "Hello! How are you?" in shown
    assert shown.index("Greet them.") < shown.index("Hello!")
    assert "1 step" in shown


def test_tokens_that_were_not_the_reply_leave_the_reply_whole() -> None:
    shown = _chat([
        {"type": "token", "text": "thinking aloud"},
        {"type": "function_call", "name": "archival_memory_search", "arguments": "{}"},
        {"type": "reply", "text": "Found it."},
    ])  # fmt: skip
    lines = shown.splitlines()
    assert lines[0] == "thinking aloud"
    assert "archival_memory_search" in lines[1] and lines[-1] == "Found it."


def test_without_tokens_the_reply_prints_whole() -> None:
    assert _chat([{"type": "reply", "text": "Hi."}]).strip() == "Hi."


def test_send_writes_exactly_the_reply_to_a_pipe() -> None:
    buf = io.StringIO()
    printer = Tokens(buf, live=False)  # stdout is not a terminal
    for delta in ("Hel", "lo"):
        printer.token(delta)
    printer.reply("Hello")
    printer.reply("Second")
    assert buf.getvalue() == "Hello\nSecond\n"
    live = io.StringIO()
    printer = Tokens(live, live=True)
    printer.token("Hel")
    printer.reply("Hello")
    assert live.getvalue() == "Hello\n"


def test_thoughts_sent_after_the_reply_tokens_do_not_repeat_the_reply() -> None:
    """A core streams the reply's tokens, then the step's thoughts arrive, then the
    reply event: the reply is on screen once."""
    shown = _chat([
        {"type": "token", "text": "echo: "},
        {"type": "token", "text": "hi there"},
        {"type": "reasoning", "text": "Replying."},
        {"type": "reply", "text": "echo: hi there"},
        {"type": "done", "turn": {"steps": 1, "stop_reason": "end_turn", "usage": {}}},
    ])  # fmt: skip
    assert shown.count("echo: hi there") == 1
    assert shown.splitlines()[:2] == ["echo: hi there", "💭 Replying."]
