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
