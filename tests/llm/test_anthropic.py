"""AnthropicCore through the real `anthropic` SDK against a Messages API server on loopback.

The server (`tests/fakes/anthropic_server.py`) speaks Anthropic's wire format
— JSON and server-sent events — and rejects what the real API rejects for
the mistakes an adapter can make (roles, tool-result pairing, breakpoints).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from llmos import Kernel
from llmos.llm.anthropic import AnthropicCore
from llmos.llm.core import (
    AuthenticationFailed,
    BadRequest,
    ChatRequest,
    ContextLengthExceeded,
    CoreUnavailable,
    Message,
    RateLimited,
    ToolCall,
    ToolSpec,
)
from llmos.llm.registry import make_core
from tests.fakes.anthropic_server import Fail, FakeAnthropicServer, Hang, StreamError
from tests.fakes.policies import SUMMARY, memgpt_policy

KEY = "sk-ant-test-secret-0123456789"
MODEL = "claude-fake-1"

SEND = ToolSpec(
    "send_message",
    "Send a message to the user.",
    {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
)


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.setenv("LLMOS_MODELS", str(tmp_path / "no-models.json"))


@pytest.fixture
def server() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer(memgpt_policy, api_key=KEY) as s:
        yield s


@pytest.fixture
async def core(server: FakeAnthropicServer) -> AsyncIterator[AnthropicCore]:
    c = AnthropicCore(MODEL, base_url=server.base_url, timeout=10)
    yield c
    await c.aclose()


def history() -> ChatRequest:
    """A window with a parallel call, its two results, and a trailing alert."""
    return ChatRequest(
        [
            Message("system", "BASE\n\nCORE"),
            Message("user", "hello"),
            Message(
                "assistant",
                "two things at once",
                [
                    ToolCall("call_1", "core_memory_append", '{"label": "human", "content": "x"}'),
                    ToolCall("call.2", "send_message", '{"message": "hi"}'),
                ],
            ),
            Message("tool", '{"status": "OK"}', tool_call_id="call_1", name="core_memory_append"),
            Message("tool", '{"status": "OK"}', tool_call_id="call.2", name="send_message"),
            Message("user", "and now?"),
            Message("user", "[system alert] Memory pressure: 80%"),
        ],
        tools=[SEND],
        system_parts=["BASE", "CORE"],
        volatile_messages=1,
    )


# --- request shape -----------------------------------------------------------------


def test_request_body_alternates_and_marks_three_breakpoints() -> None:
    body = AnthropicCore(MODEL).request_body(history())
    assert body["system"] == [
        {"type": "text", "text": "BASE", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "CORE", "cache_control": {"type": "ephemeral"}},
    ]
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user"]
    assistant = body["messages"][1]["content"]
    assert [b["type"] for b in assistant] == ["text", "tool_use", "tool_use"]
    assert assistant[1]["input"] == {"label": "human", "content": "x"}
    assert assistant[2]["id"] == "call_2"  # "." is not allowed in ids: made safe
    results = body["messages"][2]["content"]
    # Both results merged into one user turn, first; then the user text; the alert last.
    assert [b["type"] for b in results] == ["tool_result", "tool_result", "text", "text"]
    assert results[1]["tool_use_id"] == "call_2"
    # The message breakpoint is on the last stable block, not on the volatile alert.
    assert "cache_control" in results[2] and "cache_control" not in results[3]
    marks = json.dumps(body).count("cache_control")
    assert marks == 3
    assert body["tool_choice"] == {"type": "any"}
    assert body["tools"][0]["input_schema"]["required"] == ["message"]


def test_summary_request_without_tools_flattens_calls() -> None:
    req = history()
    req.tools = []
    req.tool_choice = "none"
    body = AnthropicCore(MODEL).request_body(req)
    text = json.dumps(body)
    assert "tool_use" not in text and "tool_result" not in text and "tool_choice" not in body


def test_cache_off_sends_no_breakpoints() -> None:
    body = AnthropicCore(MODEL, cache=False).request_body(history())
    assert "cache_control" not in json.dumps(body)


# --- over HTTP ------------------------------------------------------------------


async def test_tool_call_and_usage(core: AnthropicCore, server: FakeAnthropicServer) -> None:
    response = await core.chat(history())
    assert response.tool_calls[0].name == "send_message"
    assert json.loads(response.tool_calls[0].arguments)["message"] == "echo 8"
    assert response.finish_reason == "tool_calls"
    assert response.usage.prompt_tokens == server.usages[-1].total
    assert server.requests[-1]["temperature"] == 0.0


async def test_cached_tokens_are_cache_reads(server: FakeAnthropicServer) -> None:
    server.prompt_cache = True
    core = AnthropicCore(MODEL, base_url=server.base_url)
    req = history()
    req.messages[0] = Message("system", "B" * 6000 + "\n\nCORE")
    req.system_parts = ["B" * 6000, "CORE"]
    first = await core.chat(req)
    second = await core.chat(req)
    await core.aclose()
    u1, u2 = server.usages
    assert first.usage.cached_prompt_tokens == 0 and u1.cache_write > 1024
    assert second.usage.cached_prompt_tokens == u2.cache_read > 1024
    # prompt_tokens counts everything the prompt cost: input + writes + reads.
    assert second.usage.prompt_tokens == u2.input_tokens + u2.cache_read + u2.cache_write


async def test_stream_yields_text_deltas(core: AnthropicCore, server: FakeAnthropicServer) -> None:
    server.script({"content": "Hello there, streaming world."})
    pieces = [p async for p in core.stream(history())]
    assert len(pieces) > 2 and "".join(pieces) == "Hello there, streaming world."
    assert server.requests[-1]["stream"] is True


async def test_chat_stream_assembles_tool_calls(
    core: AnthropicCore, server: FakeAnthropicServer
) -> None:
    args = {"message": "a long enough message to be split into several json deltas"}
    server.script(
        {"content": "thinking", "tool_calls": [{"name": "send_message", "arguments": args}]}
    )
    seen: list[str] = []
    response = await core.chat_stream(history(), seen.append)
    assert "".join(seen) == "thinking" == response.content
    assert json.loads(response.tool_calls[0].arguments) == args
    assert response.finish_reason == "tool_calls"
    assert response.usage.completion_tokens > 0 and response.usage.prompt_tokens > 0


async def test_error_event_mid_stream_is_rate_limited(
    core: AnthropicCore, server: FakeAnthropicServer
) -> None:
    server.script(StreamError("overloaded_error", "Overloaded"))
    with pytest.raises(RateLimited, match="Overloaded"):
        await core.chat_stream(history())


@pytest.mark.parametrize(
    ("outcome", "kind", "text"),
    [
        (Fail(429, headers={"retry-after": "7"}), RateLimited, "rate_limit_error"),
        (Fail(529), RateLimited, "overloaded_error"),
        (
            Fail(
                400,
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": "prompt is too long: 210000 tokens > 200000 maximum",
                    },
                },
            ),
            ContextLengthExceeded,
            "prompt is too long",
        ),
        (Fail(401), AuthenticationFailed, "401"),
        (Fail(403), AuthenticationFailed, "permission_error"),
        (Fail(500), CoreUnavailable, "500"),
        (Fail(400), BadRequest, "invalid_request_error"),
    ],
)
async def test_error_mapping(
    core: AnthropicCore,
    server: FakeAnthropicServer,
    outcome: Fail,
    kind: type[Exception],
    text: str,
) -> None:
    server.script(outcome)
    with pytest.raises(kind, match=text) as info:
        await core.chat(history())
    assert KEY not in str(info.value)
    if outcome.status == 429:
        assert info.value.retry_after == 7  # type: ignore[attr-defined]


async def test_wrong_key_is_auth_failure_without_the_key(server: FakeAnthropicServer) -> None:
    core = AnthropicCore(MODEL, base_url=server.base_url, api_key="sk-ant-wrong-key-987654321")
    with pytest.raises(AuthenticationFailed) as info:
        await core.chat(history())
    await core.aclose()
    assert "sk-ant-wrong-key-987654321" not in str(info.value)
    assert info.value.__cause__ is None  # the SDK error (with request headers) is dropped


async def test_no_key_fails_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(AuthenticationFailed, match="ANTHROPIC_API_KEY"):
        await AnthropicCore(MODEL).chat(history())


async def test_timeout_and_refused_connection_are_unavailable(server: FakeAnthropicServer) -> None:
    core = AnthropicCore(MODEL, base_url=server.base_url, timeout=0.3)
    server.script(Hang(2))
    with pytest.raises(CoreUnavailable, match="no answer"):
        await core.chat(history())
    await core.aclose()
    refused = AnthropicCore(MODEL, base_url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(CoreUnavailable, match="cannot reach"):
        await refused.chat(history())
    await refused.aclose()


async def test_rejected_temperature_is_dropped_once(
    core: AnthropicCore, server: FakeAnthropicServer
) -> None:
    err = {"type": "error", "error": {"type": "invalid_request_error",
           "message": "temperature: Extra inputs are not permitted"}}  # fmt: skip
    server.script(Fail(400, err))
    response = await core.chat(history())
    assert response.tool_calls
    assert "temperature" in server.requests[0] and "temperature" not in server.requests[1]


async def test_probe_learns_window_and_structured_outputs(server: FakeAnthropicServer) -> None:
    server.context_window = 150_000
    core = AnthropicCore(MODEL, base_url=server.base_url)
    assert await core.probe() == 150_000
    assert core.info.json_schema and core.info.source == "provider"
    given = AnthropicCore(MODEL, base_url=server.base_url, context_window=50_000)
    assert await given.probe() == 50_000
    await core.aclose()
    await given.aclose()


def test_registry_makes_anthropic_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:1")
    core = make_core("anthropic/claude-sonnet-4-5")
    assert isinstance(core, AnthropicCore)
    assert core.context_window == 200_000 and core.native_tools


# --- through the kernel ------------------------------------------------------------


async def test_memgpt_conversation_on_anthropic(
    kernel: Kernel, server: FakeAnthropicServer
) -> None:
    """Memory edits, archival insert and search, and a flush, all over the Messages API."""
    await kernel.create_agent(
        "claude",
        model=f"anthropic/{MODEL}",
        base_url=server.base_url,
        context_window=4096,
        embedder="test/hash",
    )
    turn = await kernel.send("claude", "Please remember that my sister is called Ada.")
    assert [c.name for c in turn.function_calls] == ["core_memory_append", "send_message"]
    assert "Ada" in kernel.get_agent("claude")["blocks"][1]["value"]

    turn = await kernel.send("claude", "archive: The lighthouse on Vlieland is painted red.")
    assert turn.function_calls[0].name == "archival_memory_insert" and turn.function_calls[0].ok
    turn = await kernel.send("claude", "search archive for lighthouse")
    assert "painted red" in turn.reply

    flushes = 0
    for i in range(24):
        turn = await kernel.send("claude", f"Turn {i}: " + "a long sentence about rivers. " * 18)
        assert turn.stop_reason == "end_turn", turn.error
        flushes += turn.flushes
    assert flushes >= 1
    assert SUMMARY in kernel.get_agent("claude")["summary"]
    turn = await kernel.send("claude", "What is my sister called?")
    assert turn.reply == "Your sister is called Ada."
    usage = kernel.get_agent("claude")["usage"]
    assert usage["requests"] == len(server.requests) and usage["prompt_tokens"] > 0


async def test_429_then_success_through_the_kernel(
    kernel: Kernel, server: FakeAnthropicServer
) -> None:
    await kernel.create_agent(
        "claude", model=f"anthropic/{MODEL}", base_url=server.base_url, embedder="test/hash"
    )
    server.script(Fail(429, headers={"retry-after": "0.3"}), Fail(529))
    kernel.queue(kernel.core(f"anthropic/{MODEL}", server.base_url)).max_backoff = 0.3
    t0 = time.monotonic()
    turn = await kernel.send("claude", "hi")
    assert turn.stop_reason == "end_turn" and turn.reply == "echo 2"
    assert time.monotonic() - t0 >= 0.25
    stats = kernel.kernel_stats()["cores"][0]
    assert stats["retried"] == 2
