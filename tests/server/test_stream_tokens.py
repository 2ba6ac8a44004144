"""Token streaming over SSE, end to end: a real llmos server on loopback, an agent
on an OpenAI-compatible core (the real `openai` client against the streaming
fake). Token events arrive before `reply`, carry only the reply's text (never the
call's JSON), and add up to it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmos.llm.openai_compat import OpenAICompatCore
from tests.fakes.openai_server import FakeOpenAIServer
from tests.server.conftest import LiveServer

REPLY = 'Tom is a "cat" \u2014 na\u00efve \\ slashes\nand a second line, tokens galore.'


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    event, data = "message", ""
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif not line and data:
            yield event, json.loads(data)
            event, data = "message", ""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LiveServer, FakeOpenAIServer]]:
    def policy(req: dict[str, Any]) -> dict[str, Any]:
        return {
            "content": "I should answer.",
            "tool_calls": [{"name": "send_message", "arguments": {"message": REPLY}}],
        }

    with FakeOpenAIServer(policy, chunk_chars=2) as fake:
        live = LiveServer(tmp_path)
        core = OpenAICompatCore("fake-model", base_url=fake.base_url, api_key="k", timeout=10)
        live.kernel.add_core(core, model="scripted/streamer")
        try:
            yield live, fake
        finally:
            live.stop()


def test_token_events_arrive_before_the_reply_and_add_up_to_it(
    served: tuple[LiveServer, FakeOpenAIServer],
) -> None:
    live, fake = served
    with live.client("alice") as alice:
        r = alice.post("/v1/agents", json={"name": "tom", "model": "scripted/streamer"})
        assert r.status_code == 201, r.text
        with alice.stream(
            "POST", "/v1/agents/tom/messages", json={"text": "who is Tom?", "stream": True}
        ) as resp:
            assert resp.status_code == 200
            events = list(sse_events(resp.iter_lines()))
    assert fake.requests[-1]["stream"] is True
    kinds = [k for k, _ in events]
    tokens = [d["text"] for k, d in events if k == "token"]
    assert len(tokens) > 3  # streamed in pieces, not the reply at once
    assert kinds.index("reply") > max(i for i, k in enumerate(kinds) if k == "token")
    assert kinds.index("token") < kinds.index("function_call")  # while generated
    (reply,) = [d["text"] for k, d in events if k == "reply"]
    assert reply == REPLY
    assert "".join(tokens) == REPLY
    assert not any("{" in t or "send_message" in t for t in tokens)  # never the JSON
    assert "I should answer." not in "".join(tokens)  # nor the inner monologue
    assert kinds[-1] == "done"


def test_openai_chat_completions_stream_the_tokens_as_deltas(
    served: tuple[LiveServer, FakeOpenAIServer],
) -> None:
    """The real `openai` client on `/v1/chat/completions` with stream=true: the reply
    arrives in many content deltas as the core streams it, never its call's JSON."""
    import openai

    live, fake = served
    with live.client("alice") as alice:
        r = alice.post("/v1/agents", json={"name": "tom", "model": "scripted/streamer"})
        assert r.status_code == 201, r.text
    sdk = openai.OpenAI(base_url=f"{live.url}/v1", api_key=live.users["alice"], max_retries=0)
    stream = sdk.chat.completions.create(
        model="tom", messages=[{"role": "user", "content": "who is Tom?"}], stream=True
    )
    chunks = list(stream)
    assert fake.requests[-1]["stream"] is True
    deltas = [d for c in chunks if c.choices and (d := c.choices[0].delta.content)]
    assert len(deltas) > 3, deltas  # streamed in pieces, not the reply at once
    assert "".join(deltas) == REPLY
    assert not any("{" in d or "send_message" in d for d in deltas)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_streamed_deltas_never_split_a_secret(tmp_path: Path) -> None:
    """Tokens are sent in runs ending at whitespace, so a key the model repeats is
    masked whole even when the core streams it two characters at a time."""
    import openai

    secret = "sk-proj-" + "Q" * 40
    reply = f"the key is {secret} and that is all"

    def policy(req: dict[str, Any]) -> dict[str, Any]:
        return {"tool_calls": [{"name": "send_message", "arguments": {"message": reply}}]}

    with FakeOpenAIServer(policy, chunk_chars=2) as fake:
        live = LiveServer(tmp_path)
        core = OpenAICompatCore("fake-model", base_url=fake.base_url, api_key="k", timeout=10)
        live.kernel.add_core(core, model="scripted/streamer")
        try:
            with live.client("alice") as alice:
                alice.post("/v1/agents", json={"name": "kim", "model": "scripted/streamer"})
            sdk = openai.OpenAI(base_url=f"{live.url}/v1", api_key=live.users["alice"])
            chunks = list(
                sdk.chat.completions.create(
                    model="kim", messages=[{"role": "user", "content": "key?"}], stream=True
                )
            )
        finally:
            live.stop()
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    text = "".join(deltas)
    assert text.startswith("the key is ") and text.endswith(" and that is all")
    assert "QQQQQQ" not in text and len([d for d in deltas if d]) > 3
