"""OpenAICompatCore against a real HTTP server on loopback, with the real `openai` client."""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

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
from llmos.llm.models import DEFAULT_CONTEXT_WINDOW, known_context_window
from llmos.llm.openai_compat import OpenAICompatCore, _window_from_models, ollama_core
from llmos.llm.remote import retry_after_seconds
from tests.fakes.openai_server import Fail, FakeOpenAIServer, Hang

KEY = "sk-test-secret-0123456789abcdef"

SEND = ToolSpec(
    name="send_message",
    description="Send a message to the user.",
    parameters={
        "type": "object",
        "properties": {"message": {"type": "string"}},
        "required": ["message"],
    },
)
SEARCH = ToolSpec(
    name="archival_memory_search",
    description="Search archival memory.",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string"}, "page": {"type": "integer"}},
        "required": ["query"],
    },
)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
async def core(server: FakeOpenAIServer) -> AsyncIterator[OpenAICompatCore]:
    c = OpenAICompatCore("fake-model", base_url=server.base_url, api_key=KEY, timeout=10)
    yield c
    await c.aclose()


def ask(text: str = "hi", **kw: Any) -> ChatRequest:
    return ChatRequest(messages=[Message("system", "You are a test."), Message("user", text)], **kw)


# --- happy paths ---------------------------------------------------------------------


async def test_native_tool_call_round_trip(server: FakeOpenAIServer, core: OpenAICompatCore):
    def policy(req: dict[str, Any]) -> dict[str, Any]:
        if req["messages"][-1]["role"] == "tool":
            return {"tool_calls": [{"name": "send_message", "arguments": {"message": "done"}}]}
        return {"tool_calls": [{"name": "archival_memory_search", "arguments": {"query": "cats"}}]}

    server.policy = policy
    tools = [SEND, SEARCH]
    first = await core.chat(ask("find cats", tools=tools))
    assert first.finish_reason == "tool_calls"
    assert len(first.tool_calls) == 1
    call = first.tool_calls[0]
    assert call.name == "archival_memory_search"
    assert json.loads(call.arguments) == {"query": "cats"}
    assert call.id

    sent = server.requests[0]
    assert sent["model"] == "fake-model"
    assert sent["tool_choice"] == "required"
    assert [t["function"]["name"] for t in sent["tools"]] == [
        "send_message",
        "archival_memory_search",
    ]
    assert sent["max_tokens"] == 512 and sent["temperature"] == 0.0

    history = [
        *ask("find cats").messages,
        Message("assistant", None, tool_calls=[call]),
        Message("tool", '{"results": []}', tool_call_id=call.id, name=call.name),
    ]
    second = await core.chat(ChatRequest(messages=history, tools=tools))
    assert second.tool_calls[0].name == "send_message"
    assert json.loads(second.tool_calls[0].arguments) == {"message": "done"}
    replayed = server.requests[1]["messages"]
    assert replayed[2]["tool_calls"][0]["id"] == call.id
    assert replayed[3] == {"role": "tool", "content": '{"results": []}', "tool_call_id": call.id}


async def test_plain_content_and_request_fields(server: FakeOpenAIServer, core: OpenAICompatCore):
    server.policy = lambda req: {"content": "Hello there."}
    resp = await core.chat(
        ask(tools=[SEND], tool_choice="none", max_tokens=77, temperature=0.5, cache_key="agent-7")
    )
    assert resp.content == "Hello there."
    assert resp.tool_calls == []
    assert resp.finish_reason == "stop"
    assert resp.usage.prompt_tokens == server.prompt_tokens(server.requests[0])
    assert resp.usage.completion_tokens > 0
    sent = server.requests[0]
    assert "tools" not in sent and "tool_choice" not in sent  # "none" omits the tools
    assert sent["max_tokens"] == 77 and sent["temperature"] == 0.5
    assert sent["prompt_cache_key"] == "agent-7"

    await core.chat(ask(tool_choice="auto", tools=[SEND]))
    assert "prompt_cache_key" not in server.requests[1]
    assert server.requests[1]["tool_choice"] == "auto"


async def test_stop_strings_are_sent_with_plain_text_requests(
    server: FakeOpenAIServer, core: OpenAICompatCore
):
    server.policy = lambda req: {"content": "Paris."}
    request = ask(tool_choice="none")
    request.stop = ["\n", "User:"]
    assert (await core.chat(request)).content == "Paris."
    assert server.requests[0]["stop"] == ["\n", "User:"]


async def test_cached_tokens_reported():
    with FakeOpenAIServer(prompt_cache=True) as srv:
        core = OpenAICompatCore("fake-model", srv.base_url, KEY)
        try:
            system = Message("system", "You are a careful agent. " * 400)  # ~2,500 tokens
            msgs = [system, Message("user", "first question")]
            first = await core.chat(ChatRequest(messages=msgs, tool_choice="none"))
            assert first.usage.cached_prompt_tokens == 0
            msgs += [Message("assistant", "first answer"), Message("user", "second question")]
            second = await core.chat(ChatRequest(messages=msgs, tool_choice="none"))
            cached = second.usage.cached_prompt_tokens
            assert cached >= 1024 and cached % 128 == 0
            assert cached <= second.usage.prompt_tokens
            # A short prompt is never cached, even when repeated.
            for _ in range(2):
                short = await core.chat(ask("tiny", tool_choice="none"))
            assert short.usage.cached_prompt_tokens == 0
        finally:
            await core.aclose()


async def test_emulated_tools_produce_a_valid_call():
    def policy(req: dict[str, Any]) -> dict[str, Any]:
        assert "tools" not in req and "tool_choice" not in req
        fmt = req["response_format"]
        assert fmt["type"] == "json_schema"
        assert "anyOf" in fmt["json_schema"]["schema"]  # one variant per function
        system = req["messages"][0]
        assert system["role"] == "system" and "send_message" in system["content"]
        assert all(m["role"] != "tool" for m in req["messages"])
        return {"content": '{"function": "send_message", "arguments": {"message": "hi!"}}'}

    with FakeOpenAIServer(policy) as srv:
        core = OpenAICompatCore("fake-model", srv.base_url, KEY, native_tools=False)
        try:
            earlier = ToolCall(
                id="call_1", name="archival_memory_search", arguments='{"query":"x"}'
            )
            history = [
                *ask("hello").messages,
                Message("assistant", None, tool_calls=[earlier]),
                Message("tool", "[]", tool_call_id="call_1", name=earlier.name),
            ]
            resp = await core.chat(ChatRequest(messages=history, tools=[SEND, SEARCH]))
        finally:
            await core.aclose()
    assert resp.content is None
    assert resp.finish_reason == "tool_calls"
    assert len(resp.tool_calls) == 1
    assert resp.tool_calls[0].name == "send_message"
    assert json.loads(resp.tool_calls[0].arguments) == {"message": "hi!"}


async def test_emulated_tools_bad_text_becomes_a_failed_call():
    with FakeOpenAIServer(lambda req: {"content": "I cannot do that"}) as srv:
        core = OpenAICompatCore("fake-model", srv.base_url, KEY, native_tools=False)
        try:
            resp = await core.chat(ask(tools=[SEND]))
        finally:
            await core.aclose()
    assert resp.tool_calls[0].name == ""
    assert resp.tool_calls[0].arguments == "I cannot do that"


async def test_emulated_tools_fall_back_when_json_schema_rejected():
    unsupported = Fail(
        400,
        {
            "error": {
                "message": "response_format json_schema not supported",
                "type": "invalid_request_error",
            }
        },
    )
    with FakeOpenAIServer(
        lambda req: {"content": '{"function": "send_message", "arguments": {"message": "x"}}'}
    ) as srv:
        srv.script(unsupported)
        core = OpenAICompatCore("fake-model", srv.base_url, KEY, native_tools=False)
        try:
            resp = await core.chat(ask(tools=[SEND]))
        finally:
            await core.aclose()
    assert resp.tool_calls[0].name == "send_message"
    assert srv.requests[0]["response_format"]["type"] == "json_schema"
    assert srv.requests[1]["response_format"] == {"type": "json_object"}


async def test_rejected_prompt_cache_key_is_dropped(server: FakeOpenAIServer, core):
    server.script(
        Fail(
            400, {"error": {"message": "Unrecognized request argument supplied: prompt_cache_key"}}
        )
    )
    resp = await core.chat(ask(tool_choice="none", cache_key="a"))
    assert resp.content == "ok"
    assert "prompt_cache_key" in server.requests[0]
    assert "prompt_cache_key" not in server.requests[1]
    await core.chat(ask(tool_choice="none", cache_key="a"))
    assert "prompt_cache_key" not in server.requests[2]  # remembered


# --- errors --------------------------------------------------------------------------


async def test_context_length_exceeded():
    with FakeOpenAIServer(context_window=50) as srv:
        core = OpenAICompatCore("fake-model", srv.base_url, KEY)
        try:
            with pytest.raises(ContextLengthExceeded, match="maximum context length"):
                await core.chat(ask("word " * 200))
        finally:
            await core.aclose()


@pytest.mark.parametrize(
    "message",
    [
        "the request exceeds the available context size, try increasing it",  # llama.cpp
        "prompt is too long: 210000 tokens > 200000 maximum",  # Anthropic gateways
        "Input is too long for requested model.",  # Bedrock
    ],
)
async def test_context_length_phrasings(server: FakeOpenAIServer, core, message: str):
    server.script(Fail(400, {"error": {"message": message, "type": "invalid_request_error"}}))
    with pytest.raises(ContextLengthExceeded):
        await core.chat(ask())


async def test_rate_limited_then_success(server: FakeOpenAIServer, core: OpenAICompatCore):
    server.script(Fail(429, None, {"Retry-After": "2"}))
    with pytest.raises(RateLimited) as info:
        await core.chat(ask())
    assert info.value.retry_after == 2
    resp = await core.chat(ask())
    assert resp.content == "ok"


async def test_max_concurrency_gives_rate_limited():
    with FakeOpenAIServer(delay=0.3, max_concurrency=1) as srv:
        core = OpenAICompatCore("fake-model", srv.base_url, KEY)
        try:
            results = await asyncio.gather(
                core.chat(ask()), core.chat(ask()), return_exceptions=True
            )
        finally:
            await core.aclose()
    kinds = sorted(type(r).__name__ for r in results)
    assert kinds == ["ChatResponse", "RateLimited"]
    limited = next(r for r in results if isinstance(r, RateLimited))
    assert limited.retry_after == 1


def test_retry_after_header_forms():
    assert retry_after_seconds({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert retry_after_seconds({"Retry-After": "0.5"}) == 0.5
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (retry_after_seconds({"Retry-After": future}) or 0) <= 31
    assert retry_after_seconds({"x-ratelimit-reset-requests": "1m30s"}) == 90
    assert retry_after_seconds({"x-ratelimit-reset-tokens": "20ms"}) == 0.02
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_error_is_unavailable(server: FakeOpenAIServer, core, status: int):
    server.script(Fail(status))
    with pytest.raises(CoreUnavailable, match=str(status)):
        await core.chat(ask())


async def test_authentication_failed_hides_the_key():
    wrong = "sk-proj-wrongwrongwrong-0123456789"
    with FakeOpenAIServer(api_key="sk-the-right-one") as srv:
        # OpenAI echoes (a masked form of) the key in its message: it must not leak.
        srv.script(
            Fail(
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {wrong}.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
        )
        core = OpenAICompatCore("fake-model", srv.base_url, wrong)
        try:
            for _ in range(2):  # scripted echo, then the server's own 401
                with pytest.raises(AuthenticationFailed) as info:
                    await core.chat(ask())
                err = info.value
                assert wrong not in str(err) and "wrongwrong" not in str(err)
                assert err.__cause__ is None
                assert "401" in str(err)
        finally:
            await core.aclose()


async def test_forbidden_is_authentication_failed(server: FakeOpenAIServer, core):
    server.script(Fail(403))
    with pytest.raises(AuthenticationFailed):
        await core.chat(ask())


@pytest.mark.parametrize("status", [404, 422])
async def test_other_client_errors_are_bad_request(server: FakeOpenAIServer, core, status: int):
    server.script(Fail(status))
    with pytest.raises(BadRequest):
        await core.chat(ask())


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"id": "x", "choices": []},
        {"id": "x", "choices": [{"index": 0, "message": None, "finish_reason": "stop"}]},
        {"id": "x", "choices": [None]},
        "<html>Bad gateway</html>",
        "[]",
    ],
)
async def test_malformed_body_is_unavailable(server: FakeOpenAIServer, core, body: Any):
    server.script(Fail(200, body) if isinstance(body, str) else body)
    with pytest.raises(CoreUnavailable, match="malformed"):
        await core.chat(ask())


async def test_error_inside_200_body(server: FakeOpenAIServer, core):
    server.script({"error": {"message": "upstream overloaded"}})
    with pytest.raises(CoreUnavailable, match="upstream overloaded"):
        await core.chat(ask())


async def test_timeout_is_unavailable(server: FakeOpenAIServer):
    server.script(Hang())
    core = OpenAICompatCore("fake-model", server.base_url, KEY, timeout=0.3)
    try:
        start = time.monotonic()
        with pytest.raises(CoreUnavailable, match="no answer"):
            await core.chat(ask())
        assert time.monotonic() - start < 3
    finally:
        await core.aclose()


async def test_refused_connection_is_unavailable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    core = OpenAICompatCore("fake-model", f"http://127.0.0.1:{port}/v1", KEY, timeout=2)
    try:
        with pytest.raises(CoreUnavailable, match="cannot reach"):
            await core.chat(ask())
    finally:
        await core.aclose()


# --- context window, tokens, construction ----------------------------------------------


async def test_context_window_learned_from_models():
    with FakeOpenAIServer(context_window=12_345) as srv:
        core = OpenAICompatCore("fake-model", srv.base_url, KEY)
        fixed = OpenAICompatCore("fake-model", srv.base_url, KEY, context_window=999)
        try:
            assert core.context_window == DEFAULT_CONTEXT_WINDOW
            assert await core.probe() == 12_345
            assert core.context_window == 12_345
            assert await fixed.probe() == 999  # a given window wins
        finally:
            await core.aclose()
            await fixed.aclose()


async def test_probe_failure_keeps_table_value(server: FakeOpenAIServer):
    core = OpenAICompatCore("gpt-4o-mini", server.base_url, KEY)  # server reports no window
    try:
        assert await core.probe() == 128_000
    finally:
        await core.aclose()


def test_window_from_models_shapes():
    llamacpp = {"data": [{"id": "m.gguf", "meta": {"n_ctx_train": 131072, "n_vocab": 1}}]}
    assert _window_from_models(llamacpp, "whatever") == 131072
    groq = {"data": [{"id": "a", "context_window": 8192}, {"id": "b", "context_window": 32768}]}
    assert _window_from_models(groq, "b") == 32768
    assert _window_from_models(groq, "c") is None
    assert _window_from_models({"data": [{"id": "x"}]}, "x") is None
    assert _window_from_models("junk", "x") is None


def test_known_context_windows():
    assert known_context_window("gpt-4o-mini") == 128_000
    assert known_context_window("gpt-4.1-nano") == 1_047_576
    assert known_context_window("meta-llama/Llama-3.1-8B-Instruct") == 131_072
    assert known_context_window("llama3:8b") == 8192
    assert known_context_window("some-new-model") == DEFAULT_CONTEXT_WINDOW


async def test_calibration_moves_toward_reported_usage():
    # The backend counts one token per 2 characters of message text.
    def policy(req: dict[str, Any]) -> dict[str, Any]:
        chars = sum(len(m["content"] or "") for m in req["messages"])
        return {"content": "ok", "usage": {"prompt_tokens": chars // 2 + 4 * len(req["messages"])}}

    with FakeOpenAIServer(policy) as srv:
        core = OpenAICompatCore("fake-model", srv.base_url, KEY)
        try:
            text = "lorem ipsum dolor sit amet " * 100
            before = core.count_tokens(text)
            start = core.estimate.chars_per_token
            for _ in range(3):
                await core.chat(ask(text, tool_choice="none"))
            after = core.count_tokens(text)
        finally:
            await core.aclose()
    assert core.estimate.samples == 3
    assert abs(core.estimate.chars_per_token - 2.0) < abs(start - 2.0)
    assert after > before  # more tokens per character than the default assumed


def test_names_and_ollama():
    assert OpenAICompatCore("gpt-4o", api_key=KEY).name == "openai/gpt-4o"
    assert OpenAICompatCore("x", name="vllm/x").name == "vllm/x"
    o = ollama_core("llama3.1:8b")
    assert o.name == "ollama/llama3.1:8b"
    assert o.base_url == "http://localhost:11434/v1"
    assert o.context_window == 4096
    assert ollama_core("m", base_url="http://box:11434/v1").base_url == "http://box:11434/v1"


async def test_missing_key_for_openai_is_authentication_failed(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    core = OpenAICompatCore("gpt-4o")
    with pytest.raises(AuthenticationFailed, match="no API key"):
        await core.chat(ask())


def test_import_does_not_load_the_sdk():
    code = "import sys, llmos.llm.openai_compat; print('openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
