"""A real Anthropic Messages API server on loopback, for tests and benchmarks.

`FakeAnthropicServer` listens on 127.0.0.1 (a free port) in a background
thread and speaks enough of Anthropic's REST API for `AnthropicCore` to run
against it through the official `anthropic` SDK:

* `POST /v1/messages`, plain JSON or, with `"stream": true`, server-sent
  events exactly as Anthropic sends them (`message_start`,
  `content_block_start/delta/stop` with `text_delta` and `input_json_delta`,
  `ping`, `message_delta`, `message_stop`, and `error` events mid-stream).
  Answers come from a queue of scripted outcomes (`script(...)`), else from a
  `policy(view)` callable that reads the OpenAI-shaped view of the request
  (`caching.anthropic_view`), so the policies of `openai_server.py` work here
  too; else "ok". Outcomes: the short form `{"content", "tool_calls"}`, a
  `Fail(status, body, headers)`, a `Hang()`, or `StreamError(type, message)`.
* `GET /v1/models/{id}` and `GET /v1/models`: the model with
  `max_input_tokens` and structured-output capability.
* The key (`x-api-key`, or a bearer token as recent SDKs send it) is checked
  when `api_key` is set (401 `authentication_error`).
* Requests are checked as the real API does for what llmos could get wrong:
  alternating roles starting with the user, tool results answering the
  previous turn's calls and placed first, at most 4 `cache_control`
  breakpoints, `tool_choice` only with tools; a violation is a 400
  `invalid_request_error`.
* Prompt caching (`prompt_cache=True`) follows explicit breakpoints with the
  rules of `caching.BreakpointCache`; usage reports `input_tokens`,
  `cache_read_input_tokens` and `cache_creation_input_tokens`. A
  `context_window` makes longer prompts fail with "prompt is too long".

Left out: images, documents, thinking blocks, the Batch and token-counting
endpoints, beta headers, and the server's real tokenizer.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.fakes.caching import (
    BreakpointCache,
    CacheUsage,
    NeutralTurn,
    Reply,
    TurnError,
    anthropic_view,
    check_turns,
    dumps,
    tokens,
)
from tests.fakes.loopback import LoopbackHandler, LoopbackServer
from tests.fakes.openai_server import Fail, Hang

__all__ = ["Fail", "FakeAnthropicServer", "Hang", "StreamError", "segments"]

MAX_BREAKPOINTS = 4


@dataclass
class StreamError:
    """Start a streamed answer, then send an `error` event (e.g. "overloaded_error")."""

    type: str = "overloaded_error"
    message: str = "Overloaded"


Outcome = dict[str, Any] | Fail | Hang | StreamError
Policy = Callable[[dict[str, Any]], Outcome]


def segments(body: dict[str, Any]) -> list[tuple[str, bool]]:
    """The request as cacheable segments in Anthropic's order: tools, system, messages."""
    out: list[tuple[str, bool]] = []

    def seg(prefix: str, block: dict[str, Any]) -> None:
        plain = {k: v for k, v in block.items() if k != "cache_control"}
        out.append((prefix + dumps(plain), "cache_control" in block))

    for tool in body.get("tools") or []:
        seg("tool:", tool)
    system = body.get("system")
    if isinstance(system, str):
        out.append(("system:" + system, False))
    for block in system or [] if isinstance(system, list) else []:
        seg("system:", block)
    for m in body.get("messages") or []:
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for i, block in enumerate(blocks):
            seg(f"{m['role']}:" if i == 0 else "", block)
    return out


def _check(body: dict[str, Any]) -> None:
    if not isinstance(body.get("max_tokens"), int):
        raise TurnError("max_tokens: Field required")
    if body.get("tool_choice") and not body.get("tools"):
        raise TurnError("tool_choice may only be specified while providing tools")
    marks = sum(1 for _, bp in segments(body) if bp)
    if marks > MAX_BREAKPOINTS:
        raise TurnError(f"A maximum of 4 blocks with cache_control may be provided. Found {marks}.")
    turns = []
    for m in body.get("messages") or []:
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        t = NeutralTurn(m.get("role", ""))
        for b in blocks:
            kind = b.get("type")
            if kind == "text":
                if not b.get("text"):
                    raise TurnError("text content blocks must be non-empty")
                t.texts += 1
            elif kind == "tool_use":
                if not isinstance(b.get("input"), dict):
                    raise TurnError("tool_use.input: Input should be a valid dictionary")
                t.uses.append(b["id"])
            elif kind == "tool_result":
                if t.texts:
                    t.results_after_text = True
                t.results.append(b["tool_use_id"])
        turns.append(t)
    check_turns(turns)


class FakeAnthropicServer(LoopbackServer):
    url_suffix = ""
    label = "fake-anthropic"

    """An Anthropic Messages API server in a background thread."""

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        prompt_cache: bool = False,
        context_window: int | None = None,
        api_key: str | None = None,
        model: str = "claude-fake-1",
        chunk_chars: int = 7,
    ) -> None:
        self.policy = policy
        self.prompt_cache = prompt_cache
        self.context_window = context_window
        self.api_key = api_key
        self.model = model
        self.chunk_chars = chunk_chars  # size of streamed text and JSON deltas
        self.requests: list[dict[str, Any]] = []
        self.usages: list[CacheUsage] = []
        self._ids = itertools.count(1)
        self._cache = BreakpointCache()
        self._init_loopback()

    # --- lifecycle ---------------------------------------------------------------

    # --- request handling ----------------------------------------------------------

    def _next(self, body: dict[str, Any]) -> Outcome:
        with self._lock:
            scripted = self._script.pop(0) if self._script else None
        if scripted is not None:
            return scripted
        if self.policy is None:
            return {"content": "ok"}
        try:
            return self.policy(anthropic_view(body))
        except Exception as exc:
            return Fail(500, _error("api_error", f"policy raised {exc!r}"))

    def _messages(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        """(status, headers, body | Outcome) for one Messages request."""
        with self._lock:
            self.requests.append(body)
        try:
            _check(body)
        except TurnError as exc:
            return 400, {}, _error("invalid_request_error", str(exc))
        segs = segments(body)
        n_prompt = tokens(sum(len(s) + 1 for s, _ in segs))
        if self.context_window is not None and n_prompt > self.context_window:
            msg = f"prompt is too long: {n_prompt} tokens > {self.context_window} maximum"
            return 400, {}, _error("invalid_request_error", msg)
        outcome = self._next(body)
        if isinstance(outcome, Hang | Fail):
            return 0, {}, outcome
        usage = self._cache.account(segs) if self.prompt_cache else CacheUsage(n_prompt, 0, 0)
        with self._lock:
            self.usages.append(usage)
        return 200, {}, (outcome, usage)

    def _message_json(self, reply: Reply, usage: CacheUsage, model: str) -> dict[str, Any]:
        n = next(self._ids)
        content: list[dict[str, Any]] = []
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        for i, (name, args) in enumerate(reply.calls):
            content.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_{n:04d}_{i}",
                    "name": name,
                    "input": json.loads(args) if isinstance(args, str) else args,
                }
            )
        return {
            "id": f"msg_{n:06d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": reply.stop,
            "stop_sequence": None,
            "usage": _usage(usage, reply.output_tokens()),
        }

    def _stream_events(
        self, outcome: dict[str, Any] | StreamError, usage: CacheUsage, model: str
    ) -> list[tuple[str, dict[str, Any]]]:
        n = next(self._ids)
        start_usage = _usage(usage, 1)
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": {
                "id": f"msg_{n:06d}", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage,
            }}),
        ]  # fmt: skip
        if isinstance(outcome, StreamError):
            events.append(("ping", {"type": "ping"}))
            events.append(("error", _error(outcome.type, outcome.message)))
            return events
        reply = Reply.from_short(outcome)
        index = 0
        if reply.text:
            events.append(("content_block_start", {
                "type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""},
            }))  # fmt: skip
            events.append(("ping", {"type": "ping"}))
            for piece in _chunks(reply.text, self.chunk_chars):
                events.append(("content_block_delta", {
                    "type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                }))  # fmt: skip
            events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
            index = 1
        for i, (name, args) in enumerate(reply.calls):
            raw = args if isinstance(args, str) else json.dumps(args)
            events.append(("content_block_start", {
                "type": "content_block_start", "index": index,
                "content_block": {
                    "type": "tool_use", "id": f"toolu_{n:04d}_{i}", "name": name, "input": {},
                },
            }))  # fmt: skip
            for piece in _chunks(raw, self.chunk_chars):
                events.append(("content_block_delta", {
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                }))  # fmt: skip
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
            index += 1
        events.append(("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop, "stop_sequence": None},
            "usage": {"output_tokens": reply.output_tokens()},
        }))  # fmt: skip
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def model_info(self, model_id: str) -> dict[str, Any]:
        return {
            "type": "model",
            "id": model_id,
            "display_name": model_id,
            "created_at": "2025-01-01T00:00:00Z",
            "max_input_tokens": self.context_window or 200_000,
            "max_tokens": 64_000,
            "capabilities": {"structured_outputs": {"supported": True}},
        }


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _usage(u: CacheUsage, output: int) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cache_read,
        "output_tokens": output,
    }


def _error(etype: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": etype, "message": message}}


_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _bearer(headers: Any) -> str | None:
    value = headers.get("Authorization") or ""
    return value[7:] if value.startswith("Bearer ") else None


class _Handler(LoopbackHandler):
    fake: FakeAnthropicServer

    def _send(self, status: int, headers: dict[str, str], body: Any) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header(
            "Content-Type", "text/plain" if isinstance(body, str) else "application/json"
        )
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_fake")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        key = self.fake.api_key
        # SDKs have sent the key as `x-api-key` and, lately, as a bearer token.
        if key is None or key in (self.headers.get("x-api-key"), _bearer(self.headers)):
            return True
        self._send(401, {}, _error("authentication_error", "invalid x-api-key"))
        return False

    def do_GET(self) -> None:
        if not self._authorised():
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            info = self.fake.model_info(self.fake.model)
            self._send(200, {}, {"data": [info], "has_more": False, "first_id": info["id"],
                                 "last_id": info["id"]})  # fmt: skip
        elif path.startswith("/v1/models/"):
            self._send(200, {}, self.fake.model_info(path.rsplit("/", 1)[1]))
        else:
            self._send(404, {}, _error("not_found_error", f"no route {path}"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self._authorised():
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        if path != "/v1/messages":
            self._send(404, {}, _error("not_found_error", f"no route {path}"))
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send(400, {}, _error("invalid_request_error", "body is not JSON"))
            return
        status, headers, out = self.fake._messages(body)
        if isinstance(out, Hang):
            self.fake._stopping.wait(out.seconds)
            self.close_connection = True
            return
        if isinstance(out, Fail):
            etype = _STATUS_TYPES.get(out.status, "api_error")
            payload = (
                out.body if out.body is not None else _error(etype, f"fake error {out.status}")
            )
            self._send(out.status, out.headers, payload)
            return
        if status != 200:
            self._send(status, headers, out)
            return
        outcome, usage = out
        model = str(body.get("model") or self.fake.model)
        if body.get("stream"):
            self._stream(self.fake._stream_events(outcome, usage, model))
        elif isinstance(outcome, StreamError):
            self._send(529, {}, _error(outcome.type, outcome.message))
        else:
            self._send(200, {}, self.fake._message_json(Reply.from_short(outcome), usage, model))

    def _stream(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for name, data in events:
            frame = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
            self.wfile.flush()
            time.sleep(0)  # let the client see events one by one
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


FakeAnthropicServer.handler_class = _Handler
