"""`OpenAICompatCore`: the core for any OpenAI-compatible chat completions server.

One adapter covers OpenAI itself and the servers that copy its API (vLLM,
llama.cpp server, Ollama, Groq, koboldcpp, Bedrock gateways…), through the
official `openai` SDK (`AsyncOpenAI`). It:

* sends `ChatRequest`s as chat completions (tools, tool_choice, max tokens,
  temperature, and the agent's `cache_key` as `prompt_cache_key`) and turns
  the answer into a `ChatResponse`, including cached prompt tokens;
* for servers without function calling (`native_tools=False`) renders the
  tools into the system prompt, asks for a JSON object constrained by
  `response_format` (json_schema), and parses it into a `ToolCall` with the
  helpers of `llm/toolcalls.py`;
* maps every failure onto the kernel's error kinds (`ContextLengthExceeded`,
  `RateLimited` with the server's retry delay, `AuthenticationFailed` without
  the key in the message, `CoreUnavailable`, `BadRequest`), including
  malformed bodies, so the kernel never sees an SDK exception;
* learns the context window from `GET /v1/models` (`probe()`), else from
  `llm/models.py`'s table of well-known models, else assumes 8192;
* counts tokens with a `CalibratedEstimate` fed by the usage each response
  reports (key handling, error mapping and calibration are `llm/remote.py`'s,
  shared with the other network cores);
* streams when the request has `on_delta`: the SDK's `AsyncStream` over
  `stream: true` (with `stream_options.include_usage`), each content or
  tool-call-arguments piece reported as it arrives, the chunks folded into
  the same response a plain request gets.

The SDK is imported on first use, not at import time: it takes over a second
to import, which alone would blow the CLI's start-up budget.

Left out: the Responses API, SDK-side retries (`max_retries=0`:
the kernel backs off itself), per-provider quirks beyond those noted inline,
and llama.cpp's `/props` (its runtime `n_ctx`; `/v1/models` only tells the
training context).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from llmos.llm.core import (
    BadRequest,
    ChatRequest,
    ChatResponse,
    ContextLengthExceeded,
    CoreError,
    CoreUnavailable,
    Delta,
    Message,
    ToolCall,
    ToolSpec,
    Usage,
)
from llmos.llm.models import (
    OLLAMA_DEFAULT_CONTEXT,
    is_reasoning_model,
    known_context_window,
)
from llmos.llm.openai_stream import ChunkFold
from llmos.llm.remote import (
    CONTEXT_OVERFLOW,
    MAX_ERROR_TEXT,
    RemoteCore,
    as_int,
    retry_after_seconds,
    server_side,
    status_error,
)
from llmos.llm.replycap import STREAM_BODY, ReplyBudget, read_capped

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = ["OpenAICompatCore", "ollama_core"]

OLLAMA_BASE_URL = "http://localhost:11434/v1"


def _http_client(openai: Any) -> dict[str, Any]:
    """The SDK's aiohttp transport (`openai[aiohttp]`) when installed.

    With many agents in flight the SDK's default httpx transport costs about
    3 ms of CPU per request (its pool scans every connection per request); the
    aiohttp transport, which the SDK offers for high concurrency, about 1.7 ms
    (`benchmarks/concurrency.py`). Same API, errors and timeouts either way.
    """
    try:
        return {"http_client": openai.DefaultAioHttpClient()}
    except (AttributeError, RuntimeError):  # an older SDK, or aiohttp missing
        return {}


class OpenAICompatCore(RemoteCore):
    """A `Core` talking to an OpenAI-compatible `/v1/chat/completions` endpoint."""

    key_env = "OPENAI_API_KEY"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        context_window: int | None = None,
        native_tools: bool = True,
        capacity: int = 16,
        timeout: float = 120,
        name: str | None = None,
    ) -> None:
        super().__init__(
            name or f"openai/{model}",
            context_window=context_window,
            default_window=known_context_window(model),
            capacity=capacity,
            timeout=timeout,
            api_key=api_key,
        )
        self.model = model
        self.base_url = base_url
        self.native_tools = native_tools
        self._client: AsyncOpenAI | None = None
        # Degrade steps for servers that reject optional request fields; each
        # is learnt once (from a 400 that names the field) and then remembered.
        self._send_cache_key = True
        self._json_modes = ["json_schema", "json_object", "none"]

    # --- client ------------------------------------------------------------------

    async def _get_client(self) -> AsyncOpenAI:
        if self._client is None:
            key = self._key(own_endpoint=self.base_url is not None)
            # The SDK takes over a second to import: do it off the event loop
            # so other agents keep running while the first request starts.
            openai = await asyncio.to_thread(importlib.import_module, "openai")
            if self._client is not None:  # another request got there first
                return self._client
            self._client = openai.AsyncOpenAI(
                api_key=key,
                base_url=self.base_url,
                timeout=self.timeout,
                max_retries=0,  # the kernel does its own backoff
                **_http_client(openai),
            )
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # --- context window ----------------------------------------------------------

    async def probe(self) -> int:
        """Learn the context window from `GET /v1/models`; return it.

        A window given to the constructor always wins. Best effort: a server
        that fails, or reports nothing usable, leaves the table value.
        """
        if self._context_window_given:
            return self.context_window
        try:
            raw = await (await self._get_client()).models.with_raw_response.list()
            data = raw.http_response.json()
        except Exception:  # any failure: keep the table value, chat() will report errors
            return self.context_window
        return self._learn_window(_window_from_models(data, self.model))

    # --- chat --------------------------------------------------------------------

    async def chat(self, request: ChatRequest) -> ChatResponse:
        use_tools = bool(request.tools) and request.tool_choice != "none"
        emulate = use_tools and not self.native_tools
        messages = request.messages
        if not self.native_tools:
            from llmos.llm.toolcalls import flatten_messages, render_tools_prompt

            # Without native tools, earlier calls and results must be plain text too.
            messages = flatten_messages(messages)
            if emulate:
                messages = _with_system_text(messages, render_tools_prompt(request.tools))

        on_delta = request.on_delta
        post = self._post if on_delta is None else (lambda kw: self._post_stream(kw, on_delta))
        _, data = await self._send(
            lambda: self._request_kwargs(request, messages, use_tools, emulate), post
        )
        response = _parse_response(data, self.name)
        if emulate:
            from llmos.llm.toolcalls import as_tool_call

            response = as_tool_call(response, request.tools)
        tools = request.tools if use_tools and not emulate else ()
        self._calibrate(messages, tools, response.usage)
        return response

    def _request_kwargs(
        self, request: ChatRequest, messages: Sequence[Message], use_tools: bool, emulate: bool
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_openai() for m in messages],
        }
        if is_reasoning_model(self.model):
            kwargs["max_completion_tokens"] = request.max_tokens
        else:
            kwargs["max_tokens"] = request.max_tokens
            kwargs["temperature"] = request.temperature
        if use_tools and not emulate:
            kwargs["tools"] = [t.to_openai() for t in request.tools]
            kwargs["tool_choice"] = request.tool_choice
        if request.stop and not use_tools:
            kwargs["stop"] = request.stop[:4]  # OpenAI's API takes at most four
        if emulate:
            response_format = self._response_format(request.tools)
            if response_format is not None:
                kwargs["response_format"] = response_format
        extra: dict[str, Any] = {}
        if request.cache_key and self._send_cache_key:
            # In extra_body, not the SDK's own argument, so it is sent as a plain
            # JSON field that servers predating it mostly ignore.
            extra["prompt_cache_key"] = request.cache_key
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    def _response_format(self, tools: Sequence[ToolSpec]) -> dict[str, Any] | None:
        mode = self._json_modes[0]
        if mode == "json_schema":
            from llmos.llm.toolcalls import call_schema

            return {
                "type": "json_schema",
                "json_schema": {"name": "function_call", "schema": call_schema(tools)},
            }
        if mode == "json_object":
            return {"type": "json_object"}
        return None

    def _degrade(self, error: BadRequest, sent: dict[str, Any]) -> bool:
        """Drop `prompt_cache_key`, or step down the JSON mode, if the server rejected it."""
        lowered = str(error).lower()
        if "prompt_cache_key" in lowered and "prompt_cache_key" in sent.get("extra_body", {}):
            self._send_cache_key = False
            return True
        fmt = sent.get("response_format")
        if fmt is not None and ("response_format" in lowered or "json_schema" in lowered):
            if len(self._json_modes) > 1 and fmt["type"] == self._json_modes[0]:
                self._json_modes.pop(0)
            return True
        return False

    async def _post(self, kwargs: dict[str, Any]) -> Any:
        """Send one completion; the decoded JSON body, or a `CoreError`."""
        client = await self._get_client()
        with self._sdk_errors():
            # The SDK's low-level post: its auth, headers, timeouts and error
            # types, without `completions.create`'s recursive transform of the
            # typed params, which costs ~10 ms of CPU per request — ten times
            # llmos's own time per step. The body is already plain JSON.
            raw = await client.post(
                "/chat/completions", body=_body(kwargs), cast_to=httpx.Response, options=STREAM_BODY
            )
            text = (await read_capped(raw, self.name)).decode("utf-8", "replace")
        try:
            return json.loads(text)
        except ValueError as exc:
            raise self._not_json(text) from exc

    async def _post_stream(self, kwargs: dict[str, Any], on_delta: Callable[[Delta], None]) -> Any:
        """Send one completion with `stream`, reporting each piece to `on_delta`;
        returns the chunks folded into a chat.completion body (for `_parse_response`)."""
        client = await self._get_client()
        import openai  # already imported by _get_client: a dict lookup

        fold = ChunkFold()
        with self._sdk_errors():
            stream = await client.post(
                "/chat/completions",
                body={**_body(kwargs), "stream": True, "stream_options": {"include_usage": True}},
                cast_to=object,
                stream=True,
                stream_cls=openai.AsyncStream[object],
            )
            budget = ReplyBudget(self.name)  # a streamed reply is capped like a whole one
            async with stream:
                async for chunk in stream:
                    for delta in fold.feed(chunk):
                        budget.add(delta.text)
                        on_delta(delta)
        return fold.body()

    @contextlib.contextmanager
    def _sdk_errors(self) -> Iterator[None]:
        """The SDK's errors inside the block as this core's `CoreError`s."""
        import openai  # already imported by _get_client: a dict lookup

        try:
            yield
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            # `from None`: the SDK error carries the request (and its headers).
            raise self._map_error(exc) from None
        except openai.APIError as exc:
            raise self._map_error(exc) from exc
        except openai.OpenAIError as exc:
            raise CoreUnavailable(f"{self.name}: {self._clean(str(exc))}") from exc

    # --- errors ------------------------------------------------------------------

    def _map_error(self, exc: Exception) -> CoreError:
        import openai

        where = self.base_url or "api.openai.com"
        if isinstance(exc, openai.APITimeoutError):
            # The aiohttp transport reports a refused connection as a connect
            # timeout: either way the server was not reached.
            cause = exc.__cause__
            if cause is not None and type(cause).__name__ == "ConnectTimeout":
                return CoreUnavailable(
                    f"{self.name}: cannot reach {where}: {self._clean(str(cause))}"
                )
            return CoreUnavailable(f"{self.name}: no answer within {self.timeout:g}s")
        if isinstance(exc, openai.APIConnectionError):
            return CoreUnavailable(f"{self.name}: cannot reach {where}: {self._clean(str(exc))}")
        if not isinstance(exc, openai.APIStatusError):
            # APIResponseValidationError and other body trouble
            return CoreUnavailable(f"{self.name}: bad response: {self._clean(str(exc))}")

        status = exc.status_code
        detail = self._clean(_error_message(exc))
        code = exc.code or ""
        return status_error(
            status,
            f"{self.name}: HTTP {status}: {detail}",
            retry_after=retry_after_seconds(exc.response.headers),
            # A failing server's text says nothing about the prompt.
            overflow=not server_side(status)
            and bool(CONTEXT_OVERFLOW.search(code) or CONTEXT_OVERFLOW.search(detail)),
        )


# --- helpers -----------------------------------------------------------------------


def _with_system_text(messages: Sequence[Message], text: str) -> list[Message]:
    """`messages` with `text` appended to the system message (or a new one first)."""
    out = list(messages)
    if out and out[0].role == "system":
        first = out[0]
        joined = f"{first.content}\n\n{text}" if first.content else text
        out[0] = Message(role="system", content=joined)
    else:
        out.insert(0, Message(role="system", content=text))
    return out


def _error_message(exc: Any) -> str:
    """The server's own error text from an SDK status error."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        msg = body.get("message") or body.get("error") or body.get("detail")
        if isinstance(msg, Mapping):  # {"error": {"message": ...}} nested once more
            msg = msg.get("message")
        if msg:
            return str(msg)
    if isinstance(body, str) and body.strip():
        return body.strip()
    return str(getattr(exc, "message", "") or type(exc).__name__)


def _window_from_models(data: Any, model: str) -> int | None:
    """The context window a `/v1/models` body reports for `model`, if any.

    vLLM: `max_model_len`; Groq: `context_window`; OpenRouter: `context_length`;
    LM Studio: `max_context_length`; llama.cpp: `meta.n_ctx` or `meta.n_ctx_train`.
    """
    entries = data.get("data") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        return None
    entries = [e for e in entries if isinstance(e, Mapping)]
    chosen = next((e for e in entries if e.get("id") == model), None)
    if chosen is None and len(entries) == 1:
        chosen = entries[0]  # single-model servers often ignore the name we use
    if chosen is None:
        return None
    meta = chosen.get("meta") if isinstance(chosen.get("meta"), Mapping) else {}
    for value in (
        chosen.get("max_model_len"),
        chosen.get("context_window"),
        chosen.get("context_length"),
        chosen.get("max_context_length"),
        meta.get("n_ctx"),
        meta.get("n_ctx_train"),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _content_text(content: Any) -> str | None:
    """Message content as text: some servers send a list of parts."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, Mapping)]
        return "".join(t for t in texts if isinstance(t, str))
    return str(content)


def _parse_response(data: Any, name: str) -> ChatResponse:
    """A chat.completion body as a `ChatResponse`; `CoreUnavailable` if malformed."""
    if not isinstance(data, Mapping):
        raise CoreUnavailable(f"{name}: malformed response: not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        err = data.get("error")
        if err:
            # Some proxies answer 200 with an error body.
            msg = err.get("message") if isinstance(err, Mapping) else err
            text = f"{name}: server error in a 200 answer: {str(msg)[:MAX_ERROR_TEXT]}"
            if CONTEXT_OVERFLOW.search(str(msg)):
                raise ContextLengthExceeded(text)
            raise CoreUnavailable(text)
        raise CoreUnavailable(f"{name}: malformed response: no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise CoreUnavailable(f"{name}: malformed response: choice has no message")

    calls: list[ToolCall] = []
    for raw_call in message.get("tool_calls") or []:
        if not isinstance(raw_call, Mapping):
            continue
        fn = raw_call.get("function")
        fn = fn if isinstance(fn, Mapping) else {}
        args = fn.get("arguments")
        if args is None:
            args = "{}"
        elif not isinstance(args, str):  # some servers send an object
            args = json.dumps(args, ensure_ascii=False)
        calls.append(
            ToolCall(
                id=str(raw_call.get("id") or "call_" + secrets.token_hex(6)),
                name=str(fn.get("name") or ""),
                arguments=args,
            )
        )

    usage_raw = data.get("usage")
    usage_raw = usage_raw if isinstance(usage_raw, Mapping) else {}
    details = usage_raw.get("prompt_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    cached = as_int(details.get("cached_tokens")) or as_int(
        usage_raw.get("prompt_cache_hit_tokens")
    )
    usage = Usage(
        prompt_tokens=as_int(usage_raw.get("prompt_tokens")),
        completion_tokens=as_int(usage_raw.get("completion_tokens")),
        cached_prompt_tokens=cached,
    )
    finish = choice.get("finish_reason")
    return ChatResponse(
        content=_content_text(message.get("content")),
        tool_calls=calls,
        usage=usage,
        finish_reason=str(finish) if finish else ("tool_calls" if calls else "stop"),
    )


def ollama_core(
    model: str, base_url: str | None = None, context_window: int | None = None
) -> OpenAICompatCore:
    """A core for a local Ollama server's OpenAI-compatible endpoint.

    `context_window` defaults to Ollama's own default context (see
    OLLAMA_DEFAULT_CONTEXT), not the model's nominal window.
    """
    return OpenAICompatCore(
        model,
        base_url=base_url or OLLAMA_BASE_URL,
        api_key="ollama",
        context_window=context_window or OLLAMA_DEFAULT_CONTEXT,
        name=f"ollama/{model}",
    )


def _body(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request body: the arguments, with `extra_body`'s keys merged in at the top."""
    body = {k: v for k, v in kwargs.items() if k != "extra_body"}
    body.update(kwargs.get("extra_body", {}))
    return body
