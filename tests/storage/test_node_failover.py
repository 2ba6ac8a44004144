"""One of two `llmos serve` nodes on one PostgreSQL is killed (SIGKILL) mid-turn; the
other carries on: once the dead node's lease on the agent expires, the surviving node
finishes the turn the dead one had begun (its user message was stored) and delivers an
agent-to-agent message the dead one had accepted, each exactly once, and new messages
to the agent succeed on it."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from llmos.access.policy import AccessManager
from llmos.storage.db import Database
from tests.fakes.openai_server import FakeOpenAIServer, Hang
from tests.storage.serve_nodes import Node

TTL = 3.0  # the test's lease lifetime (LLMOS_LEASE_TTL): a dead node's agents free up fast


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


class Script:
    """The model: echoes users, relays one message to `victim`, and hangs the first
    request of the turn "hold me" (so that turn is open when its node dies)."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self.lock = threading.Lock()
        self.hold_requests = 0

    def __call__(self, request: dict[str, Any]) -> dict[str, Any] | Hang:
        msgs = request["messages"]
        if msgs[-1]["role"] == "tool":
            made = [m for m in msgs if m["role"] == "assistant" and m.get("tool_calls")][-1]
            if made["tool_calls"][0]["function"]["name"] == "send_message_to_agent":
                return call("send_message", message="told victim")
            return {"content": "done"}
        said = [m for m in msgs if m["role"] == "user"][-1]["content"]
        if said == "hold me":
            with self.lock:
                self.hold_requests += 1
                if not self.held.is_set():
                    self.held.set()
                    return Hang(None)
        if said == "tell victim":
            return call(
                "send_message_to_agent", agent_name="victim", message="ping", request_heartbeat=True
            )
        if said.startswith("[message from agent sender"):
            return call("send_message", message="got ping")
        return call("send_message", message=f"echo {said}")


def _wait(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_node_killed_mid_turn_leaves_its_work_to_the_other(
    postgres_schema_url: str, tmp_path: Path
) -> None:
    script = Script()
    fake = FakeOpenAIServer(script).start()
    db = Database.from_url(postgres_schema_url)
    _, key = AccessManager(db).create_user("alice")
    auth = {"Authorization": f"Bearer {key}"}
    env = {
        **os.environ,
        "LLMOS_HOME": str(tmp_path),
        "LLMOS_DATABASE_URL": postgres_schema_url,
        "LLMOS_LEASE_TTL": str(TTL),
        "LLMOS_PICKUP_INTERVAL": "0.5",
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test",
    }
    doomed, survivor = (Node(env, tmp_path / f"node{i}.log") for i in range(2))
    held_turn: dict[str, Any] = {}
    try:
        doomed.wait_ready(key)
        survivor.wait_ready(key)
        for name in ("victim", "sender"):
            r = httpx.post(
                f"{doomed.url}/v1/agents",
                headers=auth,
                json={
                    "name": name,
                    "model": "openai/fake-model",
                    "embedder": "openai/emb",
                    "settings": {"agent_tools": True},
                },
                timeout=60,
            )
            assert r.status_code == 201, r.text
        r = httpx.post(
            f"{doomed.url}/v1/agents/sender/grants",
            headers=auth,
            json={"kind": "agent", "target": "victim"},
        )
        assert r.status_code == 201, r.text

        def hold() -> None:
            try:
                httpx.post(
                    f"{doomed.url}/v1/agents/victim/messages",
                    headers=auth, json={"text": "hold me"}, timeout=120,
                )  # fmt: skip
            except httpx.TransportError as err:  # the node dies under it
                held_turn["error"] = err

        holder = threading.Thread(target=hold)
        holder.start()
        assert script.held.wait(60), "the turn never reached the model"
        # The doomed node accepts a message for victim (busy there) and answers the sender.
        r = httpx.post(
            f"{doomed.url}/v1/agents/sender/messages",
            headers=auth, json={"text": "tell victim"}, timeout=60,
        )  # fmt: skip
        assert r.status_code == 200 and r.json()["reply"] == "told victim", r.text
        with db.connect() as conn:
            pending = conn.execute(text("SELECT message_id FROM pending_messages")).fetchall()
        assert [p.message_id for p in pending] == [None], doomed.log()  # accepted, not delivered

        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(10)
        holder.join(30)
        assert "error" in held_turn  # its client saw the node go

        def settled() -> bool:
            with db.connect() as conn:
                left = conn.execute(text("SELECT count(*) FROM pending_messages")).scalar_one()
                replies = conn.execute(
                    text("SELECT count(*) FROM messages WHERE role = 'assistant' AND "
                         "tool_calls IS NOT NULL")
                ).scalar_one()  # fmt: skip
            return left == 0 and replies >= 4  # sender's 2, victim's 2

        _wait("the survivor to finish the dead node's work", settled)

        def dead_node_listed_stale() -> bool:
            r = httpx.get(f"{survivor.url}/v1/kernel", headers=auth)
            by_pid = {n["pid"]: n for n in r.json()["nodes"]}
            gone = by_pid.get(doomed.proc.pid)
            return (
                gone is not None
                and gone["status"] == "stale"
                and (by_pid[survivor.proc.pid]["status"] == "live")
            )

        _wait("/v1/kernel to list the killed node as stale", dead_node_listed_stale)
        # New work on the survivor goes through.
        r = httpx.post(
            f"{survivor.url}/v1/agents/victim/messages",
            headers=auth, json={"text": "after"}, timeout=60,
        )  # fmt: skip
        assert r.status_code == 200 and r.json()["reply"] == "echo after", r.text
        time.sleep(1.0)  # anything that would run twice has had time to
    finally:
        doomed.stop()
        survivor.stop()
        fake.stop()

    with db.connect() as conn:
        rows = conn.execute(
            text("SELECT a.name, m.role, m.content, m.tool_calls FROM messages m "
                 "JOIN agents a ON a.id = m.agent_id ORDER BY m.id")
        ).fetchall()  # fmt: skip
        pending_left = conn.execute(text("SELECT count(*) FROM pending_messages")).scalar_one()
    db.close()
    victim = [r for r in rows if r.name == "victim"]
    users = [r.content for r in victim if r.role == "user"]
    sent = [
        json.loads(c["arguments"])["message"]
        for r in victim
        if r.role == "assistant" and r.tool_calls
        for c in r.tool_calls
    ]
    assert users.count("hold me") == 1
    assert sum(u.startswith("[message from agent sender") for u in users) == 1
    assert users.count("after") == 1
    # each answered exactly once, and the stored "hold me" was not run again as new
    assert sorted(sent) == sorted(["echo hold me", "got ping", "echo after"]), sent
    assert script.hold_requests == 2  # the hung request, and the survivor's one
    assert pending_left == 0
