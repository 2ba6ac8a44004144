"""The kernel against a real OpenAI-compatible HTTP server on loopback.

llmos's side uses the real `openai` client; the server answers as OpenAI does,
including its error bodies. These tests prove the kernel's reactions: flush and
retry on context_length_exceeded, back off and retry on 429 with Retry-After,
report (and lose nothing) on failures that retries cannot fix.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from llmos import Kernel
from tests.fakes.openai_server import Fail, FakeOpenAIServer


def reply_policy(body: dict[str, Any]) -> dict[str, Any]:
    if not body.get("tools"):  # a summary request
        return {"content": "Summary: the user talked at length about rivers."}
    last = body["messages"][-1]
    return {
        "tool_calls": [
            {"name": "send_message", "arguments": {"message": f"echo {len(last['content'])}"}}
        ]
    }


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply_policy) as s:
        yield s


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-key-123")


async def make(kernel: Kernel, server: FakeOpenAIServer, window: int = 8192) -> None:
    await kernel.create_agent(
        "oa",
        model="openai/fake",
        base_url=server.base_url,
        context_window=window,
        embedder="test/hash",
    )


async def test_a_turn_over_http(kernel: Kernel, server: FakeOpenAIServer) -> None:
    await make(kernel, server)
    turn = await kernel.send("oa", "hello there")
    assert turn.reply == "echo 11"
    assert turn.stop_reason == "end_turn"
    body = server.requests[-1]
    assert body["messages"][0]["role"] == "system"
    assert {t["function"]["name"] for t in body["tools"]} >= {"send_message", "core_memory_append"}
    assert turn.usage.prompt_tokens > 0


async def test_context_length_exceeded_flushes_and_retries(kernel: Kernel) -> None:
    # The server's window is smaller than the one the agent was told about, so
    # llmos's own count says "fits" and the backend says 400.
    with FakeOpenAIServer(reply_policy, context_window=2600) as server:
        await make(kernel, server, window=8192)
        flushes = 0
        for i in range(40):
            turn = await kernel.send("oa", f"Turn {i}: " + "a long sentence about rivers. " * 12)
            assert turn.stop_reason == "end_turn", turn.error
            flushes += turn.flushes
        assert flushes >= 1
        statuses = [server.prompt_tokens(r) > 2600 for r in server.requests]
        assert any(statuses), "the server never rejected a request"
        assert "Summary: the user talked" in kernel.get_agent("oa")["summary"]


async def test_429_with_retry_after_then_success(kernel: Kernel, server: FakeOpenAIServer) -> None:
    await make(kernel, server)
    server.script(Fail(429, headers={"Retry-After": "1"}))
    t0 = time.monotonic()
    turn = await kernel.send("oa", "hi")
    elapsed = time.monotonic() - t0
    assert turn.stop_reason == "end_turn" and turn.reply == "echo 2"
    assert elapsed >= 0.95
    assert len(server.requests) == 2
    assert kernel.kernel_stats()["cores"][0]["retried"] == 1


async def test_persistent_500_ends_the_turn_and_loses_nothing(
    kernel: Kernel, server: FakeOpenAIServer
) -> None:
    await make(kernel, server)
    kernel.queue(kernel.core("openai/fake", server.base_url)).max_backoff = 0.05
    server.script(*[Fail(500)] * 4)
    turn = await kernel.send("oa", "are you there?")
    assert turn.stop_reason == "error"
    assert turn.error == "openai/fake: HTTP 500: fake server error 500"
    history = kernel.messages("oa")
    assert history[0].content == "are you there?"  # the event was committed first
    again = await kernel.send("oa", "now?")
    assert again.stop_reason == "end_turn"


async def test_wrong_api_key_is_a_clear_error_without_the_key(
    kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeOpenAIServer(reply_policy, api_key="right-key") as server:
        await make(kernel, server)
        turn = await kernel.send("oa", "hi")
        assert turn.stop_reason == "error"
        assert "sk-test-secret-key-123" not in (turn.error or "")
        assert turn.error == (
            "openai/fake: HTTP 401: Incorrect API key provided. "
            "You can find your API key in your account."
        )


async def test_cancelling_a_turn_aborts_its_request_on_the_backend(kernel: Kernel) -> None:
    """A remote generation cannot be paused, but a cancelled turn hangs up on it:
    the backend sees its client go away (vLLM and llama.cpp's server stop
    generating then), and the agent answers its next message."""
    import asyncio

    got_request = asyncio.Event()
    hung_up = asyncio.Event()
    answer_next = False

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        if answer_next:
            body = (
                b'{"id":"c","object":"chat.completion","created":0,"model":"m","choices":'
                b'[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant",'
                b'"content":null,"tool_calls":[{"id":"call_1","type":"function","function":'
                b'{"name":"send_message","arguments":"{\\"message\\": \\"back\\"}"}}]}}],'
                b'"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}'
            )
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            writer.close()
            return
        got_request.set()
        await reader.read()  # b"" once the client closes the connection
        hung_up.set()
        writer.close()

    server = await asyncio.start_server(backend, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await kernel.create_agent(
            "far",
            model="openai/slow",
            base_url=f"http://127.0.0.1:{port}/v1",
            context_window=8192,
            embedder="test/hash",
        )
        turn_task = asyncio.create_task(kernel.send("far", "take your time"))
        await asyncio.wait_for(got_request.wait(), 10)
        assert kernel.cancel("far")
        turn = await asyncio.wait_for(turn_task, 10)
        assert turn.stop_reason == "cancelled"
        await asyncio.wait_for(hung_up.wait(), 5)  # the request was aborted, not abandoned
        answer_next = True
        again = await kernel.send("far", "are you there?")
        assert (again.stop_reason, again.reply) == ("end_turn", "back")
    finally:
        server.close()
        await server.wait_closed()
