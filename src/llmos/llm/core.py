"""The Core protocol: what the kernel needs from an LLM, and nothing more.

A core is one LLM endpoint or local model — the CPU of llmos. The kernel hands
it a `ChatRequest` (OpenAI-shaped messages plus tool schemas) and gets back a
`ChatResponse` (text and/or tool calls, usage, finish reason). Every provider
adapter (`openai_compat`, `llamacpp`, `replay`, …) implements this protocol and
maps its failures onto the error kinds below, so the kernel can react the same
way whatever the backend: back off on `RateLimited`, flush memory and retry on
`ContextLengthExceeded`, report `CoreUnavailable` and `AuthenticationFailed`.
Every kind is an `llmos.errors.BackendError`; `CoreUnavailable` and
`RateLimited` are its `unavailable` ones (retrying later may succeed).

Streaming: a request with `on_delta` set asks the core to report the
response as it is generated, one `Delta` at a time (text, or a piece of a tool
call's arguments), called in the event loop's thread; `chat` still returns the
whole response. Cores that cannot stream ignore it. `openai_compat`,
`anthropic`, `bedrock` and `llamacpp` stream (the embedded model also across
preemptions: each generated piece is reported once). `anthropic` and
`bedrock` also have `stream(request)`, an async iterator of text deltas, and
`chat_stream(request, on_text)`.

Left out: provider-specific options, which belong to each adapter's constructor.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from llmos.errors import BackendError

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(slots=True)
class ToolCall:
    """One function call the model asked for. `arguments` is the raw JSON text,
    exactly as the model produced it: parsing (and failing) is the executor's job."""

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(slots=True)
class Message:
    """One chat message in OpenAI's shape (the lingua franca of the adapters)."""

    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # set on role="tool"
    name: str | None = None  # function name on role="tool"

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        if self.role == "tool":
            out["tool_call_id"] = self.tool_call_id
        return out

    def text_for_count(self) -> str:
        """Everything in this message that costs prompt tokens, as one string."""
        parts = [self.content or ""]
        for c in self.tool_calls:
            parts.append(c.name)
            parts.append(c.arguments)
        return "\n".join(parts)


@dataclass(slots=True, frozen=True)
class ToolSpec:
    """A function the model may call: name, description, JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


# id(spec) -> (spec, characters of its JSON): built-in specs are module
# constants, so every request of every agent would re-serialise the same ones.
# Holding the spec keeps its id from being reused while cached.
_SPEC_CHARS: dict[int, tuple[ToolSpec, int]] = {}


def tools_json(tools: Sequence[ToolSpec]) -> str:
    """The tools as compact JSON: what token estimates count for native tool calling
    (providers render tools more tersely still; spaced JSON overcounted by a fifth)."""
    return json.dumps([t.to_openai() for t in tools], separators=(",", ":"), ensure_ascii=False)


def tool_spec_chars(tools: Sequence[ToolSpec]) -> int:
    """Characters of the tools' compact JSON (for calibrating token estimates)."""
    total = 0
    for spec in tools:
        hit = _SPEC_CHARS.get(id(spec))
        if hit is None or hit[0] is not spec:
            if len(_SPEC_CHARS) >= 4096:
                _SPEC_CHARS.clear()
            hit = _SPEC_CHARS[id(spec)] = (spec, len(tools_json([spec])) - 2)
        total += hit[1]
    return total


@dataclass(slots=True, frozen=True)
class Delta:
    """A piece of a response as it is generated (see `ChatRequest.on_delta`).

    `call` None: the response's text. Otherwise a piece of the arguments JSON
    of tool call number `call`, whose function is `name` once known; with
    `raw_call` the text is instead the whole call as JSON,
    `{"function": name, "arguments": {...}}` (cores that emulate tools and
    stream the model's own output, e.g. llama.cpp)."""

    text: str
    call: int | None = None
    name: str | None = None
    raw_call: bool = False


@dataclass(slots=True)
class ChatRequest:
    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    max_tokens: int = 512
    temperature: float = 0.0
    # "required": the model must call a function (MemGPT agents always do);
    # "none": plain text (used for summaries).
    tool_choice: Literal["required", "auto", "none"] = "required"
    # A stable key per agent lets providers with automatic prefix caching
    # route this agent's requests to the same cache.
    cache_key: str | None = None
    # The system message's content split at its stable boundaries (base prompt,
    # core memory, summary); "\n\n".join(system_parts) == messages[0].content.
    # Providers with explicit cache breakpoints place them between the parts.
    system_parts: list[str] = field(default_factory=list)
    # How many trailing messages change every step (memory-pressure alerts):
    # providers with explicit cache breakpoints place none on or after them.
    volatile_messages: int = 0
    # For base models (no chat template): the whole prompt as plain text to
    # continue. A core that completes raw text uses it instead of rendering
    # `messages` (which still hold the same conversation, for cores that cannot).
    prompt: str | None = None
    # Strings that end plain-text output; the output stops before the first.
    stop: list[str] = field(default_factory=list)
    # A GBNF grammar plain-text output must match (cores that constrain
    # decoding, llama.cpp, honour it; others ignore it).
    grammar: str | None = None
    # Set: stream. Cores that can call it with each piece of the response as
    # it is generated, in the event loop's thread (cheap: it must not block).
    on_delta: Callable[[Delta], None] | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0

    def __iadd__(self, other: Usage) -> Usage:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_prompt_tokens += other.cached_prompt_tokens
        return self

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
        }


@dataclass(slots=True)
class ChatResponse:
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"


# --- error kinds -------------------------------------------------------------


class CoreError(BackendError):
    """A core failed to answer. Subclasses say how the kernel should react."""

    backend = "model backend"


class ContextLengthExceeded(CoreError):
    """The prompt did not fit the backend's window: flush memory and retry once."""


class RateLimited(CoreError):
    """429 or a throttling answer: retry after `retry_after` seconds (None: back off)."""

    unavailable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CoreUnavailable(CoreError):
    """5xx, timeout, refused connection, missing model file: retry later or report."""

    unavailable = True


class AuthenticationFailed(CoreError):
    """Wrong or missing credentials: never retried."""


class BadRequest(CoreError):
    """The backend rejected the request for a reason other than its length."""


# --- the protocol ------------------------------------------------------------


@runtime_checkable
class Core(Protocol):
    """An LLM the kernel can schedule requests on."""

    #: "provider/model" string this core was made from, e.g. "openai/gpt-4o-mini".
    name: str
    #: tokens the backend accepts (prompt + completion).
    context_window: int
    #: True when the backend takes `tools` natively; else llmos renders the tools
    #: into the prompt and constrains the output (see `llm/toolcalls.py`).
    native_tools: bool
    #: concurrent requests the backend serves well (1 for an embedded model).
    capacity: int

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Run one completion. Raises a `CoreError` subclass on failure."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` costs on this core (exact, or a calibrated estimate)."""
        ...

    async def aclose(self) -> None:
        """Release sockets, model memory, threads."""
        ...


class Generation(Protocol):
    """One request on a core that can pause: run in slices, set aside, resumed.

    The run queue calls `run(n)` for a quantum of generated tokens; between
    slices it may `suspend()` the generation (save what it needs — for llama.cpp,
    the sequence's KV cache and sampler state — so another generation can use
    the core) and later `resume()` it. Resuming continues exactly where it left
    off: at temperature 0 the tokens are those of an uninterrupted run.
    """

    async def run(self, max_new_tokens: int) -> bool:
        """Generate up to `max_new_tokens` more tokens; True once finished."""
        ...

    async def suspend(self) -> None: ...

    async def resume(self) -> None: ...

    def result(self) -> ChatResponse:
        """The finished response (only after `run` returned True)."""
        ...

    async def close(self) -> None:
        """Abandon the generation (cancellation) and free what it holds."""
        ...


@runtime_checkable
class PreemptibleCore(Core, Protocol):
    """A core whose generations can be preempted (the embedded model)."""

    def start(self, request: ChatRequest) -> Generation: ...
