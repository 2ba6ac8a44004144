"""`AnthropicCore`: the core for Claude, on Anthropic's Messages API through the official SDK.

`anthropic/MODEL` (e.g. `anthropic/claude-sonnet-4-5`) makes one. It:

* sends a `ChatRequest` as a Messages request: the system message as system
  blocks, tools as native tools with `tool_choice` (`required` -> `any`),
  earlier calls and results as `tool_use` / `tool_result` blocks, consecutive
  results merged into one user turn so roles alternate (`llm/caching.py`);
* marks prompt-cache breakpoints (`cache_control: ephemeral`) at the window's
  stable boundaries — after the base prompt, after core memory and summary,
  and on the newest message that is not a volatile alert — three of the four
  Anthropic allows;
* reports usage with `prompt_tokens` = input + cache writes + cache reads
  (everything the prompt cost) and `cached_prompt_tokens` = cache reads;
* streams on request: `stream(request)` yields text deltas, and
  `chat_stream(request, on_text)` streams and returns the whole response,
  tool calls included; `chat()` itself does one non-streaming request;
* maps failures onto the kernel's error kinds: 429 and 529 "overloaded" ->
  `RateLimited` (with the server's `retry-after`), "prompt is too long" ->
  `ContextLengthExceeded`, 401/403 -> `AuthenticationFailed` (never with the
  key), 5xx, timeouts and refused connections -> `CoreUnavailable`, the rest
  -> `BadRequest`, including errors that arrive inside a stream;
* learns the context window and structured-output support from the models
  endpoint (`probe()`), else from `llm/models.py`.

Key handling, error mapping and token calibration are `llm/remote.py`'s,
shared with the other network cores.

`ANTHROPIC_API_KEY` and `ANTHROPIC_BASE_URL` configure it, as they do the
SDK. The SDK (about 2.5 s to import) is imported on first use, in a thread,
and runs with `max_retries=0`: the kernel's run queue does the backoff.

Left out: extended thinking, images and documents, the 1-hour cache TTL,
the token-counting endpoint (`count_tokens` stays a calibrated estimate, as
the kernel needs it synchronously), and the Batch API.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from llmos.llm.caching import (
    MAX_BREAKPOINTS,
    Block,
    Turn,
    mark_last_stable,
    system_blocks,
    to_turns,
)
from llmos.llm.core import (
    BadRequest,
    ChatRequest,
    ChatResponse,
    ContextLengthExceeded,
    CoreError,
    CoreUnavailable,
    Delta,
    ToolCall,
    Usage,
)
from llmos.llm.models import lookup, with_provider
from llmos.llm.remote import (
    CONTEXT_OVERFLOW,
    MAX_ERROR_TEXT,
    RemoteCore,
    as_int,
    retry_after_seconds,
    status_error,
)
from llmos.llm.replycap import ReplyBudget
from llmos.redact import redact

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

__all__ = ["AnthropicCore"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
EPHEMERAL = {"type": "ephemeral"}
_TOOL_CHOICE = {"required": {"type": "any"}, "auto": {"type": "auto"}, "none": {"type": "none"}}
_FINISH = {"tool_use": "tool_calls", "max_tokens": "length", "end_turn": "stop"}


class AnthropicCore(RemoteCore):
    """A `Core` on Anthropic's Messages API."""

    native_tools = True
    key_env = "ANTHROPIC_API_KEY"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        context_window: int | None = None,
        capacity: int = 16,
        timeout: float = 120.0,
        name: str | None = None,
        cache: bool = True,
    ) -> None:
        name = name or f"anthropic/{model}"
        self.info = lookup(name)
        super().__init__(
            name,
            context_window=context_window,
            default_window=self.info.context_window,
            capacity=capacity,
            timeout=timeout,
            api_key=api_key,
        )
        self.model = model
        self.base_url = base_url
        #: place cache_control breakpoints (off: send none).
        self.cache = cache
        self._client: AsyncAnthropic | None = None
        self._send_temperature = True

    # --- client ------------------------------------------------------------------

    def _where(self) -> str:
        url = self.base_url or os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL
        return redact(url, mask="***")  # a gateway URL may carry user:password

    async def _get_client(self) -> AsyncAnthropic:
        if self._client is None:
            own = self.base_url is not None or bool(os.environ.get("ANTHROPIC_BASE_URL"))
            key = self._key(own_endpoint=own)
            # ~2.5 s to import: off the event loop, so other agents keep running.
            sdk = await asyncio.to_thread(importlib.import_module, "anthropic")
            if self._client is not None:
                return self._client
            self._client = sdk.AsyncAnthropic(
                api_key=key,
                base_url=self.base_url,  # None: ANTHROPIC_BASE_URL, else the default
                timeout=self.timeout,
                max_retries=0,  # the kernel's run queue backs off itself
            )
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # --- model settings ----------------------------------------------------------

    async def probe(self) -> int:
        """Ask the models endpoint for the window and structured-output support.

        Best effort: any failure keeps what `llm/models.py` said; a window
        given to the constructor always wins.
        """
        try:
            client = await self._get_client()
            raw = await client.models.with_raw_response.retrieve(self.model)
            data = raw.http_response.json()
        except Exception:  # chat() reports real errors; a probe only informs
            return self.context_window
        if not isinstance(data, Mapping):
            return self.context_window
        window = as_int(data.get("max_input_tokens")) or None
        caps = data.get("capabilities")
        schema = None
        if isinstance(caps, Mapping) and isinstance(caps.get("structured_outputs"), Mapping):
            schema = bool(caps["structured_outputs"].get("supported"))
        self.info = with_provider(self.info, context_window=window, json_schema=schema)
        return self._learn_window(self.info.context_window)

    # --- requests ----------------------------------------------------------------

    def request_body(self, request: ChatRequest) -> dict[str, Any]:
        """The Messages API body for `request` (public for tests and benchmarks)."""
        messages = request.messages
        if not request.tools:
            # Without tool definitions the API rejects tool blocks: earlier
            # calls and results become text (summary requests have none anyway).
            from llmos.llm.toolcalls import flatten_messages

            if any(m.tool_calls or m.role == "tool" for m in messages):
                messages = flatten_messages(messages)
        turns = to_turns(messages, request.volatile_messages)
        system = system_blocks(request)
        if self.cache:
            mark_last_stable(turns)
        else:
            system = [(text, False) for text, _ in system]
        _cap_breakpoints(system, turns)

        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": [
                {"role": t.role, "content": [_render(b) for b in t.blocks]} for t in turns
            ],
        }
        if system:
            body["system"] = [
                {"type": "text", "text": text, **({"cache_control": EPHEMERAL} if bp else {})}
                for text, bp in system
            ]
        if request.tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
            body["tool_choice"] = _TOOL_CHOICE[request.tool_choice]
        if self._send_temperature:
            # In extra_body: recent SDKs dropped the argument, as some recent
            # models reject it; a 400 naming it turns it off (see _degrade).
            body["extra_body"] = {"temperature": min(1.0, max(0.0, request.temperature))}
        return body

    def _degrade(self, error: BadRequest, sent: dict[str, Any]) -> bool:
        """Stop sending temperature if the server just rejected it; True to retry."""
        if "temperature" in str(error).lower() and "extra_body" in sent and self._send_temperature:
            self._send_temperature = False
            return True
        return False

    async def _create(self, body: dict[str, Any], **more: Any) -> Any:
        """`messages.create` (raw, or a stream with `stream=True`); errors as `CoreError`s."""
        client = await self._get_client()
        import anthropic  # imported by _get_client: a dict lookup

        create = client.messages.create if more else client.messages.with_raw_response.create
        try:
            return await create(**body, **more)
        except anthropic.AnthropicError as exc:
            # `from None`: the SDK error carries the request and its headers.
            raise self._map_error(exc) from None

    async def chat(self, request: ChatRequest) -> ChatResponse:
        if request.on_delta is not None:  # the caller wants the pieces as they come
            return await self.chat_stream(request)
        _, raw = await self._send(lambda: self.request_body(request), self._create)
        try:
            data = raw.http_response.json()
        except ValueError:
            raise self._not_json(raw.http_response.text) from None
        response = _parse_message(data, self.name)
        self._calibrate(request.messages, request.tools, response.usage)
        return response

    async def stream(self, request: ChatRequest) -> AsyncIterator[str]:
        """Yield the answer's text as it is generated (tool calls are not yielded)."""
        acc = _StreamState()
        async for event in self._events(request):
            text = acc.feed(event)
            if text:
                yield text

    async def chat_stream(
        self, request: ChatRequest, on_text: Callable[[str], None] | None = None
    ) -> ChatResponse:
        """Stream the answer, calling `on_text` with each text delta (and the
        request's `on_delta` with every piece, tool input too); return all of it."""
        acc = _StreamState(request.on_delta)
        async for event in self._events(request):
            text = acc.feed(event)
            if text and on_text is not None:
                on_text(text)
        response = acc.response(self.name)
        self._calibrate(request.messages, request.tools, response.usage)
        return response

    async def _events(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        _, stream = await self._send(
            lambda: self.request_body(request), lambda body: self._create(body, stream=True)
        )
        import anthropic  # imported by _get_client: a dict lookup

        budget = ReplyBudget(self.name)  # a streamed reply is capped like a whole one
        try:
            async with stream:
                async for event in stream:
                    item = event.to_dict()
                    budget.add(_delta_text(item))
                    yield item
        except anthropic.AnthropicError as exc:
            raise self._map_error(exc) from None

    # --- errors ------------------------------------------------------------------

    def _map_error(self, exc: Exception) -> CoreError:
        import anthropic

        if isinstance(exc, anthropic.APITimeoutError):
            return CoreUnavailable(f"{self.name}: no answer within {self.timeout:g}s")
        if isinstance(exc, anthropic.APIConnectionError):
            return CoreUnavailable(f"{self.name}: cannot reach {self._where()}")
        if not isinstance(exc, anthropic.APIStatusError):
            return CoreUnavailable(f"{self.name}: {self._clean(str(exc))}")
        status = exc.status_code
        etype, detail = _error_parts(exc)
        detail = self._clean(detail)
        # An error event inside a stream arrives with the stream's 200.
        shown = f"HTTP {status}" if status != 200 else "error in stream"
        headers = exc.response.headers if exc.response is not None else {}
        return status_error(
            status,
            f"{self.name}: {shown}: {etype + ': ' if etype else ''}{detail}",
            retry_after=retry_after_seconds(headers),
            # 529: overloaded.
            rate_limited=status == 529 or etype in ("rate_limit_error", "overloaded_error"),
            auth=etype in ("authentication_error", "permission_error"),
            overflow=status == 413
            or etype == "request_too_large"
            or bool(CONTEXT_OVERFLOW.search(detail)),
            unavailable=etype in ("api_error", "timeout_error"),
        )


# --- helpers -----------------------------------------------------------------------


def _render(block: Block) -> dict[str, Any]:
    if block.kind == "tool_use":
        out: dict[str, Any] = {
            "type": "tool_use",
            "id": block.id,
            "name": block.name,
            "input": block.input,
        }
    elif block.kind == "tool_result":
        out = {"type": "tool_result", "tool_use_id": block.id, "content": block.text}
    else:
        out = {"type": "text", "text": block.text}
    if block.cache_after:
        out["cache_control"] = EPHEMERAL
    return out


def _cap_breakpoints(system: list[tuple[str, bool]], turns: list[Turn]) -> None:
    """Keep at most MAX_BREAKPOINTS, dropping the earliest message ones first."""
    marked = [b for t in turns for b in t.blocks if b.cache_after]
    excess = sum(1 for _, bp in system if bp) + len(marked) - MAX_BREAKPOINTS
    for block in marked:
        if excess <= 0:
            return
        block.cache_after = False
        excess -= 1
    for i, (text, bp) in enumerate(system):
        if excess <= 0:
            return
        if bp:
            system[i] = (text, False)
            excess -= 1


def _usage(raw: Any) -> Usage:
    u = raw if isinstance(raw, Mapping) else {}
    read = as_int(u.get("cache_read_input_tokens"))
    written = as_int(u.get("cache_creation_input_tokens"))
    return Usage(
        prompt_tokens=as_int(u.get("input_tokens")) + read + written,
        completion_tokens=as_int(u.get("output_tokens")),
        cached_prompt_tokens=read,
    )


def _error_parts(exc: Any) -> tuple[str, str]:
    """(error type, message) from an SDK status error's body."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping):
            return str(err.get("type") or ""), str(err.get("message") or "")
        if body.get("message"):
            return str(body.get("type") or ""), str(body["message"])
    if isinstance(body, str) and body.strip():
        return "", body.strip()
    return "", str(getattr(exc, "message", "") or type(exc).__name__)


def _parse_message(data: Any, name: str) -> ChatResponse:
    """A Messages API response body as a `ChatResponse`."""
    if not isinstance(data, Mapping):
        raise CoreUnavailable(f"{name}: malformed response: not a JSON object")
    if data.get("type") == "error":  # some gateways answer 200 with an error body
        err = data.get("error") if isinstance(data.get("error"), Mapping) else {}
        msg = str(err.get("message") or err)[:MAX_ERROR_TEXT]
        if CONTEXT_OVERFLOW.search(msg):
            raise ContextLengthExceeded(f"{name}: {msg}")
        raise CoreUnavailable(f"{name}: server error in a 200 answer: {msg}")
    content = data.get("content")
    if not isinstance(content, list):
        raise CoreUnavailable(f"{name}: malformed response: no content list")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in content:
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            args = block.get("_arguments")
            if not isinstance(args, str):
                given = block.get("input")
                args = json.dumps(given if given is not None else {}, ensure_ascii=False)
            calls.append(
                ToolCall(
                    id=str(block.get("id") or f"toolu_{len(calls)}"),
                    name=str(block.get("name") or ""),
                    arguments=args,
                )
            )
    stop = str(data.get("stop_reason") or "")
    return ChatResponse(
        content="".join(texts) or None,
        tool_calls=calls,
        usage=_usage(data.get("usage")),
        finish_reason=_FINISH.get(stop, stop or ("tool_calls" if calls else "stop")),
    )


class _StreamState:
    """Builds a `ChatResponse` from Messages streaming events (as dicts)."""

    def __init__(self, on_delta: Callable[[Delta], None] | None = None) -> None:
        self.on_delta = on_delta
        self.blocks: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] = {}
        self.stop_reason = ""
        self.done = False

    def feed(self, event: Mapping[str, Any]) -> str | None:
        """Take one event; return its text delta, if it has one."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.usage.update(message.get("usage") or {})
        elif kind == "content_block_start":
            block = dict(event.get("content_block") or {})
            block["_json"] = ""
            self.blocks[int(event.get("index", len(self.blocks)))] = block
            text = block.get("text")
            text = text if isinstance(text, str) and text else None
            if text and self.on_delta is not None:
                self.on_delta(Delta(text))
            return text
        elif kind == "content_block_delta":
            block = self.blocks.setdefault(int(event.get("index", 0)), {"type": "text"})
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                piece = str(delta.get("text") or "")
                block["text"] = str(block.get("text") or "") + piece
                if piece and self.on_delta is not None:
                    self.on_delta(Delta(piece))
                return piece or None
            if delta.get("type") == "input_json_delta":
                piece = str(delta.get("partial_json") or "")
                block["_json"] = str(block.get("_json") or "") + piece
                if piece and self.on_delta is not None:
                    calls = [
                        i for i in sorted(self.blocks) if self.blocks[i].get("type") == "tool_use"
                    ]
                    index = int(event.get("index", 0))
                    number = calls.index(index) if index in calls else 0
                    self.on_delta(Delta(piece, call=number, name=block.get("name")))
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            self.stop_reason = str(delta.get("stop_reason") or self.stop_reason)
            # message_delta's usage is cumulative: it replaces, not adds.
            self.usage.update(
                {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            )
        elif kind == "message_stop":
            self.done = True
        return None

    def response(self, name: str) -> ChatResponse:
        if not self.done:
            raise CoreUnavailable(f"{name}: the stream ended before message_stop")
        content = []
        for index in sorted(self.blocks):
            block = dict(self.blocks[index])
            raw_json = block.pop("_json", "")
            if block.get("type") == "tool_use" and raw_json:
                # The arguments exactly as streamed: the executor parses (and
                # reports) them, as for every other core.
                block["_arguments"] = raw_json
            content.append(block)
        return _parse_message(
            {"content": content, "stop_reason": self.stop_reason, "usage": self.usage}, name
        )


def _delta_text(event: dict[str, Any]) -> str | None:
    """The text a stream event adds (reply, thinking or tool input), for the size cap."""
    delta = event.get("delta")
    if not isinstance(delta, dict):
        return None
    return delta.get("text") or delta.get("partial_json") or delta.get("thinking")
