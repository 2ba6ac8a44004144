"""The reply's tokens from streamed pieces (agent/stream.py): only send_message's
`message` text, decoded as it forms, whatever the pieces' boundaries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmos.agent.stream import ReplyStream
from llmos.llm.core import Delta

TEXT = 'He said "hi" \\ caf\u00e9 \U0001f600 tab\there\nnext line'


def run(pieces: list[Delta], transcript: bool = False) -> tuple[list[str], ReplyStream]:
    events: list[dict[str, Any]] = []
    stream = ReplyStream(events.append, transcript)
    for d in pieces:
        stream(d)
    return [e["text"] for e in events], stream


def split(text: str, n: int) -> list[str]:
    return [text[i : i + n] for i in range(0, len(text), n)]


@pytest.mark.parametrize("n", [1, 2, 5, 1000])
def test_message_argument_is_decoded_as_it_forms(n: int) -> None:
    # ensure_ascii: escapes (\u00e9, a surrogate pair) split across pieces too
    args = json.dumps({"request_heartbeat": False, "message": TEXT, "x": {"message": "no"}})
    tokens, _ = run([Delta(p, call=0, name="send_message") for p in split(args, n)])
    assert "".join(tokens) == TEXT
    if n == 1:
        assert len(tokens) > 10


def test_other_functions_and_the_monologue_are_never_streamed() -> None:
    args = json.dumps({"message": "secret plan"})
    pieces = [
        Delta("thinking..."),
        *[Delta(p, call=0, name="core_memory_append") for p in split(args, 3)],
    ]
    assert run(pieces)[0] == []


def test_a_raw_call_streams_its_arguments_message_once_the_function_is_known() -> None:
    call = json.dumps({"function": "send_message", "arguments": {"message": TEXT}})
    tokens, _ = run([Delta(p, call=0, raw_call=True) for p in split(call, 4)])
    assert "".join(tokens) == TEXT
    other = json.dumps({"function": "archival_memory_insert", "arguments": {"message": "x"}})
    assert run([Delta(other, call=0, raw_call=True)])[0] == []


def test_a_repeated_request_does_not_repeat_or_lose_text() -> None:
    args = json.dumps({"message": "hello world"})
    first = [Delta(p, call=0, name="send_message") for p in split(args, 3)]
    again = [Delta(p, call=0, name="send_message") for p in split(args, 3)]
    tokens, _ = run(first + again)
    assert "".join(tokens) == "hello world"


def test_transcript_lines_stream_without_surrounding_whitespace_and_finish_fills_in() -> None:
    tokens, stream = run([Delta(p) for p in ["  Hel", "lo the", "re  ", " "]], transcript=True)
    assert "".join(tokens) == "Hello there"
    stream.finish("Hello there", 0)
    assert "".join(tokens) == "Hello there"
    # A core that does not stream: the whole reply at the end, once.
    events: list[dict[str, Any]] = []
    plain = ReplyStream(events.append, False)
    plain.finish("all at once", 0)
    plain.finish("all at once", 0)
    assert [e["text"] for e in events] == ["all at once"]


def test_a_transcript_streams_its_reply_line_and_never_the_memory_lines_after_it() -> None:
    pieces = ["Nice to meet", " you, Ana!", "\nremem", "ber: The user's name is Ana."]
    tokens, stream = run([Delta(p) for p in pieces], transcript=True)
    assert "".join(tokens) == "Nice to meet you, Ana!"
    stream.finish("Nice to meet you, Ana!", 0)
    assert "".join(tokens) == "Nice to meet you, Ana!"
