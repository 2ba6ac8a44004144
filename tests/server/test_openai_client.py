"""The official `openai` client against llmos: an agent is a model, and it remembers."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.server.conftest import LiveServer, unique


@pytest.fixture
def client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=live.users["alice"], max_retries=0)


def test_models_lists_my_agents(client: openai.OpenAI, agent: str, live: LiveServer) -> None:
    ids = [m.id for m in client.models.list()]
    assert agent in ids
    assert client.models.retrieve(agent).owned_by == "alice"
    bobs = openai.OpenAI(base_url=f"{live.url}/v1", api_key=live.users["bob"])
    assert agent not in [m.id for m in bobs.models.list()]


def test_chat_completion(client: openai.OpenAI, agent: str, alice: httpx.Client) -> None:
    out = client.chat.completions.create(
        model=agent,
        messages=[
            {"role": "system", "content": "ignored: the agent has its own prompt"},
            {"role": "user", "content": "an earlier message, also ignored"},
            {"role": "assistant", "content": "..."},
            {"role": "user", "content": "I like sailing"},
        ],
        temperature=0.3,
    )
    assert out.object == "chat.completion" and out.model == agent
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == "echo: I like sailing"
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None and out.usage.total_tokens > 0
    # the agent is stateful: only the last user message reached it, and it is kept
    history = alice.get(f"/v1/agents/{agent}/messages").json()["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["I like sailing"]


def test_chat_completion_with_content_parts(client: openai.OpenAI, agent: str) -> None:
    out = client.chat.completions.create(
        model=agent,
        messages=[{"role": "user", "content": [{"type": "text", "text": "parts work"}]}],
    )
    assert out.choices[0].message.content == "echo: parts work"


def test_streaming(client: openai.OpenAI, alice: httpx.Client) -> None:
    name = unique()
    alice.post("/v1/agents", json={"name": name, "model": "scripted/think"})
    stream = client.chat.completions.create(
        model=name,
        messages=[{"role": "user", "content": "remember the number 7"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "saved: remember the number 7"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert chunks[0].choices[0].delta.role == "assistant"


def test_raw_stream_ends_with_done(live: LiveServer, agent: str) -> None:
    with httpx.stream(
        "POST",
        f"{live.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {live.users['alice']}"},
        json={"model": agent, "messages": [{"role": "user", "content": "hi"}], "stream": True},
    ) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nobody", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"


def test_no_user_message_is_400(client: openai.OpenAI, agent: str) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=agent, messages=[{"role": "system", "content": "only a system prompt"}]
        )


def test_wrong_key_is_401(live: LiveServer, agent: str) -> None:
    bad = openai.OpenAI(base_url=f"{live.url}/v1", api_key="llmos-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_failed_turn_is_not_retried_by_the_sdk(live: LiveServer, alice: httpx.Client) -> None:
    name = unique()
    alice.post("/v1/agents", json={"name": name, "model": "scripted/down"})
    # max_retries=2 would resend a 503; x-should-retry: false stops it, so the
    # agent gets the message exactly once.
    sdk = openai.OpenAI(base_url=f"{live.url}/v1", api_key=live.users["alice"], max_retries=2)
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model=name, messages=[{"role": "user", "content": "hello?"}])
    assert info.value.status_code == 503
    history = alice.get(f"/v1/agents/{name}/messages").json()["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["hello?"]
    # streaming: the SDK raises the error event
    with pytest.raises(openai.APIError):
        list(
            sdk.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "again?"}], stream=True
            )
        )
