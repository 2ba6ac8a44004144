"""Streaming cores: each piece of the response reaches `ChatRequest.on_delta` as it
arrives, and the pieces add up to the response `chat` returns. Real SDK clients
against the loopback fakes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmos.llm.anthropic import AnthropicCore
from llmos.llm.core import ChatRequest, Delta, Message, ToolSpec
from llmos.llm.openai_compat import OpenAICompatCore
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import Fail, FakeOpenAIServer

SEND = ToolSpec(
    "send_message",
    "Send a message to the user.",
    {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
)
REPLY = "Hello there, streaming world! \u00e9\u00e8 \u2713"


def ask(deltas: list[Delta], **kw: Any) -> ChatRequest:
    return ChatRequest(
        messages=[Message("system", "You are a test."), Message("user", "hi")],
        on_delta=deltas.append,
        **kw,
    )


async def test_openai_streams_tool_call_arguments_in_pieces() -> None:
    def policy(req: dict[str, Any]) -> dict[str, Any]:
        assert req["stream"] is True
        return {
            "content": "thinking",
            "tool_calls": [{"name": "send_message", "arguments": {"message": REPLY}}],
        }

    with FakeOpenAIServer(policy) as srv:
        core = OpenAICompatCore("fake-model", base_url=srv.base_url, api_key="k", timeout=10)
        deltas: list[Delta] = []
        try:
            response = await core.chat(ask(deltas, tools=[SEND]))
        finally:
            await core.aclose()
    (call,) = response.tool_calls
    assert json.loads(call.arguments) == {"message": REPLY}
    args = [d for d in deltas if d.call == 0]
    assert len(args) > 5  # in pieces, not at once
    assert "".join(d.text for d in args) == call.arguments
    assert all(d.name == "send_message" for d in args)
    assert "".join(d.text for d in deltas if d.call is None) == response.content == "thinking"
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0


async def test_openai_streams_plain_text_and_reports_errors_as_core_errors() -> None:
    with FakeOpenAIServer(lambda req: {"content": REPLY}) as srv:
        core = OpenAICompatCore("fake-model", base_url=srv.base_url, api_key="k", timeout=10)
        deltas: list[Delta] = []
        try:
            response = await core.chat(ask(deltas, tool_choice="none"))
            assert "".join(d.text for d in deltas) == response.content == REPLY
            srv.policy = lambda req: Fail(429)
            from llmos.llm.core import RateLimited

            try:
                await core.chat(ask([]))
            except RateLimited:
                pass
            else:
                raise AssertionError("a 429 must be RateLimited")
        finally:
            await core.aclose()


async def test_anthropic_streams_tool_input_when_asked() -> None:
    def policy(req: dict[str, Any]) -> dict[str, Any]:
        return {"tool_calls": [{"name": "send_message", "arguments": {"message": REPLY}}]}

    with FakeAnthropicServer(policy) as srv:
        core = AnthropicCore("claude-3-5-haiku-latest", base_url=srv.base_url, api_key="k")
        deltas: list[Delta] = []
        try:
            response = await core.chat(ask(deltas, tools=[SEND]))
        finally:
            await core.aclose()
    assert srv.requests[-1].get("stream") is True
    (call,) = response.tool_calls
    args = [d for d in deltas if d.call is not None]
    assert len(args) > 1
    assert json.loads("".join(d.text for d in args)) == json.loads(call.arguments)
    assert json.loads(call.arguments) == {"message": REPLY}
    assert all(d.name == "send_message" for d in args)


async def test_bedrock_streams_tool_input_when_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from llmos.llm.bedrock import BedrockCore
    from tests.fakes.bedrock_server import FakeBedrockServer

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDLLMOSTEST0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "llmos-test-secret-access-key-0123456789")
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))

    def policy(view: dict[str, Any]) -> dict[str, Any]:
        return {"tool_calls": [{"name": "send_message", "arguments": {"message": REPLY}}]}

    with FakeBedrockServer(policy) as srv:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", srv.endpoint_url)
        core = BedrockCore("us.anthropic.claude-3-7-sonnet-20250219-v1:0", timeout=10)
        deltas: list[Delta] = []
        try:
            response = await core.chat(ask(deltas, tools=[SEND]))
        finally:
            await core.aclose()
    (call,) = response.tool_calls
    args = [d for d in deltas if d.call is not None]
    assert args and all(d.name == "send_message" and d.call == 0 for d in args)
    assert json.loads("".join(d.text for d in args)) == json.loads(call.arguments)
    assert json.loads(call.arguments) == {"message": REPLY}


async def test_a_streamed_reply_is_capped_like_a_whole_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The size cap (llm/replycap.py) holds on the streaming paths too: a reply
    past LLMOS_MAX_REPLY_BYTES ends in a clear BackendError, whatever the SDK."""
    from llmos.errors import BackendError

    monkeypatch.setenv("LLMOS_MAX_REPLY_BYTES", "64")
    long = "word " * 200

    with FakeOpenAIServer(lambda req: {"content": long}) as srv:
        core = OpenAICompatCore("fake-model", base_url=srv.base_url, api_key="k", timeout=10)
        try:
            with pytest.raises(BackendError, match="larger than 64 bytes"):
                await core.chat(ask([]))
        finally:
            await core.aclose()

    with FakeAnthropicServer(lambda req: {"content": long}) as srv:
        core = AnthropicCore("claude-3-5-haiku-latest", base_url=srv.base_url, api_key="k")
        try:
            with pytest.raises(BackendError, match="larger than 64 bytes"):
                await core.chat(ask([]))
        finally:
            await core.aclose()
