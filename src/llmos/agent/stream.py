"""The reply as it is generated: a step's streamed pieces turned into `token` events.

A streaming core reports the response in pieces (`llm.core.Delta`). Only the
text the user will read becomes `{"type": "token", "text": ...}` events:

* on the function-call path, the `message` argument of a `send_message` call,
  decoded from the arguments' JSON as it forms (`JsonStrings`, an incremental
  scanner: escapes, `\\u` pairs and all), never the JSON itself; a core that
  streams the whole call (`Delta.raw_call`, llama.cpp's emulated tools) has
  it at `arguments.message`, once `function` said `send_message`;
* on the transcript path (small models), the reply line itself, without the
  whitespace around it (never the memory lines that may follow it);
* the inner monologue (text beside a function call) is never streamed.

`finish(reply, call)` is called as the step's reply is emitted: whatever of the
reply was not streamed (a core that does not stream; a plain-text answer)
follows as one last token, so the tokens add up to the reply. When the
finished reply is not what was streamed (the transcript reply cleaned up, or
an argument the function rejected), nothing more is sent: the `reply` event is
authoritative.

A repeated request (the scheduler retries a failed one) streams its pieces
again: a call's JSON value starting over after a whole one is noticed, and
only text beyond what was already sent is sent. A stream cut in the middle
and retried is not told apart from a nested value: its tokens may then stop
short, and the `reply` event (always sent) is the whole reply.

Left out: streaming the reply of a call to another function (only
`send_message` talks to the user).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmos.llm.core import Delta

REPLY_FUNCTION = "send_message"
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


class JsonStrings:
    """An incremental JSON scanner reporting string values' characters as they form.

    `on_chars(path, text)` receives decoded characters of each string value,
    `path` being the object keys leading to it (None for array levels); keys
    themselves are not reported. `restarts` counts top-level values begun
    after a first one ended (a repeated request's output).
    """

    def __init__(self, on_chars: Callable[[tuple[str | None, ...], str], None]) -> None:
        self.on_chars = on_chars
        self.keys: list[str | None] = []  # per open container: its current key
        self.objects: list[bool] = []  # per open container: object (else array)
        self.in_string = False
        self.is_key = False
        self.expect_key = False
        self.key = ""
        self.escape: str | None = None
        self.high: str | None = None  # a UTF-16 high surrogate waiting for its pair
        self.ended = False
        self.restarts = 0

    def feed(self, text: str) -> None:
        out: list[str] = []
        path = tuple(self.keys)
        for c in text:
            if self.in_string:
                if self.escape is not None:
                    self.escape += c
                    if self.escape[0] != "u":
                        out.append(_ESCAPES.get(c, c))
                        self.escape = None
                    elif len(self.escape) == 5:
                        out.append(self._unicode(int(self.escape[1:], 16)))
                        self.escape = None
                elif c == "\\":
                    self.escape = ""
                elif c == '"':
                    self.in_string = False
                    if self.is_key:
                        self.keys[-1] = self.key
                    else:
                        self._flush(path, out)
                else:
                    out.append(c)
                if self.is_key and out:
                    self.key += "".join(out)
                    out.clear()
                continue
            if c == '"':
                self.in_string = True
                self.is_key = bool(self.objects) and self.objects[-1] and self.expect_key
                self.key = ""
                path = tuple(self.keys)
            elif c in "{[":
                if not self.objects and self.ended:
                    self.restarts += 1
                    self.ended = False
                self.objects.append(c == "{")
                self.keys.append(None)
                self.expect_key = c == "{"
            elif c in "}]":
                if self.objects:
                    self.objects.pop()
                    self.keys.pop()
                    self.ended = not self.objects
                self.expect_key = False
            elif c == ":":
                self.expect_key = False
            elif c == ",":
                self.expect_key = bool(self.objects) and self.objects[-1]
        if self.in_string and not self.is_key:
            self._flush(path, out)

    def _unicode(self, code: int) -> str:
        if 0xD800 <= code < 0xDC00:
            self.high = chr(code)
            return ""
        if 0xDC00 <= code < 0xE000 and self.high is not None:
            high, self.high = self.high, None
            return (high + chr(code)).encode("utf-16", "surrogatepass").decode("utf-16")
        return chr(code)

    def _flush(self, path: tuple[str | None, ...], out: list[str]) -> None:
        if out:
            self.on_chars(path, "".join(out))
            out.clear()


class _Call:
    """One streamed call: its function name and its `message` text so far."""

    def __init__(self, raw: bool) -> None:
        self.raw = raw
        self.name: str | None = None
        self.text = ""  # the message as decoded from this attempt
        self.function = ""  # raw calls: the "function" value
        self.scanner = JsonStrings(self._chars)

    def _chars(self, path: tuple[str | None, ...], text: str) -> None:
        if self.raw and path == ("function",):
            self.function += text
        elif self.raw and path == ("arguments", "message"):
            if self.function == REPLY_FUNCTION:
                self.text += text
        elif not self.raw and path == ("message",) and self.name == REPLY_FUNCTION:
            self.text += text

    def feed(self, delta: Delta) -> None:
        self.name = delta.name or self.name
        before = self.scanner.restarts
        self.scanner.feed(delta.text)
        if self.scanner.restarts != before:  # a repeated request: it starts over
            self.text, self.function = "", ""
            self.scanner = JsonStrings(self._chars)
            self.scanner.feed(delta.text[delta.text.find("{") :])


class ReplyStream:
    """A step's `ChatRequest.on_delta`: emits the reply's `token` events."""

    def __init__(self, emit: Callable[[dict[str, Any]], None], transcript: bool) -> None:
        self.emit = emit
        self.transcript = transcript
        self.calls: dict[int, _Call] = {}
        self.sent: dict[int, str] = {}  # per call: the text already emitted
        self.line = ""  # transcript: the reply line so far

    def __call__(self, delta: Delta) -> None:
        if delta.call is None:
            if self.transcript:
                self.line += delta.text
                # Leading whitespace is never the reply's; trailing waits for more.
                # Only the first line is the reply: memory lines may follow it.
                self._send(0, self.line.lstrip().split("\n", 1)[0].rstrip())
            return
        call = self.calls.get(delta.call)
        if call is None:
            call = self.calls[delta.call] = _Call(delta.raw_call)
        call.feed(delta)
        self._send(delta.call, call.text)

    def _send(self, index: int, text: str) -> None:
        sent = self.sent.get(index, "")
        if len(text) > len(sent) and text.startswith(sent):
            self.sent[index] = text
            self.emit({"type": "token", "text": text[len(sent) :]})

    def finish(self, reply: str, index: int) -> None:
        """The step's reply `reply` (of call `index`) is final: send what was not streamed."""
        sent = self.sent.get(index, "")
        if reply.startswith(sent):
            self._send(index, reply)
