"""Memory routes at their edges: a passage is deleted only through its own agent,
recall search is ranked, and a block takes exactly its limit over HTTP."""

from __future__ import annotations

from datetime import datetime

import httpx
from sqlalchemy import update

from llmos.llm.core import ChatRequest, ChatResponse
from llmos.llm.replay import ScriptedCore, call
from llmos.storage.models import messages
from tests.server.conftest import LiveServer, unique


def _agent(client: httpx.Client, **body: object) -> str:
    name = unique()
    r = client.post("/v1/agents", json={"name": name, "model": "scripted/echo", **body})
    assert r.status_code == 201, r.text
    return name


def _passages(client: httpx.Client, agent: str) -> list[dict]:
    return client.get(f"/v1/agents/{agent}/archival").json()["passages"]


def _insert(client: httpx.Client, agent: str, text: str) -> int:
    r = client.post(f"/v1/agents/{agent}/archival", json={"texts": [text]})
    assert r.status_code == 201, r.text
    return r.json()["ids"][0]


def test_a_passage_is_deleted_only_through_its_own_agent(
    live: LiveServer, alice: httpx.Client, bob: httpx.Client
) -> None:
    a1, a2 = _agent(alice), _agent(alice)
    b = _agent(bob)
    bobs = _insert(bob, b, "bob's passage")
    a2s = _insert(alice, a2, "alice's second agent's passage")
    mine = _insert(alice, a1, "alice's first agent's passage")

    # another user's passage, through one's own agent: as if it did not exist
    r = alice.delete(f"/v1/agents/{a1}/archival/{bobs}")
    assert r.status_code == 404
    assert r.json() == {
        "error": {"type": "not_found_error", "message": f"the agent has no passage {bobs}"}
    }
    assert [p["id"] for p in _passages(bob, b)] == [bobs]
    assert bob.get(f"/v1/agents/{b}").json()["archival_count"] == 1

    # the owner's other agent's passage, likewise
    r = alice.delete(f"/v1/agents/{a1}/archival/{a2s}")
    assert r.status_code == 404
    assert r.json() == {
        "error": {"type": "not_found_error", "message": f"the agent has no passage {a2s}"}
    }
    assert [p["id"] for p in _passages(alice, a2)] == [a2s]
    assert alice.get(f"/v1/agents/{a2}").json()["archival_count"] == 1
    assert alice.get(f"/v1/agents/{a1}").json()["archival_count"] == 1

    # and through its own agent it goes
    assert alice.delete(f"/v1/agents/{a1}/archival/{mine}").status_code == 204
    assert _passages(alice, a1) == []
    assert alice.get(f"/v1/agents/{a1}").json()["archival_count"] == 0
    # nothing else went with it
    assert [p["id"] for p in _passages(alice, a2)] == [a2s]
    assert [p["id"] for p in _passages(bob, b)] == [bobs]
    found = bob.get(f"/v1/agents/{b}/archival/search", params={"query": "bob's passage"}).json()
    assert [p["id"] for p in found["results"]] == [bobs]


def test_recall_search_ranks_the_strong_match_first(alice: httpx.Client) -> None:
    agent = _agent(alice)
    weak_old = (
        "Last summer my cousin and her friends took me to a big zoo in another city, "
        "where we saw a sleepy zebra, some noisy parrots and a very old tortoise."
    )
    strong = "Zebra migration: the great zebra migration crosses the river in July."
    weak_new = (
        "The travel agent called about the flights and the hotel and said that the "
        "migration of our booking to the new system would take a few more days."
    )
    for text in (weak_old, strong, weak_new):
        assert alice.post(f"/v1/agents/{agent}/messages", json={"text": text}).is_success
    r = alice.get(f"/v1/agents/{agent}/recall/search", params={"query": "zebra migration"})
    results = r.json()["results"]

    # The echo agent repeats each message in its reply, so each turn matches twice:
    # the strong turn's two messages come before every weak one, whatever their age.
    def turn_of(m: dict) -> str:
        text = (m["content"] or "") + " ".join(c["arguments"] for c in m["tool_calls"])
        return next(name for name, t in (("strong", "great zebra"), ("old", "sleepy zebra"),
                                         ("new", "our booking")) if t in text)  # fmt: skip

    order = [turn_of(m) for m in results]
    assert r.json()["total"] == 6
    assert len(order) == 5  # a page
    assert order[:2] == ["strong", "strong"], order
    assert "strong" not in order[2:], order


def test_a_block_takes_exactly_its_limit(alice: httpx.Client) -> None:
    agent = _agent(alice, block_limit=50, persona="p", human="h")
    url = f"/v1/agents/{agent}/blocks/human"
    r = alice.put(url, json={"value": "x" * 50})
    assert r.status_code == 200 and r.json()["chars"] == 50, r.text
    r = alice.put(url, json={"value": "x" * 51})
    assert r.status_code == 422
    assert r.json()["error"]["message"] == "block 'human' allows 50 characters; the new text has 51"
    assert alice.put(url, json={"value": "x" * 40}).status_code == 200
    # "x"*40 + "\n" + 9 = 50
    r = alice.patch(url, json={"append": "y" * 9})
    assert r.status_code == 200 and r.json()["chars"] == 50, r.text
    assert alice.put(url, json={"value": "x" * 40}).status_code == 200
    r = alice.patch(url, json={"append": "y" * 10})
    assert r.status_code == 422
    assert r.json()["error"]["message"] == "block 'human' allows 50 characters; the new text has 51"
    assert alice.get(url).json()["value"] == "x" * 40
    # created with a block of exactly the limit, and not one more
    assert (
        alice.post(
            "/v1/agents", json={"name": unique(), "block_limit": 50, "persona": "p" * 50}
        ).status_code
        == 201
    )
    r = alice.post("/v1/agents", json={"name": unique(), "block_limit": 50, "persona": "p" * 51})
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "type": "invalid_request_error",
            "message": "block 'persona' has 51 characters, over the limit of 50",
        }
    }


def _quiet(request: ChatRequest) -> ChatResponse:
    """Calls without thoughts: the first step only edits memory."""
    if request.messages[-1].role == "user":
        return call("core_memory_append", label="human", content="Name: Ada",
                    request_heartbeat=True)  # fmt: skip
    return call("send_message", message="Hello Ada")


def test_recall_by_date_shows_calls_and_keeps_to_its_range(
    live: LiveServer, alice: httpx.Client, bob: httpx.Client
) -> None:
    live.kernel.add_core(ScriptedCore(_quiet, name="scripted/quiet"), model="scripted/quiet")
    agent = _agent(alice, model="scripted/quiet")
    assert alice.post(f"/v1/agents/{agent}/messages", json={"text": "I am Ada"}).is_success
    agent_id = alice.get(f"/v1/agents/{agent}").json()["id"]
    old = datetime(2024, 1, 31, 12, 0).timestamp()
    with live.kernel.db.begin() as conn:
        conn.execute(update(messages).where(messages.c.agent_id == agent_id).values(created_at=old))
    assert alice.post(f"/v1/agents/{agent}/messages", json={"text": "Ada again"}).is_success

    r = alice.get(f"/v1/agents/{agent}/recall/date", params={"start": "2024-01-31",
                                                              "end": "2024-01-31"})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 3
    assert [m["line"] for m in body["results"]] == [
        "user: I am Ada",
        "assistant called core_memory_append(label='human', content='Name: Ada')",
        "assistant: Hello Ada",
    ]
    recent = alice.get(f"/v1/agents/{agent}/recall/date", params={"start": "2024-02-01"}).json()
    assert recent["total"] == 3 and recent["results"][0]["line"] == "user: Ada again"

    def search(**params: str) -> list[str]:
        r = alice.get(f"/v1/agents/{agent}/recall/search", params={"query": "Ada", **params})
        assert r.status_code == 200, r.text
        return sorted(m["line"] for m in r.json()["results"])

    assert search(end="2024-01-31T23:59") == ["assistant: Hello Ada", "user: I am Ada"]
    assert search(start="2024-02-01") == ["assistant: Hello Ada", "user: Ada again"]
    assert len(search()) == 4

    for params, says in (
        ({"start": "31/01/2024"}, "start must be a day like 2024-01-31"),
        ({"start": "2024-02-01", "end": "2024-01-31"}, "start is after end"),
        ({}, "give start, end or both"),
    ):
        r = alice.get(f"/v1/agents/{agent}/recall/date", params=params)
        assert r.status_code == 422 and says in r.text, r.text
    # another user's agent is as if it did not exist
    r = bob.get(f"/v1/agents/{agent}/recall/date", params={"start": "2024-01-31"})
    assert r.status_code == 404
