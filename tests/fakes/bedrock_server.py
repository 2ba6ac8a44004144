"""A real Bedrock runtime endpoint on loopback: Converse, ConverseStream and InvokeModel.

`FakeBedrockServer` listens on 127.0.0.1 (a free port) in a background
thread; point boto3 at it with `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` (or
`endpoint_url=`) and dummy credentials. It serves:

* `POST /model/{modelId}/converse`: the Converse JSON answer (`output.message`
  with `text` and `toolUse` blocks, `stopReason`, `usage` with
  `cacheReadInputTokens` / `cacheWriteInputTokens`);
* `POST /model/{modelId}/converse-stream`: the same answer as an
  `application/vnd.amazon.eventstream` body — binary frames (prelude with
  total and header lengths and its CRC32, typed headers, JSON payload,
  message CRC32; see `encode_frame`) carrying `messageStart`,
  `contentBlockStart/Delta/Stop`, `messageStop` and `metadata` events, or an
  exception frame mid-stream (`StreamError`);
* `POST /model/{modelId}/invoke`: embeddings for Titan text v2
  (`{"inputText"}` -> `{"embedding", "inputTextTokenCount"}`) and Cohere embed
  (`{"texts", "input_type"}` -> `{"embeddings", ...}`): deterministic
  bag-of-words vectors, so similar texts are near.

Answers come from `script(...)`, else `policy(view)` over the OpenAI-shaped
view of the request (`caching.converse_view`), else "ok". Errors are
`AwsError(status, code, message)` (sent as AWS does: the `x-amzn-ErrorType`
header and a JSON `message`), `Hang()`, or `StreamError(code, message)`.
With `access_key` set, a request signed with another key id gets 403
`UnrecognizedClientException` (the SigV4 signature itself is not checked).

Requests are checked for what the real service rejects and llmos could get
wrong: turn order and tool-result pairing, tool blocks without `toolConfig`,
more than four `cachePoint`s, and `cachePoint`s sent to a model without
caching (`caching=False`). Prompt caching (`prompt_cache=True`) follows the
cache points with the rules of `caching.BreakpointCache`; `context_window`
makes longer prompts fail with "Input is too long for requested model."

Left out: SigV4 verification, guardrails, images and documents, reasoning
blocks, InvokeModel for chat models.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import urllib.parse
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.fakes.caching import (
    BreakpointCache,
    CacheUsage,
    NeutralTurn,
    Reply,
    TurnError,
    check_turns,
    converse_view,
    dumps,
    tokens,
)
from tests.fakes.loopback import LoopbackHandler, LoopbackServer
from tests.fakes.openai_server import Hang

__all__ = [
    "AwsError",
    "FakeBedrockServer",
    "Hang",
    "StreamError",
    "encode_frame",
    "segments",
]

MAX_CACHE_POINTS = 4
_PATH = re.compile(r"^/model/(?P<model>[^/]+)/(?P<op>converse|converse-stream|invoke)$")


@dataclass
class AwsError:
    """An AWS error answer, e.g. AwsError(429, "ThrottlingException", "Too many requests")."""

    status: int
    code: str
    message: str = "fake error"
    headers: dict[str, str] | None = None


@dataclass
class StreamError:
    """Start a ConverseStream answer, then send an exception frame (code like
    "throttlingException", "modelStreamErrorException")."""

    code: str = "throttlingException"
    message: str = "Too many requests, please wait before trying again."


Outcome = dict[str, Any] | AwsError | Hang | StreamError
Policy = Callable[[dict[str, Any]], Outcome]


# --- the event stream encoding -------------------------------------------------------


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    # type 7 = string: 2-byte big-endian length, then the bytes
    return (
        len(raw_name).to_bytes(1, "big")
        + raw_name
        + b"\x07"
        + len(raw_value).to_bytes(2, "big")
        + raw_value
    )


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One `application/vnd.amazon.eventstream` message.

    total length (4) | headers length (4) | CRC32 of those 8 bytes (4) |
    headers | payload | CRC32 of everything before (4); all big-endian.
    """
    head = b"".join(_header(k, v) for k, v in headers.items())
    total = 4 + 4 + 4 + len(head) + len(payload) + 4
    prelude = total.to_bytes(4, "big") + len(head).to_bytes(4, "big")
    message = prelude + zlib.crc32(prelude).to_bytes(4, "big") + head + payload
    return message + zlib.crc32(message).to_bytes(4, "big")


def event_frame(event_type: str, body: dict[str, Any]) -> bytes:
    return encode_frame(
        {
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        },
        json.dumps(body).encode(),
    )


def exception_frame(code: str, message: str) -> bytes:
    return encode_frame(
        {
            ":exception-type": code,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps({"message": message}).encode(),
    )


# --- request checks and caching ---------------------------------------------------------


def segments(body: dict[str, Any]) -> list[tuple[str, bool]]:
    """The request as cacheable segments in Bedrock's order: tools, system, messages.

    A `cachePoint` item marks a breakpoint after the segment before it.
    """
    out: list[tuple[str, bool]] = []

    def add(prefix: str, items: list[dict[str, Any]]) -> None:
        for item in items:
            if "cachePoint" in item:
                if out:
                    out[-1] = (out[-1][0], True)
                continue
            out.append((prefix + dumps(item), False))

    add("tool:", list((body.get("toolConfig") or {}).get("tools") or []))
    add("system:", list(body.get("system") or []))
    for m in body.get("messages") or []:
        add(f"{m.get('role')}:", list(m.get("content") or []))
    return out


def _count_cache_points(body: dict[str, Any]) -> int:
    items = list((body.get("toolConfig") or {}).get("tools") or []) + list(body.get("system") or [])
    for m in body.get("messages") or []:
        items.extend(m.get("content") or [])
    return sum(1 for item in items if "cachePoint" in item)


def _check(body: dict[str, Any], caching: bool) -> None:
    points = _count_cache_points(body)
    if points and not caching:
        raise TurnError(
            "You invoked an unsupported model or your request did not allow prompt caching. "
            "See the documentation for more information."
        )
    if points > MAX_CACHE_POINTS:
        raise TurnError(f"The number of cachePoint blocks ({points}) exceeds the maximum of 4.")
    turns: list[NeutralTurn] = []
    tool_blocks = False
    for m in body.get("messages") or []:
        t = NeutralTurn(m.get("role", ""))
        for b in m.get("content") or []:
            if "text" in b:
                if not b["text"]:
                    raise TurnError("The text field in the ContentBlock object is blank.")
                t.texts += 1
            elif "toolUse" in b:
                tool_blocks = True
                t.uses.append(b["toolUse"]["toolUseId"])
            elif "toolResult" in b:
                tool_blocks = True
                if t.texts:
                    t.results_after_text = True
                t.results.append(b["toolResult"]["toolUseId"])
        turns.append(t)
    if tool_blocks and not body.get("toolConfig"):
        raise TurnError(
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )
    check_turns(turns)


def _vector(text: str, dim: int) -> list[float]:
    """Bag of hashed words: texts sharing words point the same way."""
    out = [0.0] * dim
    for word in re.findall(r"\w+", text.lower()):
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
        out[h % dim] += 1.0
    norm = math.sqrt(sum(x * x for x in out)) or 1.0
    return [x / norm for x in out]


class FakeBedrockServer(LoopbackServer):
    label = "fake-bedrock"

    """A Bedrock runtime endpoint in a background thread."""

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        prompt_cache: bool = False,
        caching: bool = True,
        context_window: int | None = None,
        access_key: str | None = None,
        chunk_chars: int = 7,
    ) -> None:
        self.policy = policy
        self.prompt_cache = prompt_cache
        self.caching = caching  # False: the model rejects cachePoint blocks
        self.context_window = context_window
        self.access_key = access_key
        self.chunk_chars = chunk_chars
        #: (operation, model id, body) of every request
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.usages: list[CacheUsage] = []
        self._ids = itertools.count(1)
        self._cache = BreakpointCache()
        self._init_loopback()

    @property
    def endpoint_url(self) -> str:
        """What AWS_ENDPOINT_URL_BEDROCK_RUNTIME (or endpoint_url=) should be."""
        return self.base_url

    def chat_requests(self) -> list[dict[str, Any]]:
        return [body for op, _, body in self.requests if op != "invoke"]

    # --- handling ------------------------------------------------------------------

    def _next(self, body: dict[str, Any]) -> Outcome:
        with self._lock:
            scripted = self._script.pop(0) if self._script else None
        if scripted is not None:
            return scripted
        if self.policy is None:
            return {"content": "ok"}
        try:
            return self.policy(converse_view(body))
        except Exception as exc:
            return AwsError(500, "InternalServerException", f"policy raised {exc!r}")

    def _converse(self, body: dict[str, Any]) -> Outcome | tuple[Outcome, CacheUsage]:
        try:
            _check(body, self.caching)
        except TurnError as exc:
            return AwsError(400, "ValidationException", str(exc))
        segs = segments(body)
        n_prompt = tokens(sum(len(s) + 1 for s, _ in segs))
        if self.context_window is not None and n_prompt > self.context_window:
            return AwsError(400, "ValidationException", "Input is too long for requested model.")
        outcome = self._next(body)
        if isinstance(outcome, AwsError | Hang):
            return outcome
        usage = self._cache.account(segs) if self.prompt_cache else CacheUsage(n_prompt, 0, 0)
        with self._lock:
            self.usages.append(usage)
        return outcome, usage

    def _answer(self, reply: Reply, usage: CacheUsage) -> tuple[list[dict[str, Any]], str, dict]:
        n = next(self._ids)
        content: list[dict[str, Any]] = []
        if reply.text:
            content.append({"text": reply.text})
        for i, (name, args) in enumerate(reply.calls):
            content.append(
                {
                    "toolUse": {
                        "toolUseId": f"tooluse_{n:04d}_{i}",
                        "name": name,
                        "input": json.loads(args) if isinstance(args, str) else args,
                    }
                }
            )
        out = reply.output_tokens()
        u = {
            "inputTokens": usage.input_tokens,
            "outputTokens": out,
            "totalTokens": usage.total + out,
            "cacheReadInputTokens": usage.cache_read,
            "cacheWriteInputTokens": usage.cache_write,
        }
        return content, reply.stop, u

    def converse_json(self, outcome: dict[str, Any], usage: CacheUsage) -> dict[str, Any]:
        content, stop, u = self._answer(Reply.from_short(outcome), usage)
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop,
            "usage": u,
            "metrics": {"latencyMs": 1},
        }

    def stream_frames(
        self, outcome: dict[str, Any] | StreamError, usage: CacheUsage
    ) -> list[bytes]:
        frames = [event_frame("messageStart", {"role": "assistant", "p": "abcd"})]
        if isinstance(outcome, StreamError):
            return [*frames, exception_frame(outcome.code, outcome.message)]
        reply = Reply.from_short(outcome)
        content, stop, u = self._answer(reply, usage)
        index = 0
        if reply.text:
            for piece in _chunks(reply.text, self.chunk_chars):
                frames.append(event_frame("contentBlockDelta", {
                    "contentBlockIndex": 0, "delta": {"text": piece}, "p": "ab",
                }))  # fmt: skip
            frames.append(event_frame("contentBlockStop", {"contentBlockIndex": 0}))
            index = 1
        for block, (_, args) in zip(
            [b for b in content if "toolUse" in b], reply.calls, strict=True
        ):
            use = block["toolUse"]
            raw = args if isinstance(args, str) else json.dumps(args)
            frames.append(event_frame("contentBlockStart", {
                "contentBlockIndex": index,
                "start": {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}},
            }))  # fmt: skip
            for piece in _chunks(raw, self.chunk_chars):
                frames.append(event_frame("contentBlockDelta", {
                    "contentBlockIndex": index, "delta": {"toolUse": {"input": piece}},
                }))  # fmt: skip
            frames.append(event_frame("contentBlockStop", {"contentBlockIndex": index}))
            index += 1
        frames.append(event_frame("messageStop", {"stopReason": stop}))
        frames.append(event_frame("metadata", {"usage": u, "metrics": {"latencyMs": 1}}))
        return frames

    def invoke(self, model_id: str, body: dict[str, Any]) -> Outcome | dict[str, Any]:
        with self._lock:
            scripted = self._script.pop(0) if self._script else None
        if isinstance(scripted, AwsError | Hang):
            return scripted
        if "titan-embed" in model_id:
            text = body.get("inputText")
            if not isinstance(text, str) or not text:
                return AwsError(400, "ValidationException", "inputText must be a non-empty string")
            dim = int(body.get("dimensions") or 1024)
            if dim not in (256, 512, 1024):
                return AwsError(400, "ValidationException", f"unsupported dimensions {dim}")
            return {"embedding": _vector(text, dim), "inputTextTokenCount": tokens(len(text))}
        if "cohere.embed" in model_id:
            texts = body.get("texts")
            if not isinstance(texts, list) or not 1 <= len(texts) <= 96:
                return AwsError(400, "ValidationException", "texts must hold 1 to 96 strings")
            if body.get("input_type") not in (
                "search_document", "search_query", "classification", "clustering",
            ):  # fmt: skip
                return AwsError(400, "ValidationException", "invalid input_type")
            return {
                "id": f"emb-{next(self._ids)}",
                "response_type": "embeddings_floats",
                "texts": texts,
                "embeddings": [_vector(t, 1024) for t in texts],
            }
        return AwsError(400, "ValidationException", f"the fake cannot invoke {model_id}")


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class _Handler(LoopbackHandler):
    fake: FakeBedrockServer

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", "00000000-fake-0000-0000-000000000000")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, err: AwsError) -> None:
        headers = {"x-amzn-ErrorType": f"{err.code}:http://internal.amazon.com/coral/"}
        headers.update(err.headers or {})
        self._send_json(err.status, {"message": err.message}, headers)

    def _authorised(self) -> bool:
        key = self.fake.access_key
        if key is None or f"Credential={key}/" in (self.headers.get("Authorization") or ""):
            return True
        self._send_error(AwsError(
            403, "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ))  # fmt: skip
        return False

    def do_GET(self) -> None:
        # Bedrock runtime has no GET routes; `llmos models` only checks that we answer.
        self._send_json(404, {"message": "Not Found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self._authorised():
            return
        match = _PATH.match(self.path.split("?", 1)[0])
        if match is None:
            self._send_json(404, {"message": f"no route {self.path}"})
            return
        model_id = urllib.parse.unquote(match["model"])
        op = match["op"]
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_error(AwsError(400, "SerializationException", "body is not JSON"))
            return
        with self.fake._lock:
            self.fake.requests.append((op, model_id, body))
        if op == "invoke":
            result = self.fake.invoke(model_id, body)
            if isinstance(result, Hang):
                self._hang(result)
            elif isinstance(result, AwsError):
                self._send_error(result)
            else:
                self._send_json(200, result)
            return
        result2 = self.fake._converse(body)
        if isinstance(result2, Hang):
            self._hang(result2)
            return
        if isinstance(result2, AwsError):
            self._send_error(result2)
            return
        if isinstance(result2, StreamError) or not isinstance(result2, tuple):
            self._send_error(AwsError(500, "InternalServerException", "bad script entry"))
            return
        outcome, usage = result2
        if op == "converse-stream":
            self._stream(self.fake.stream_frames(outcome, usage))
        elif isinstance(outcome, StreamError):
            self._send_error(AwsError(429, "ThrottlingException", outcome.message))
        else:
            self._send_json(200, self.fake.converse_json(outcome, usage))

    def _hang(self, hang: Hang) -> None:
        self.fake._stopping.wait(hang.seconds)
        self.close_connection = True

    def _stream(self, frames: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("x-amzn-RequestId", "00000000-fake-0000-0000-000000000000")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for frame in frames:
            self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


FakeBedrockServer.handler_class = _Handler
