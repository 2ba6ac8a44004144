"""Scripted cores: the kernel's mock transport, for tests and benchmarks.

A `ScriptedCore` answers every request by calling a *policy* — a plain Python
function of the `ChatRequest` — so a test can play a deterministic agent that
reads its prompt (core memory, search results) and calls functions, with no
model in the loop. It counts tokens with a fixed 4-characters-per-token rule,
so token accounting in tests is exact and repeatable.

Left out: recording a real core's traffic for replay (not needed yet).
"""

from __future__ import annotations

import inspect
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from llmos.llm.core import ChatRequest, ChatResponse, ToolCall, Usage, tools_json

Policy = Callable[[ChatRequest], ChatResponse | Awaitable[ChatResponse]]
_ids = itertools.count(1)


def call(name: str, thought: str | None = None, **arguments: Any) -> ChatResponse:
    """A response calling one function, e.g. `call("send_message", message="hi")`;
    `thought` is the inner monologue that comes with it."""
    return ChatResponse(
        content=thought,
        tool_calls=[ToolCall(f"call_{next(_ids)}", name, json.dumps(arguments))],
        finish_reason="tool_calls",
    )


def raw_call(name: str, arguments: str, thought: str | None = None) -> ChatResponse:
    """A response whose arguments are given verbatim (for malformed-output tests)."""
    return ChatResponse(
        content=thought,
        tool_calls=[ToolCall(f"call_{next(_ids)}", name, arguments)],
        finish_reason="tool_calls",
    )


def say(text: str) -> ChatResponse:
    return ChatResponse(content=text)


class ScriptedCore:
    """A Core whose answers come from a policy function."""

    native_tools = True

    def __init__(
        self,
        policy: Policy,
        *,
        context_window: int = 8192,
        name: str = "scripted/policy",
        capacity: int = 1,
    ) -> None:
        self.policy = policy
        self.context_window = context_window
        self.name = name
        self.capacity = capacity
        self.requests: list[ChatRequest] = []

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1 if text else 0

    def prompt_tokens(self, request: ChatRequest) -> int:
        from llmos.llm.tokens import MESSAGE_OVERHEAD_TOKENS

        total = sum(
            self.count_tokens(m.text_for_count()) + MESSAGE_OVERHEAD_TOKENS
            for m in request.messages
        )
        if request.tools:
            total += self.count_tokens(tools_json(request.tools))
        return total

    async def chat(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        result = self.policy(request)
        if inspect.isawaitable(result):
            result = await result
        if not result.usage.prompt_tokens:
            out = self.count_tokens(result.content or "") + sum(
                self.count_tokens(c.arguments) for c in result.tool_calls
            )
            result.usage = Usage(self.prompt_tokens(request), out)
        return result

    async def aclose(self) -> None:
        return None
