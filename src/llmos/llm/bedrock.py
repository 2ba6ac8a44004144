"""`BedrockCore`: the core for models on Amazon Bedrock, through the Converse API and `boto3`.

`bedrock/MODEL_ID` makes one: a foundation model id
(`anthropic.claude-3-5-haiku-20241022-v1:0`), an inference profile id
(`us.anthropic.claude-sonnet-4-5-20250929-v1:0`) or an ARN. It:

* sends a `ChatRequest` as a Converse request: system blocks, `toolConfig`
  with native tools (`required` -> `toolChoice: any`), earlier calls and
  results as `toolUse` / `toolResult` blocks in alternating turns
  (`llm/caching.py`), `inferenceConfig` for length and temperature;
* places `cachePoint` blocks at the window's stable boundaries — after the
  base prompt, after core memory and summary, and after the newest message
  that is not a volatile alert — for models that offer prompt caching
  (`llm/models.py`); usage reports `prompt_tokens` = input + cache reads +
  cache writes and `cached_prompt_tokens` = cache reads;
* streams with ConverseStream: `stream(request)` yields text deltas and
  `chat_stream(request, on_text)` returns the whole response; `chat()` is
  one Converse call;
* for models without tool use in Converse, renders the tools into the system
  prompt and parses the JSON answer (`llm/toolcalls.py`), as `openai_compat`
  does; a model that rejects `toolChoice` or `cachePoint` makes the core stop
  sending it (learnt once from the ValidationException, then remembered);
* maps errors onto the kernel's kinds: ThrottlingException and quota errors
  -> `RateLimited`; a ValidationException about input length ->
  `ContextLengthExceeded`; AccessDeniedException and credential errors ->
  `AuthenticationFailed`, naming the model and region and never a secret;
  ModelNotReady, ServiceUnavailable, InternalServer, model timeouts and
  network timeouts -> `CoreUnavailable`; the rest -> `BadRequest`
  (`llm/aws.py`, on `llm/remote.py`'s mapping shared with the other network
  cores).

Credentials and region come from the standard AWS chain (environment,
profiles, SSO, instance roles); `AWS_REGION` is honoured as well as
`AWS_DEFAULT_REGION`, and `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` (or
`endpoint_url`) points the client at another endpoint. boto3 is synchronous,
so every call runs on this core's own thread pool of `capacity` threads, and
botocore's retries are off: the kernel's run queue does the backoff.

Left out: Guardrails, images and documents, reasoning blocks, the
InvokeModel API for chat, and asking Bedrock for the context window (it has
no API for it; `llm/models.py` keeps a table and user overrides).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llmos.llm.aws import aws_secrets, bedrock_client, map_aws_error
from llmos.llm.caching import Block, mark_last_stable, system_blocks, to_turns
from llmos.llm.core import (
    BadRequest,
    ChatRequest,
    ChatResponse,
    CoreError,
    CoreUnavailable,
    Delta,
    Message,
    ToolCall,
    ToolSpec,
    Usage,
)
from llmos.llm.models import lookup
from llmos.llm.remote import RemoteCore, as_int
from llmos.llm.replycap import ReplyBudget

# bedrock_client and map_aws_error stay importable from here for the Bedrock
# embedder, which imported them before they moved to llm/aws.py.
__all__ = ["BedrockCore", "bedrock_client", "map_aws_error"]

CACHE_POINT = {"cachePoint": {"type": "default"}}
_TOOL_CHOICE = {"required": {"any": {}}, "auto": {"auto": {}}}
_FINISH = {
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "end_turn": "stop",
    "stop_sequence": "stop",
}
_SENTINEL = object()


class BedrockCore(RemoteCore):
    """A `Core` on Bedrock's Converse API."""

    def __init__(
        self,
        model_id: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        profile: str | None = None,
        context_window: int | None = None,
        capacity: int = 8,
        timeout: float = 120.0,
        name: str | None = None,
        cache: bool | None = None,
        client: Any = None,
    ) -> None:
        name = name or f"bedrock/{model_id}"
        self.info = lookup(name)
        super().__init__(
            name,
            context_window=context_window,
            default_window=self.info.context_window,
            capacity=capacity,
            timeout=timeout,
        )
        self.model_id = model_id
        self.region = region
        self.endpoint_url = endpoint_url
        self.profile = profile
        self.native_tools = self.info.native_tools
        #: place cachePoint blocks (None: where the model offers caching).
        self.cache = self.info.caching if cache is None else cache
        self._client = client  # a ready client (tests pass one with a Stubber)
        self._client_lock = threading.Lock()
        self._send_tool_choice = True
        self._pool = ThreadPoolExecutor(max_workers=capacity, thread_name_prefix="llmos-bedrock")

    # --- client ------------------------------------------------------------------

    def _get_client(self) -> Any:
        """The boto3 client, made on first use (runs on a pool thread)."""
        with self._client_lock:
            if self._client is None:
                self._client = bedrock_client(
                    self.region,
                    endpoint_url=self.endpoint_url,
                    profile=self.profile,
                    timeout=self.timeout,
                    pool=self.capacity,
                )
            return self._client

    def _region_name(self) -> str | None:
        client = self._client
        if client is not None:
            return str(client.meta.region_name)
        return self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    def _call(self, operation: str, kwargs: dict[str, Any]) -> Any:
        """One API call on a pool thread; botocore errors become CoreErrors."""
        try:
            client = self._get_client()
            return getattr(client, operation)(**kwargs)
        except Exception as exc:
            raise self._map(exc) from None  # botocore errors carry the signed request

    def _map(self, exc: BaseException) -> CoreError:
        if isinstance(exc, CoreError):
            return exc
        return map_aws_error(exc, self.name, self.model_id, self._region_name())

    def _secrets(self) -> list[str | None]:
        return list(aws_secrets())

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()

    # --- requests ----------------------------------------------------------------

    def request_kwargs(self, request: ChatRequest) -> dict[str, Any]:
        """The Converse arguments for `request` (public for tests and benchmarks)."""
        use_tools = bool(request.tools) and request.tool_choice != "none"
        emulate = use_tools and not self.native_tools
        messages: Sequence[Message] = request.messages
        has_tool_blocks = any(m.tool_calls or m.role == "tool" for m in messages)
        if emulate or (has_tool_blocks and not use_tools):
            # Without a toolConfig Converse rejects toolUse/toolResult blocks.
            from llmos.llm.toolcalls import flatten_messages

            messages = flatten_messages(messages)
        turns = to_turns(messages, request.volatile_messages)
        system = system_blocks(request)
        if emulate:
            from llmos.llm.toolcalls import render_tools_prompt

            system.append((render_tools_prompt(request.tools), False))
        if self.cache:
            mark_last_stable(turns)
        else:
            system = [(text, False) for text, _ in system]

        kwargs: dict[str, Any] = {
            "modelId": self.model_id,
            "messages": [
                {"role": t.role, "content": [x for b in t.blocks for x in _render(b)]}
                for t in turns
            ],
            "inferenceConfig": {
                "maxTokens": request.max_tokens,
                "temperature": min(1.0, max(0.0, request.temperature)),
            },
        }
        if system:
            kwargs["system"] = [
                x for text, bp in system for x in ([{"text": text}] + ([CACHE_POINT] if bp else []))
            ]
        if use_tools and not emulate:
            config: dict[str, Any] = {"tools": [_tool(t) for t in request.tools]}
            if self._send_tool_choice:
                config["toolChoice"] = _TOOL_CHOICE[request.tool_choice]
            kwargs["toolConfig"] = config
        return kwargs

    def _degrade(self, error: BadRequest, sent: dict[str, Any]) -> bool:
        """Stop sending cachePoints, toolChoice or native tools if the model rejected them.

        Each step is learnt from one ValidationException and then remembered.
        """
        text = str(error).lower()
        sent_cache = self.cache and _has_cache_points(sent)
        if sent_cache and ("cachepoint" in text or "caching" in text or "cache point" in text):
            self.cache = False
            return True
        config = sent.get("toolConfig") or {}
        if "toolChoice" in config and ("toolchoice" in text or "tool_choice" in text):
            self._send_tool_choice = False
            return True
        if config and self.native_tools and "tool use" in text and "support" in text:
            self.native_tools = False  # e.g. "This model doesn't support tool use."
            return True
        return False

    async def _converse(self, operation: str, request: ChatRequest) -> tuple[dict[str, Any], Any]:
        """`operation` on a pool thread; what was sent (after any degrading) and the answer."""
        return await self._send(
            lambda: self.request_kwargs(request),
            lambda kwargs: self._run(self._call, operation, kwargs),
        )

    async def chat(self, request: ChatRequest) -> ChatResponse:
        if request.on_delta is not None:  # the caller wants the pieces as they come
            return await self.chat_stream(request)
        kwargs, data = await self._converse("converse", request)
        return self._finish(request, kwargs, _parse_converse(data, self.name))

    def _finish(
        self, request: ChatRequest, kwargs: dict[str, Any], response: ChatResponse
    ) -> ChatResponse:
        if request.tools and request.tool_choice != "none" and "toolConfig" not in kwargs:
            from llmos.llm.toolcalls import as_tool_call

            response = as_tool_call(response, request.tools)  # tools were emulated
        self._calibrate(request.messages, request.tools, response.usage)
        return response

    # --- streaming ---------------------------------------------------------------

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
        """Stream the answer with ConverseStream, calling `on_text` per text delta
        (and the request's `on_delta` with every piece, tool input too)."""
        acc = _StreamState(request.on_delta)
        kwargs: dict[str, Any] = {}
        async for event in self._events(request, kwargs):
            text = acc.feed(event)
            if text and on_text is not None:
                on_text(text)
        return self._finish(request, kwargs, acc.response(self.name))

    async def _events(
        self, request: ChatRequest, sent: dict[str, Any] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """ConverseStream events as dicts, read on a pool thread and handed over a queue."""
        kwargs, response = await self._converse("converse_stream", request)
        if sent is not None:
            sent.update(kwargs)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        stream = response["stream"]

        def pump() -> None:
            try:
                for event in stream:
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except Exception as exc:
                loop.call_soon_threadsafe(queue.put_nowait, self._map(exc))
            finally:
                stream.close()
                loop.call_soon_threadsafe(queue.put_nowait, _SENTINEL)

        loop.run_in_executor(self._pool, pump)
        budget = ReplyBudget(self.name)  # a streamed reply is capped like a whole one
        try:
            while True:
                item = await queue.get()
                if item is _SENTINEL:
                    break
                if isinstance(item, CoreError):
                    raise item
                delta = (item.get("contentBlockDelta") or {}).get("delta") or {}
                budget.add(delta.get("text") or (delta.get("toolUse") or {}).get("input"))
                yield item
        finally:
            stop.set()  # a consumer that stops early ends the read at the next event


# --- helpers -----------------------------------------------------------------------


def _tool(spec: ToolSpec) -> dict[str, Any]:
    return {
        "toolSpec": {
            "name": spec.name,
            "description": spec.description or spec.name,  # must be non-empty
            "inputSchema": {"json": spec.parameters},
        }
    }


def _render(block: Block) -> list[dict[str, Any]]:
    if block.kind == "tool_use":
        out: dict[str, Any] = {
            "toolUse": {"toolUseId": block.id, "name": block.name, "input": block.input}
        }
    elif block.kind == "tool_result":
        out = {"toolResult": {"toolUseId": block.id, "content": [{"text": block.text}]}}
    else:
        out = {"text": block.text}
    return [out, CACHE_POINT] if block.cache_after else [out]


def _has_cache_points(kwargs: Mapping[str, Any]) -> bool:
    blocks = list(kwargs.get("system") or [])
    for m in kwargs.get("messages") or []:
        blocks.extend(m.get("content") or [])
    return any("cachePoint" in b for b in blocks)


def _usage(raw: Any) -> Usage:
    u = raw if isinstance(raw, Mapping) else {}
    read = as_int(u.get("cacheReadInputTokens"))
    written = as_int(u.get("cacheWriteInputTokens"))
    return Usage(
        prompt_tokens=as_int(u.get("inputTokens")) + read + written,
        completion_tokens=as_int(u.get("outputTokens")),
        cached_prompt_tokens=read,
    )


def _parse_converse(data: Any, name: str) -> ChatResponse:
    if not isinstance(data, Mapping):
        raise CoreUnavailable(f"{name}: malformed response: not an object")
    output = data.get("output")
    message = output.get("message") if isinstance(output, Mapping) else None
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(content, list):
        raise CoreUnavailable(f"{name}: malformed response: no output message")
    return _response(content, str(data.get("stopReason") or ""), data.get("usage"), name)


def _response(content: list[Any], stop: str, usage: Any, name: str) -> ChatResponse:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in content:
        if not isinstance(block, Mapping):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), Mapping):
            use = block["toolUse"]
            args = use.get("_arguments")
            if not isinstance(args, str):
                args = json.dumps(use.get("input") or {}, ensure_ascii=False)
            calls.append(
                ToolCall(
                    id=str(use.get("toolUseId") or f"tooluse_{len(calls)}"),
                    name=str(use.get("name") or ""),
                    arguments=args,
                )
            )
    return ChatResponse(
        content="".join(texts) or None,
        tool_calls=calls,
        usage=_usage(usage),
        finish_reason=_FINISH.get(stop, stop or ("tool_calls" if calls else "stop")),
    )


class _StreamState:
    """Builds a `ChatResponse` from ConverseStream events."""

    def __init__(self, on_delta: Callable[[Delta], None] | None = None) -> None:
        self.on_delta = on_delta
        self.blocks: dict[int, dict[str, Any]] = {}
        self.stop = ""
        self.usage: Any = None
        self.done = False

    def feed(self, event: Mapping[str, Any]) -> str | None:
        if "contentBlockStart" in event:
            ev = event["contentBlockStart"]
            start = ev.get("start") or {}
            if "toolUse" in start:
                use = dict(start["toolUse"])
                use["_arguments"] = ""
                self.blocks[int(ev.get("contentBlockIndex", 0))] = {"toolUse": use}
        elif "contentBlockDelta" in event:
            ev = event["contentBlockDelta"]
            index = int(ev.get("contentBlockIndex", 0))
            delta = ev.get("delta") or {}
            if "text" in delta:
                block = self.blocks.setdefault(index, {"text": ""})
                piece = str(delta["text"])
                block["text"] = str(block.get("text", "")) + piece
                if piece and self.on_delta is not None:
                    self.on_delta(Delta(piece))
                return piece or None
            if "toolUse" in delta:
                block = self.blocks.setdefault(index, {"toolUse": {"_arguments": ""}})
                use = block["toolUse"]
                piece = str(delta["toolUse"].get("input", ""))
                use["_arguments"] = use.get("_arguments", "") + piece
                if piece and self.on_delta is not None:
                    calls = [i for i in sorted(self.blocks) if "toolUse" in self.blocks[i]]
                    number = calls.index(index)
                    self.on_delta(Delta(piece, call=number, name=use.get("name")))
        elif "messageStop" in event:
            self.stop = str(event["messageStop"].get("stopReason") or "")
            self.done = True
        elif "metadata" in event:
            self.usage = event["metadata"].get("usage")
        return None

    def response(self, name: str) -> ChatResponse:
        if not self.done:
            raise CoreUnavailable(f"{name}: the stream ended before messageStop")
        content = [self.blocks[i] for i in sorted(self.blocks)]
        for block in content:
            use = block.get("toolUse")
            if isinstance(use, dict) and not use.get("_arguments"):
                use["_arguments"] = "{}"  # a call without arguments streams no delta
        return _response(content, self.stop, self.usage, name)
