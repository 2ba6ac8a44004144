"""Two real `llmos serve` processes on one PostgreSQL, loaded from both sides at once:
every message is processed exactly once (one step per agent at a time across nodes,
by agent leases), none is lost, and each answer is to its own message."""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from llmos.access.policy import AccessManager
from llmos.storage.db import Database
from tests.fakes.openai_server import FakeOpenAIServer
from tests.storage.serve_nodes import Node

AGENTS = 3
PER_SIDE = 6  # messages per agent through each node


def echo(request: dict[str, Any]) -> dict[str, Any]:
    last = request["messages"][-1]
    if last["role"] == "tool":  # the reply was sent: end the turn
        return {"content": "done"}
    users = [m for m in request["messages"] if m["role"] == "user"]
    said = users[-1]["content"] if users else ""
    return {"tool_calls": [{"name": "send_message", "arguments": {"message": f"echo {said}"}}]}


def test_two_nodes_on_one_postgres_process_each_message_once(
    postgres_schema_url: str, tmp_path: Path
) -> None:
    fake = FakeOpenAIServer(echo).start()
    db = Database.from_url(postgres_schema_url)
    _, key = AccessManager(db).create_user("alice")
    env = {
        **os.environ,
        "LLMOS_HOME": str(tmp_path),
        "LLMOS_DATABASE_URL": postgres_schema_url,
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test",
    }
    nodes: list[Node] = []
    try:
        for i in range(2):
            nodes.append(Node(env, tmp_path / f"node{i}.log"))
        for node in nodes:
            node.wait_ready(key)
        urls = [node.url for node in nodes]
        auth = {"Authorization": f"Bearer {key}"}
        for i in range(AGENTS):
            r = httpx.post(
                f"{urls[0]}/v1/agents",
                headers=auth,
                json={"name": f"a{i}", "model": "openai/fake-model", "embedder": "openai/emb"},
                timeout=60,
            )
            assert r.status_code == 201, r.text

        def send(job: tuple[int, int, int]) -> tuple[str, str]:
            node, agent, n = job
            said = f"node{node} agent{agent} message{n}"
            r = httpx.post(
                f"{urls[node]}/v1/agents/a{agent}/messages",
                headers=auth,
                json={"text": said},
                timeout=120,
            )
            assert r.status_code == 200, r.text
            return said, r.json()["reply"]

        jobs = [(node, a, n) for n in range(PER_SIDE) for a in range(AGENTS) for node in (0, 1)]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(send, jobs))
    finally:
        for node in nodes:
            node.stop()
        fake.stop()

    assert all(reply == f"echo {said}" for said, reply in answers), answers
    with db.connect() as conn:
        rows = conn.execute(
            text("SELECT agent_id, role, content, tool_calls FROM messages ORDER BY id")
        ).fetchall()
        leases = conn.execute(text("SELECT count(*) FROM agent_leases")).scalar_one()
    db.close()
    sent = Counter(said for said, _ in answers)
    said = [r for r in rows if r.role == "user" and (r.content or "").startswith("node")]
    assert len(sent) == AGENTS * PER_SIDE * 2
    assert Counter(r.content for r in said) == sent  # each stored once: none lost or run twice
    # One step at a time per agent across nodes: in each agent's history every
    # message is followed by its own answer before the next message comes in.
    waiting: dict[str, str | None] = {}
    for r in rows:
        if r.role == "user" and (r.content or "").startswith("node"):
            assert waiting.get(r.agent_id) is None, f"{r.content!r} came in mid-turn"
            waiting[r.agent_id] = r.content
        elif r.role == "assistant" and r.tool_calls:
            (call,) = r.tool_calls
            assert json.loads(call["arguments"])["message"] == f"echo {waiting[r.agent_id]}"
            waiting[r.agent_id] = None
    assert leases == AGENTS
