"""The REST API over a real server: agents, messages (whole and streamed), memory,
export/import, kernel status, and the error statuses."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.server.conftest import LEAKY_SECRET, LiveServer, unique


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Parse an SSE body into (event, data) pairs."""
    out = []
    for block in text.strip().split("\n\n"):
        event, data = "message", ""
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
        out.append((event, json.loads(data)))
    return out


# --- health and agents ------------------------------------------------------------


def test_health_needs_no_key(live: LiveServer) -> None:
    r = httpx.get(f"{live.url}/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_openapi_and_docs(live: LiveServer) -> None:
    spec = httpx.get(f"{live.url}/openapi.json").json()
    assert "/v1/chat/completions" in spec["paths"]
    assert "/v1/agents/{agent}/messages" in spec["paths"]
    assert httpx.get(f"{live.url}/docs").status_code == 200


def test_agent_lifecycle(alice: httpx.Client) -> None:
    name = unique()
    r = alice.post(
        "/v1/agents",
        json={
            "name": name,
            "model": "scripted/echo",
            "persona": "I am a test agent.",
            "human": "Alice.",
            "blocks": {"notes": "none yet"},
            "context_window": 4096,
            "layout": "classic",
            "embedder": "test/hash",
            "settings": {"max_steps": 4, "temperature": 0.5},
        },
    )
    assert r.status_code == 201, r.text
    desc = r.json()
    assert desc["name"] == name and desc["owner"] == "alice"
    assert desc["context_window"] == 4096 and desc["layout"] == "classic"
    assert {b["label"] for b in desc["blocks"]} == {"persona", "human", "notes"}
    assert desc["settings"]["max_steps"] == 4

    assert name in [a["name"] for a in alice.get("/v1/agents").json()["agents"]]
    assert alice.get(f"/v1/agents/{name}").json()["id"] == desc["id"]
    assert alice.get(f"/v1/agents/{desc['id']}").json()["name"] == name  # by id too

    r = alice.patch(
        f"/v1/agents/{name}",
        json={
            "persona": "I am renewed.",
            "blocks": {"notes": "likes tea"},
            "settings": {"max_steps": 6, "temperature": None},
        },
    )
    assert r.status_code == 200, r.text
    blocks = {b["label"]: b["value"] for b in r.json()["blocks"]}
    assert blocks["persona"] == "I am renewed." and blocks["notes"] == "likes tea"
    assert r.json()["settings"]["max_steps"] == 6
    assert r.json()["settings"]["temperature"] == 0.0  # null reset it to the default

    # all or nothing: one bad block leaves the others unchanged
    r = alice.patch(f"/v1/agents/{name}", json={"persona": "x", "blocks": {"nope": "y"}})
    assert r.status_code == 422
    assert alice.get(f"/v1/agents/{name}/blocks/persona").json()["value"] == "I am renewed."

    assert alice.delete(f"/v1/agents/{name}").status_code == 204
    assert alice.get(f"/v1/agents/{name}").status_code == 404
    assert alice.delete(f"/v1/agents/{name}").status_code == 404


def test_create_conflict_and_bad_input(alice: httpx.Client, agent: str) -> None:
    r = alice.post("/v1/agents", json={"name": agent})
    assert r.status_code == 409 and r.json()["error"]["type"] == "conflict_error"
    for body, status in [
        ({"name": "x", "model": "openai/gpt-4o"}, 403),  # not allowed on this server
        ({"name": "x", "model": "scripted/echo", "base_url": "http://127.0.0.1:1"}, 403),
        ({"name": "x", "model": "scripted/nope"}, 400),  # unknown model string
        ({"name": "x", "embedder": "other/emb"}, 403),
        ({"name": "x", "context_window": 10}, 422),
        ({"name": "a/b"}, 422),
        ({"name": ""}, 422),
        ({"name": "x", "layout": "weird"}, 422),
        ({"name": "x", "unknown": 1}, 422),
        ({"name": "x", "persona": "p" * 3000}, 400),  # over the block limit
        ({"name": "x", "settings": {"flush_target": 0.95}}, 422),
        ({}, 422),
    ]:
        r = alice.post("/v1/agents", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["message"]
    r = alice.post("/v1/agents", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = alice.post("/v1/agents", content=b"\xff\xfe", headers={"content-type": "application/json"})
    assert r.status_code in (400, 422)


# --- messages ---------------------------------------------------------------------


def test_send_message_returns_the_turn(alice: httpx.Client, agent: str) -> None:
    r = alice.post(f"/v1/agents/{agent}/messages", json={"text": "hello there"})
    assert r.status_code == 200, r.text
    turn = r.json()
    assert turn["reply"] == "echo: hello there"
    assert turn["stop_reason"] == "end_turn" and turn["error"] is None
    assert [c["name"] for c in turn["function_calls"]] == ["send_message"]
    assert turn["messages"][0]["role"] == "user"


def test_history_is_paged_newest_first(alice: httpx.Client, agent: str) -> None:
    for i in range(3):
        alice.post(f"/v1/agents/{agent}/messages", json={"text": f"message {i}"})
    page = alice.get(f"/v1/agents/{agent}/messages", params={"limit": 4}).json()
    assert len(page["messages"]) == 4
    ids = [m["id"] for m in page["messages"]]
    assert ids == sorted(ids, reverse=True)
    rest = alice.get(
        f"/v1/agents/{agent}/messages", params={"before": page["next_before"], "limit": 100}
    ).json()
    assert all(m["id"] < min(ids) for m in rest["messages"])
    assert rest["next_before"] is None
    users = [m["content"] for m in page["messages"] + rest["messages"] if m["role"] == "user"]
    assert users == ["message 2", "message 1", "message 0"]


def test_stream_sends_every_event_then_done(alice: httpx.Client) -> None:
    name = unique()
    alice.post("/v1/agents", json={"name": name, "model": "scripted/think"})
    with alice.stream(
        "POST", f"/v1/agents/{name}/messages", json={"text": "my cat is Tom", "stream": True}
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        body = r.read().decode()
    events = sse_events(body)
    # A core that does not stream: the reply's text as token events at the end
    # (in runs that end at whitespace), then the reply.
    tokens = [d["text"] for e, d in events if e == "token"]
    assert "".join(tokens) == "saved: my cat is Tom"
    events = [(e, d) for e, d in events if e != "token"]
    kinds = [e for e, _ in events]
    assert kinds == [
        "reasoning",
        "function_call",
        "function_result",
        "function_call",
        "function_result",
        "reply",
        "done",
    ]
    assert events[1][1]["name"] == "archival_memory_insert"
    assert events[5][1]["text"] == "saved: my cat is Tom"
    turn = events[-1][1]["turn"]
    assert turn["stop_reason"] == "end_turn" and turn["steps"] == 2
    # the query parameter works too, and the passage was stored
    r = alice.post(f"/v1/agents/{name}/messages?stream=true", json={"text": "again"})
    assert sse_events(r.text)[-1][0] == "done"
    assert alice.get(f"/v1/agents/{name}").json()["archival_count"] == 2


def test_stream_errors_before_start_are_statuses(alice: httpx.Client, agent: str) -> None:
    r = alice.post("/v1/agents/nobody/messages", json={"text": "hi", "stream": True})
    assert r.status_code == 404
    r = alice.post(f"/v1/agents/{agent}/messages", json={"text": "x " * 20000, "stream": True})
    assert r.status_code == 422 and r.json()["error"]["code"] == "message_too_long"


def test_too_long_and_empty_messages(alice: httpx.Client, agent: str) -> None:
    r = alice.post(f"/v1/agents/{agent}/messages", json={"text": "x " * 20000})
    assert r.status_code == 422 and "archival" in r.json()["error"]["message"]
    assert alice.post(f"/v1/agents/{agent}/messages", json={"text": "  "}).status_code == 422
    assert alice.post(f"/v1/agents/{agent}/messages", json={}).status_code == 422
    # nothing was stored
    assert alice.get(f"/v1/agents/{agent}/messages").json()["messages"] == []


def test_failed_turn_is_503_and_keeps_the_message(alice: httpx.Client) -> None:
    name = unique()
    alice.post("/v1/agents", json={"name": name, "model": "scripted/down"})
    r = alice.post(f"/v1/agents/{name}/messages", json={"text": "are you there?"})
    assert r.status_code == 503
    assert r.headers["x-should-retry"] == "false"
    body = r.json()
    assert body["error"]["type"] == "core_unavailable"
    assert body["turn"]["stop_reason"] == "error"
    assert LEAKY_SECRET not in r.text and "[redacted]" in r.text
    history = alice.get(f"/v1/agents/{name}/messages").json()["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["are you there?"]

    # streamed: an error event, then done
    r = alice.post(f"/v1/agents/{name}/messages", json={"text": "hello?", "stream": True})
    events = sse_events(r.text)
    assert [e for e, _ in events] == ["error", "done"]
    assert LEAKY_SECRET not in r.text

    # retry runs the last message again (and fails the same way)
    r = alice.post(f"/v1/agents/{name}/messages/retry")
    assert r.status_code == 503
    history = alice.get(f"/v1/agents/{name}/messages").json()["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == [
        "hello?",
        "are you there?",
    ]


def test_retry_replaces_the_last_answer(alice: httpx.Client, agent: str) -> None:
    alice.post(f"/v1/agents/{agent}/messages", json={"text": "one"})
    r = alice.post(f"/v1/agents/{agent}/messages/retry")
    assert r.status_code == 200 and r.json()["reply"] == "echo: one"
    history = alice.get(f"/v1/agents/{agent}/messages").json()["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["one"]


def test_retry_undoes_the_turns_archival_insert(alice: httpx.Client) -> None:
    name = unique()
    alice.post("/v1/agents", json={"name": name, "model": "scripted/think"})
    alice.post(f"/v1/agents/{name}/messages", json={"text": "keep this once"})
    r = alice.post(f"/v1/agents/{name}/messages/retry")
    assert r.status_code == 200 and r.json()["not_undone"] == []
    passages = alice.get(f"/v1/agents/{name}/archival").json()["passages"]
    assert [p["text"] for p in passages] == ["keep this once"]


def test_disconnect_mid_stream_keeps_the_turn(live: LiveServer, alice: httpx.Client) -> None:
    name = unique()
    alice.post("/v1/agents", json={"name": name, "model": "scripted/slow"})
    with live.client("alice", timeout=0.1) as impatient, pytest.raises(httpx.TimeoutException):
        impatient.post(f"/v1/agents/{name}/messages", json={"text": "don't lose me"})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        msgs = alice.get(f"/v1/agents/{name}/messages").json()["messages"]
        if any(m["role"] == "tool" for m in msgs):
            break
        time.sleep(0.05)
    roles = [m["role"] for m in reversed(msgs)]
    assert roles == ["user", "assistant", "tool"]
    assert msgs[-1]["content"] == "don't lose me"


def test_cancel(live: LiveServer, alice: httpx.Client) -> None:
    name = unique()
    alice.post("/v1/agents", json={"name": name, "model": "scripted/slow"})
    assert alice.post(f"/v1/agents/{name}/cancel").json() == {"cancelled": False}  # idle
    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(
            alice.post, f"/v1/agents/{name}/messages", json={"text": "never mind"}
        )
        time.sleep(0.15)  # the slow core is thinking
        assert alice.post(f"/v1/agents/{name}/cancel").json() == {"cancelled": True}
        r = sending.result(timeout=10)
    assert r.status_code == 200 and r.json()["stop_reason"] == "cancelled"
    history = alice.get(f"/v1/agents/{name}/messages").json()["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["never mind"]


# --- memory -----------------------------------------------------------------------


def test_blocks(alice: httpx.Client, agent: str) -> None:
    blocks = alice.get(f"/v1/agents/{agent}/blocks").json()["blocks"]
    assert [b["label"] for b in blocks] == ["persona", "human"]
    r = alice.put(f"/v1/agents/{agent}/blocks/human", json={"value": "Alice, a pilot."})
    assert r.status_code == 200 and r.json()["value"] == "Alice, a pilot."
    r = alice.patch(f"/v1/agents/{agent}/blocks/human", json={"append": "Likes tea."})
    assert r.json()["value"] == "Alice, a pilot.\nLikes tea."
    r = alice.patch(f"/v1/agents/{agent}/blocks/human", json={"value": "Alice."})
    assert r.json()["value"] == "Alice."
    assert alice.get(f"/v1/agents/{agent}/blocks/human").json()["value"] == "Alice."
    # the agent learns of the edit as an event in its window
    msgs = alice.get(f"/v1/agents/{agent}/messages").json()["messages"]
    assert msgs[0]["content"].startswith("[system event]")
    assert alice.put(f"/v1/agents/{agent}/blocks/nope", json={"value": "x"}).status_code == 404
    r = alice.put(f"/v1/agents/{agent}/blocks/human", json={"value": "x" * 2001})
    assert r.status_code == 422
    r = alice.patch(f"/v1/agents/{agent}/blocks/human", json={"value": "a", "append": "b"})
    assert r.status_code == 422


def test_archival(alice: httpx.Client, agent: str) -> None:
    r = alice.post(
        f"/v1/agents/{agent}/archival",
        json={"texts": ["the launch code is 4417", "bananas are yellow"], "source": "notes"},
    )
    assert r.status_code == 201, r.text
    ids = r.json()["ids"]
    listed = alice.get(f"/v1/agents/{agent}/archival").json()
    assert listed["total"] == 2 and [p["id"] for p in listed["passages"]] == ids
    found = alice.get(f"/v1/agents/{agent}/archival/search", params={"query": "launch code"}).json()
    assert found["results"][0]["text"] == "the launch code is 4417"
    assert alice.delete(f"/v1/agents/{agent}/archival/{ids[0]}").status_code == 204
    assert alice.delete(f"/v1/agents/{agent}/archival/{ids[0]}").status_code == 404
    assert alice.get(f"/v1/agents/{agent}").json()["archival_count"] == 1
    r = alice.get(f"/v1/agents/{agent}/archival/search", params={"query": "x", "page": 999})
    assert r.status_code == 422
    assert alice.post(f"/v1/agents/{agent}/archival", json={"texts": []}).status_code == 422


def test_recall_search_and_context(alice: httpx.Client, agent: str) -> None:
    alice.post(f"/v1/agents/{agent}/messages", json={"text": "my sister is called Ada"})
    found = alice.get(f"/v1/agents/{agent}/recall/search", params={"query": "sister"}).json()
    assert found["total"] >= 1
    assert any("Ada" in (m["content"] or "") for m in found["results"])
    ctx = alice.get(f"/v1/agents/{agent}/context").json()
    assert ctx["context_window"] == 8192
    assert set(ctx["sections"]) >= {"system", "core_memory", "messages"}
    assert ctx["total"] == sum(ctx["sections"].values())


def test_kernel_status_shows_only_my_agents(
    alice: httpx.Client, bob: httpx.Client, agent: str
) -> None:
    alice.post(f"/v1/agents/{agent}/messages", json={"text": "hi"})
    mine = alice.get("/v1/kernel").json()
    assert agent in mine["usage"] and mine["usage"][agent]["syscalls"] >= 1
    assert any(p["name"] == agent for p in mine["processes"])
    theirs = bob.get("/v1/kernel").json()
    assert agent not in theirs["usage"]
    assert not any(p["name"] == agent for p in theirs["processes"])
    assert alice.get("/v1/me").json()["name"] == "alice"


# --- export / import --------------------------------------------------------------


def test_export_import_round_trip(alice: httpx.Client, bob: httpx.Client) -> None:
    name = unique()
    alice.post("/v1/agents", json={"name": name, "model": "scripted/think"})
    for text in ("first fact", "second fact"):
        alice.post(f"/v1/agents/{name}/messages", json={"text": text})
    alice.put(f"/v1/agents/{name}/blocks/human", json={"value": "Alice the tester."})
    r = alice.get(f"/v1/agents/{name}/export")
    assert r.status_code == 200
    assert "attachment" in r.headers["content-disposition"]
    doc = r.json()
    assert doc["format"] == "llmos.agent" and len(doc["passages"]) == 2

    # into another user's account, under the same name
    r = bob.post("/v1/agents/import", json=doc)
    assert r.status_code == 201, r.text
    copy = r.json()
    assert copy["name"] == name and copy["owner"] == "bob"
    assert copy["archival_count"] == 2 and copy["recall_count"] == len(doc["messages"])
    assert {b["label"]: b["value"] for b in copy["blocks"]}["human"] == "Alice the tester."
    again = bob.get(f"/v1/agents/{name}/export").json()
    strip = ("exported_at",)
    assert {k: v for k, v in again.items() if k not in strip} == {
        k: v for k, v in doc.items() if k not in strip
    }
    # passages were embedded again: search works on the copy
    found = bob.get(f"/v1/agents/{name}/archival/search", params={"query": "second"}).json()
    assert found["results"][0]["text"] == "second fact"
    # and the copy goes on talking
    r = bob.post(f"/v1/agents/{name}/messages", json={"text": "third fact"})
    assert r.json()["reply"] == "saved: third fact"

    # a name clash is a 409; a new name imports
    assert alice.post("/v1/agents/import", json=doc).status_code == 409
    r = alice.post("/v1/agents/import", params={"name": f"{name}-copy"}, json=doc)
    assert r.status_code == 201 and r.json()["name"] == f"{name}-copy"
    # a malformed document is a 422
    assert alice.post("/v1/agents/import", json={"format": "zip"}).status_code == 422
    bad = {**doc, "agent": {**doc["agent"], "model": "openai/gpt-4o"}}
    assert alice.post("/v1/agents/import", params={"name": unique()}, json=bad).status_code == 403


# --- limits -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from dataclasses import replace

    from tests.server.conftest import TEST_CONFIG

    server = LiveServer(
        tmp_path_factory.mktemp("tight"),
        replace(TEST_CONFIG, max_body_bytes=4096, rate=0.5, burst=5),
    )
    yield server
    server.stop()


def test_oversize_body_is_413(tight: LiveServer) -> None:
    with tight.client("alice") as c:
        r = c.post("/v1/agents", json={"name": "big", "persona": "x" * 10_000})
        assert r.status_code == 413
        assert "4096" in r.json()["error"]["message"]

        # no Content-Length: the bytes that arrive count
        def chunks() -> Any:
            for _ in range(10):
                yield b" " * 1000

        r = c.post("/v1/agents", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_rate_limit_is_429_per_user(tight: LiveServer) -> None:
    with tight.client("alice") as a, tight.client("bob") as b:
        statuses = [a.get("/v1/agents").status_code for _ in range(8)]
        assert statuses.count(200) <= 5 and statuses[-1] == 429
        r = a.get("/v1/agents")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert b.get("/v1/agents").status_code == 200  # bob has his own bucket


# --- secrets ----------------------------------------------------------------------


def test_keys_never_logged(live: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        with live.client("alice") as c:
            name = unique()
            c.post("/v1/agents", json={"name": name, "model": "scripted/down"})
            c.post(f"/v1/agents/{name}/messages", json={"text": "hi"})
            c.get("/v1/agents", headers={"Authorization": "Bearer llmos-wrongkey123456"})
        time.sleep(0.1)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "POST /v1/agents" in logged  # the access log was captured
    assert live.users["alice"] not in logged
    assert LEAKY_SECRET not in logged


def test_agent_shows_its_window_budget(alice: httpx.Client, agent: str) -> None:
    budget = alice.get(f"/v1/agents/{agent}").json()["budget"]
    assert set(budget) == {"window", "fixed", "summary", "reply", "messages"}
    assert 0 < budget["fixed"] < budget["window"]
    assert budget["messages"] == (
        budget["window"] - budget["reply"] - budget["fixed"] - budget["summary"]
    )
