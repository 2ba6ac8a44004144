"""A real OpenAI-compatible HTTP server on loopback, for tests and benchmarks.

`FakeOpenAIServer` listens on 127.0.0.1 (a free port) in a background thread
and speaks enough of OpenAI's REST API for llmos's cores to run against it
with the real `openai` client:

* `POST /v1/chat/completions` answers from a queue of scripted outcomes
  (`script(...)`), else from a `policy(request_json)` callable, else "ok".
  A policy (or script entry) may return a full `chat.completion` body or the
  short form `{"content": ..., "tool_calls": [{"name": ..., "arguments": {...}}]}`,
  which the server expands with ids, finish reason and usage. It may also
  return `Fail(...)` or `Hang(...)`.
* `GET /v1/models` lists one model (with vLLM's `max_model_len` when a
  context window is set).
* `POST /v1/embeddings` returns deterministic unit vectors (hash of the text).

Tokens. The server has no tokenizer; it counts deterministically instead. The
prompt is serialised as one JSON line per tool, then one per message (sorted
keys, compact separators), joined by newlines, in that order because OpenAI's
prompt cache also sees tools before messages. A *token* is a 4-character chunk
of that text, so `prompt_tokens = ceil(len(text) / 4)`.

Prompt caching (`prompt_cache=True`) emulates OpenAI's automatic caching: the
cached part of a prompt is its longest common prefix with ANY earlier prompt,
counted in whole 128-token blocks (512 characters), and only for prompts of at
least 1,024 tokens (a hit below 1,024 tokens counts as 0). Each prompt is cut
into 512-character blocks and every block-aligned prefix is remembered by a
chained digest, so a lookup costs one pass over the prompt whatever the number
of earlier requests. `cache_key` / `prompt_cache_key` routing is not emulated:
every request sees the same cache.

Streaming: a request with `"stream": true` gets the same answer as
`chat.completion.chunk` server-sent events (content and tool-call arguments in
pieces of `chunk_chars` characters, a usage chunk when `stream_options`
asks for one, then `[DONE]`); errors are answered as plain HTTP errors.

Left out: the Responses API, authentication beyond an optional
fixed bearer key, and validating requests against OpenAI's schemas
(`response_format` is recorded, not enforced: the policy decides the output).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.loopback import LoopbackHandler, LoopbackServer

__all__ = [
    "CACHE_BLOCK_TOKENS",
    "CACHE_MIN_TOKENS",
    "CHARS_PER_TOKEN",
    "Fail",
    "FakeOpenAIServer",
    "Hang",
    "prompt_text",
]

CHARS_PER_TOKEN = 4
CACHE_BLOCK_TOKENS = 128
CACHE_MIN_TOKENS = 1024
EMBEDDING_DIM = 64
_BLOCK_CHARS = CACHE_BLOCK_TOKENS * CHARS_PER_TOKEN


@dataclass
class Fail:
    """A canned HTTP answer other than a normal completion.

    `body` may be a dict (sent as JSON) or a str (sent verbatim, which is how a
    test sends a malformed body, e.g. `Fail(200, "<html>")`). `None` gives an
    OpenAI-style error body for the status.
    """

    status: int
    body: dict[str, Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Hang:
    """Never answer: hold the request `seconds` (None: until `stop()`), then drop it."""

    seconds: float | None = None


Outcome = dict[str, Any] | Fail | Hang
Policy = Callable[[dict[str, Any]], Outcome]


def prompt_text(request: dict[str, Any]) -> str:
    """The deterministic serialisation the server counts and caches tokens on."""
    parts = [_dumps(t) for t in request.get("tools") or []]
    parts += [_dumps(m) for m in request.get("messages") or []]
    return "\n".join(parts)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _count(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _error_body(status: int) -> dict[str, Any]:
    kinds = {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        403: ("invalid_request_error", "forbidden"),
        404: ("invalid_request_error", "model_not_found"),
        429: ("rate_limit_error", "rate_limit_exceeded"),
    }
    etype, code = kinds.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {
        "error": {
            "message": f"fake server error {status}",
            "type": etype,
            "param": None,
            "code": code,
        }
    }


class _PrefixCache:
    """Block-aligned prefixes of every prompt seen, as chained digests.

    Digest k covers the first k blocks, so "prefix of k blocks seen before" is
    one set lookup, and the longest cached prefix is found by walking blocks
    until the first miss (if block-prefix k was seen, so was every shorter one).
    """

    def __init__(self) -> None:
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()

    def lookup_and_add(self, text: str) -> int:
        """Blocks of `text` shared with an earlier prompt; then remember `text`."""
        digests: list[bytes] = []
        prev = b""
        for start in range(0, len(text) - _BLOCK_CHARS + 1, _BLOCK_CHARS):
            block = text[start : start + _BLOCK_CHARS].encode("utf-8", "surrogatepass")
            prev = hashlib.blake2b(prev + block, digest_size=16).digest()
            digests.append(prev)
        with self._lock:
            hit = 0
            for d in digests:
                if d not in self._seen:
                    break
                hit += 1
            self._seen.update(digests)
        return hit


class FakeOpenAIServer(LoopbackServer):
    url_suffix = "/v1"
    label = "fake-openai"

    """An OpenAI-compatible chat completions server in a background thread."""

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        delay: float = 0.0,
        prompt_cache: bool = False,
        context_window: int | None = None,
        max_concurrency: int | None = None,
        model: str = "fake-model",
        api_key: str | None = None,
        retry_after: float = 1.0,
        chunk_chars: int = 3,
    ) -> None:
        self.policy = policy
        #: size of streamed content and arguments pieces
        self.chunk_chars = chunk_chars
        self.delay = delay
        self.prompt_cache = prompt_cache
        self.context_window = context_window
        self.max_concurrency = max_concurrency
        self.model = model
        #: when set, requests without `Authorization: Bearer <api_key>` get 401.
        self.api_key = api_key
        #: Retry-After (seconds) sent with the 429s of `max_concurrency`.
        self.retry_after = retry_after
        self.requests: list[dict[str, Any]] = []
        #: most chat requests ever in flight at once (for scheduler benchmarks).
        self.max_in_flight = 0
        self._in_flight = 0
        self._ids = itertools.count(1)
        self._cache = _PrefixCache()
        self._init_loopback()

    # --- lifecycle ---------------------------------------------------------------

    def prompt_tokens(self, request: dict[str, Any]) -> int:
        """What this server reports as `prompt_tokens` for `request`."""
        return _count(prompt_text(request))

    # --- request handling (called on handler threads) ------------------------------

    def _record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)

    def _enter(self) -> bool:
        with self._lock:
            if self.max_concurrency is not None and self._in_flight >= self.max_concurrency:
                return False
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return True

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _next_outcome(self, body: dict[str, Any]) -> Outcome:
        with self._lock:
            scripted = self._script.pop(0) if self._script else None
        if scripted is not None:
            return scripted
        if self.policy is None:
            return {"content": "ok"}
        try:
            return self.policy(body)
        except Exception as exc:  # a broken policy is a 500, visible to the test
            return Fail(
                500,
                {
                    "error": {
                        "message": f"policy raised {exc!r}",
                        "type": "server_error",
                        "code": None,
                    }
                },
            )

    def _chat(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        """(status, headers, body or Hang) for one chat completion request."""
        if not self._enter():
            headers = {"Retry-After": f"{self.retry_after:g}"}
            return 429, headers, _error_body(429)
        try:
            if self.delay > 0 and self._stopping.wait(self.delay):
                return 503, {}, _error_body(503)
            text = prompt_text(body)
            n_prompt = _count(text)
            if self.context_window is not None and n_prompt > self.context_window:
                return 400, {}, self._context_error(n_prompt, body)
            outcome = self._next_outcome(body)
            if isinstance(outcome, Hang):
                return 0, {}, outcome
            if isinstance(outcome, Fail):
                return (
                    outcome.status,
                    outcome.headers,
                    (outcome.body if outcome.body is not None else _error_body(outcome.status)),
                )
            # Only requests the model actually "processed" populate the cache.
            cached = self._cached_tokens(text, n_prompt) if self.prompt_cache else 0
            if not _is_short_form(outcome):
                return 200, {}, outcome
            return 200, {}, self._expand(outcome, body, n_prompt, cached)
        finally:
            self._leave()

    def chunks(self, body: dict[str, Any], request: dict[str, Any]) -> list[dict[str, Any]]:
        """A chat.completion body as the chunks of a streamed answer."""
        n = max(1, self.chunk_chars)
        choice = (body.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        base = {
            "id": body.get("id", "chatcmpl-0"),
            "object": "chat.completion.chunk",
            "created": body.get("created", 0),
            "model": body.get("model", self.model),
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        out = [chunk({"role": "assistant", "content": ""})]
        text = message.get("content") or ""
        out += [chunk({"content": text[i : i + n]}) for i in range(0, len(text), n)]
        for index, call in enumerate(message.get("tool_calls") or []):
            fn = call.get("function") or {}
            head = {"index": index, "id": call.get("id"), "type": "function",
                    "function": {"name": fn.get("name"), "arguments": ""}}  # fmt: skip
            out.append(chunk({"tool_calls": [head]}))
            args = fn.get("arguments") or ""
            for i in range(0, len(args), n):
                piece = {"index": index, "function": {"arguments": args[i : i + n]}}
                out.append(chunk({"tool_calls": [piece]}))
        out.append(chunk({}, choice.get("finish_reason") or "stop"))
        if (request.get("stream_options") or {}).get("include_usage"):
            out.append({**base, "choices": [], "usage": body.get("usage")})
        return out

    def _cached_tokens(self, text: str, n_prompt: int) -> int:
        blocks = self._cache.lookup_and_add(text)
        if n_prompt < CACHE_MIN_TOKENS:
            return 0
        cached = min(blocks * CACHE_BLOCK_TOKENS, n_prompt)
        return cached if cached >= CACHE_MIN_TOKENS else 0

    def _context_error(self, n_prompt: int, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "error": {
                "message": (
                    f"This model's maximum context length is {self.context_window} tokens. "
                    f"However, your messages resulted in {n_prompt} tokens. "
                    "Please reduce the length of the messages."
                ),
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }

    def _expand(
        self, short: dict[str, Any], request: dict[str, Any], n_prompt: int, cached: int
    ) -> dict[str, Any]:
        n = next(self._ids)
        calls = []
        for i, call in enumerate(short.get("tool_calls") or []):
            args = call.get("arguments", {})
            calls.append(
                {
                    "id": call.get("id") or f"call_{n}_{i}",
                    "type": "function",
                    "function": {
                        "name": call["name"],
                        # A str goes through untouched so tests can send broken JSON.
                        "arguments": args if isinstance(args, str) else json.dumps(args),
                    },
                }
            )
        content = short.get("content")
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = calls
        completion = _count((content or "") + "".join(_dumps(c) for c in calls))
        usage: dict[str, Any] = {
            "prompt_tokens": n_prompt,
            "completion_tokens": completion,
            "total_tokens": n_prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        usage.update(short.get("usage") or {})
        return {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": short.get("finish_reason")
                    or ("tool_calls" if calls else "stop"),
                }
            ],
            "usage": usage,
        }

    def models(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": self.model, "object": "model", "created": 0, "owned_by": "fake",
        }  # fmt: skip
        if self.context_window is not None:
            entry["max_model_len"] = self.context_window
        return {"object": "list", "data": [entry]}

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body.get("input", "")
        texts = [inputs] if isinstance(inputs, str) else [str(x) for x in inputs]
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(t)}
            for i, t in enumerate(texts)
        ]
        tokens = sum(_count(t) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": body.get("model", self.model),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _is_short_form(body: dict[str, Any]) -> bool:
    return "choices" not in body and ("content" in body or "tool_calls" in body)


def _vector(text: str) -> list[float]:
    """A unit vector from the text's hash: equal texts, equal vectors."""
    raw = hashlib.shake_256(text.encode("utf-8", "surrogatepass")).digest(4 * EMBEDDING_DIM)
    ints = struct.unpack(f"<{EMBEDDING_DIM}i", raw)
    norm = math.sqrt(sum(x * x for x in ints)) or 1.0
    return [x / norm for x in ints]


class _Handler(LoopbackHandler):
    fake: FakeOpenAIServer  # set on the per-server subclass

    def _path(self) -> str:
        path = self.path.split("?", 1)[0].rstrip("/")
        # Accept both ".../v1/x" and "/x" so a base_url without /v1 works too.
        return path[3:] if path.startswith("/v1/") else path

    def _authorised(self) -> bool:
        key = self.fake.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._send(401, {}, {"error": {
            "message": "Incorrect API key provided. You can find your API key in your account.",
            "type": "invalid_request_error", "param": None, "code": "invalid_api_key",
        }})  # fmt: skip
        return False

    def _send(self, status: int, headers: dict[str, str], body: Any) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        ctype = "text/plain" if isinstance(body, str) else "application/json"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if self._path() == "/models":
            self._send(200, {}, self.fake.models())
        else:
            self._send(404, {}, _error_body(404))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self._authorised():
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send(400, {}, _error_body(400))
            return
        self.fake._record(body)
        path = self._path()
        if path == "/chat/completions":
            status, headers, out = self.fake._chat(body)
            if isinstance(out, Hang):
                self._hang(out)
                return
            if status == 200 and body.get("stream"):
                self._stream(self.fake.chunks(out, body))
                return
            self._send(status, headers, out)
        elif path == "/embeddings":
            self._send(200, {}, self.fake._embeddings(body))
        else:
            self._send(404, {}, _error_body(404))

    def _stream(self, chunks: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for data in [*(json.dumps(c) for c in chunks), "[DONE]"]:
            frame = f"data: {data}\n\n".encode()
            self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
            self.wfile.flush()
            time.sleep(0)  # let the client see chunks one by one
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _hang(self, hang: Hang) -> None:
        self.fake._stopping.wait(hang.seconds)
        self.close_connection = True  # drop the connection without an answer


FakeOpenAIServer.handler_class = _Handler
