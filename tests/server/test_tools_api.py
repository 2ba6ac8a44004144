"""The AIOS managers over HTTP: tools, attach, approvals, audit, files.

A scripted model `scripted/tooluser` (added to the live server's kernel here)
calls whatever function the user's message names — `call NAME {json args}` —
then replies with what came back, so a test drives a real turn through the
executor, the sandbox, approvals and the audit log, all over HTTP. One test
restarts the server (a second `LiveServer` on the same home) while a call
waits for approval, and decides it on the new server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmos.llm.core import ChatRequest, ChatResponse
from llmos.llm.replay import ScriptedCore, call
from tests.server.conftest import LiveServer, unique

ADD = '''
def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: the first
        b: the second
    """
    return a + b
'''

LAUNCH = '''
__irreversible__ = True

def launch(target: str) -> str:
    """Launch at a target; cannot be undone.

    Args:
        target: where to
    """
    return f"launched at {target}"
'''


def tooluser(request: ChatRequest) -> ChatResponse:
    last = request.messages[-1]
    if last.role == "user" and (last.content or "").startswith("call "):
        _, name, args = last.content.split(" ", 2)
        return call(name, thought="Calling it.", request_heartbeat=True, **json.loads(args))
    return call("send_message", message=f"got: {last.content}")


def add_tooluser(server: LiveServer) -> None:
    server.kernel.add_core(
        ScriptedCore(tooluser, name="scripted/tooluser"), model="scripted/tooluser"
    )


@pytest.fixture(scope="module")
def tool_agent(live: LiveServer) -> str:
    add_tooluser(live)
    name = unique("worker")
    with live.client("alice") as alice:
        r = alice.post("/v1/agents", json={"name": name, "model": "scripted/tooluser"})
        assert r.status_code == 201, r.text
    return name


def _tool_name(prefix: str) -> str:
    return unique(prefix).replace("-", "_")


def _add(alice: httpx.Client, source: str, old: str, new: str) -> dict[str, Any]:
    r = alice.post("/v1/tools", json={"source": source.replace(old, new)})
    assert r.status_code == 201, r.text
    return r.json()


def test_add_attach_and_call_a_tool(alice: httpx.Client, tool_agent: str) -> None:
    name = _tool_name("add")
    added = _add(alice, ADD, "def add", f"def {name}")
    assert added["tools"][0]["name"] == name and added["tools"][0]["version"] == 1
    assert name in [t["name"] for t in alice.get("/v1/tools").json()["tools"]]
    one = alice.get(f"/v1/tools/{name}").json()
    assert one["version"] == 1 and f"def {name}" in one["source"]
    assert one["parameters"]["properties"]["a"]["type"] == "integer"
    # re-adding bumps the version
    assert _add(alice, ADD, "def add", f"def {name}")["tools"][0]["version"] == 2

    # not attached yet: the agent is refused, and the refusal is audited
    turn = alice.post(
        f"/v1/agents/{tool_agent}/messages", json={"text": f'call {name} {{"a": 2, "b": 3}}'}
    ).json()
    assert "permission denied" in turn["reply"]

    r = alice.put(f"/v1/agents/{tool_agent}/tools/{name}")
    assert r.status_code == 200 and name in [t["name"] for t in r.json()["tools"]]
    turn = alice.post(
        f"/v1/agents/{tool_agent}/messages", json={"text": f'call {name} {{"a": 2, "b": 3}}'}
    ).json()
    assert turn["stop_reason"] == "end_turn", turn
    assert "5" in turn["reply"]

    audit = alice.get("/v1/audit", params={"agent": tool_agent}).json()["entries"]
    decisions = [(e["target"], e["decision"]) for e in audit]
    assert (name, "allowed") in decisions and (name, "denied") in decisions

    # detach: gone from the agent; a second detach is a 404
    assert alice.delete(f"/v1/agents/{tool_agent}/tools/{name}").status_code == 204
    assert alice.delete(f"/v1/agents/{tool_agent}/tools/{name}").status_code == 404
    assert alice.delete(f"/v1/tools/{name}").status_code == 204
    assert alice.get(f"/v1/tools/{name}").status_code == 404


def test_irreversible_tool_is_approved_over_http(alice: httpx.Client, tool_agent: str) -> None:
    name = _tool_name("launch")
    added = _add(alice, LAUNCH, "def launch", f"def {name}")
    assert added["tools"][0]["irreversible"] is True
    assert alice.put(f"/v1/agents/{tool_agent}/tools/{name}").status_code == 200

    turn = alice.post(
        f"/v1/agents/{tool_agent}/messages", json={"text": f'call {name} {{"target": "moon"}}'}
    ).json()
    assert turn["stop_reason"] == "waiting_approval", turn
    pending = [a for a in alice.get("/v1/approvals").json()["approvals"] if a["tool"] == name]
    assert len(pending) == 1
    approval = pending[0]
    assert json.loads(approval["arguments"]) == {"target": "moon"}
    assert approval["agent"] == tool_agent

    r = alice.post(f"/v1/approvals/{approval['id']}", json={"approve": True, "reason": "go"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["approval"]["status"] == "approved"
    assert "launched at moon" in body["turn"]["reply"]
    assert body["approval"]["delivered_at"] is not None
    # decided once: a second decision is a conflict; the pending list is empty
    again = alice.post(f"/v1/approvals/{approval['id']}", json={"approve": False})
    assert again.status_code == 409
    assert name not in str(alice.get("/v1/approvals").json())

    entries = alice.get("/v1/audit").json()["entries"]
    mine = [(e["syscall"], e["decision"]) for e in entries if e["target"] == name]
    assert ("tool", "approval_requested") in mine and ("approval", "approved") in mine


class Servers:
    """LiveServers on one home, started in turn; whichever still runs is stopped at the end."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.running: LiveServer | None = None

    def start(self, users: dict[str, str] | None = None) -> LiveServer:
        assert self.running is None, "stop the running server first"
        self.running = LiveServer(self.home, users=users)
        add_tooluser(self.running)
        return self.running

    def stop(self) -> None:
        if self.running is not None:
            server, self.running = self.running, None
            server.stop()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path / "home")
    s.home.mkdir()
    yield s
    s.stop()


def _process_state(client: httpx.Client, agent: str) -> str | None:
    procs = client.get("/v1/kernel").json()["processes"]
    return next((p["state"] for p in procs if p["name"] == agent), None)


def _pending_across_a_restart(servers: Servers) -> tuple[LiveServer, str, dict[str, Any]]:
    """Make alice's agent `launcher` call an irreversible tool, then restart the server.

    Returns the new server, the tool's name and the approval as listed before the restart.
    """
    first = servers.start()
    name = _tool_name("launch")
    with first.client("alice") as alice:
        r = alice.post("/v1/agents", json={"name": "launcher", "model": "scripted/tooluser"})
        assert r.status_code == 201, r.text
        _add(alice, LAUNCH, "def launch", f"def {name}")
        assert alice.put(f"/v1/agents/launcher/tools/{name}").status_code == 200
        turn = alice.post(
            "/v1/agents/launcher/messages", json={"text": f'call {name} {{"target": "moon"}}'}
        ).json()
        assert turn["stop_reason"] == "waiting_approval", turn
        (before,) = alice.get("/v1/approvals").json()["approvals"]
        assert before["status"] == "pending" and before["tool"] == name
        assert _process_state(alice, "launcher") == "waiting_approval"
    users = first.users
    servers.stop()  # closes the kernel: nothing of the call is left in memory
    return servers.start(users=users), name, before


def test_approval_survives_a_restart(servers: Servers) -> None:
    second, name, before = _pending_across_a_restart(servers)
    with second.client("alice") as alice, second.client("bob") as bob:
        # still pending, with its arguments, for alice only
        (after,) = alice.get("/v1/approvals").json()["approvals"]
        assert after["id"] == before["id"] and after["status"] == "pending"
        assert after["agent"] == "launcher" and after["tool"] == name
        assert json.loads(after["arguments"]) == {"target": "moon"}
        assert alice.get(f"/v1/approvals/{after['id']}").json()["status"] == "pending"

        # bob can neither see nor decide it: a 404, as for an approval that does not exist
        assert bob.get("/v1/approvals", params={"status": "all"}).json()["approvals"] == []
        assert bob.get(f"/v1/approvals/{after['id']}").status_code == 404
        r = bob.post(f"/v1/approvals/{after['id']}", json={"approve": True, "reason": "mine"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "approval_not_found"
        assert alice.get(f"/v1/approvals/{after['id']}").json()["status"] == "pending"

        r = alice.post(
            f"/v1/approvals/{after['id']}", json={"approve": True, "reason": "clear skies"}
        )
        assert r.status_code == 200, r.text
        decided = r.json()["approval"]
        assert decided["status"] == "approved" and decided["reason"] == "clear skies"
        assert decided["delivered_at"] is not None and decided["decided_at"] is not None
        assert "launched at moon" in decided["result"]
        assert "launched at moon" in r.json()["turn"]["reply"]
        assert alice.get("/v1/approvals").json()["approvals"] == []
        assert alice.get(f"/v1/approvals/{after['id']}").json() == decided
        assert _process_state(alice, "launcher") == "ready"

        # the tool's result reached the agent: the event is in its messages
        messages = alice.get("/v1/agents/launcher/messages").json()["messages"]
        events = [m["content"] for m in messages if (m["content"] or "").startswith("[system")]
        assert any("approved" in e and "launched at moon" in e for e in events), events

        # the audit log has the request (made before the restart) and the decision
        entries = alice.get("/v1/audit", params={"agent": "launcher"}).json()["entries"]
        mine = {(e["syscall"], e["decision"]): e for e in entries if e["target"] == name}
        assert ("tool", "approval_requested") in mine
        assert mine[("approval", "approved")]["detail"] == f"{after['id']}: clear skies"
        assert bob.get("/v1/audit").json()["entries"] == []


def test_reloaded_agent_shows_waiting_approval_after_a_restart(servers: Servers) -> None:
    second, _, _ = _pending_across_a_restart(servers)
    with second.client("alice") as alice:
        assert alice.get("/v1/agents/launcher").status_code == 200  # loads its image
        assert _process_state(alice, "launcher") == "waiting_approval"


def test_deny_with_reason(alice: httpx.Client, tool_agent: str) -> None:
    name = _tool_name("launch")
    _add(alice, LAUNCH, "def launch", f"def {name}")
    alice.put(f"/v1/agents/{tool_agent}/tools/{name}")
    alice.post(
        f"/v1/agents/{tool_agent}/messages", json={"text": f'call {name} {{"target": "mars"}}'}
    )
    (approval,) = [a for a in alice.get("/v1/approvals").json()["approvals"] if a["tool"] == name]
    r = alice.post(f"/v1/approvals/{approval['id']}", json={"approve": False, "reason": "too far"})
    assert r.status_code == 200
    assert r.json()["approval"]["status"] == "denied"
    assert "too far" in r.json()["turn"]["reply"]


def test_audit_pages(alice: httpx.Client, tool_agent: str) -> None:
    first = alice.get("/v1/audit", params={"limit": 1}).json()
    assert len(first["entries"]) == 1 and first["next_before"] is not None
    second = alice.get("/v1/audit", params={"limit": 1, "before": first["next_before"]}).json()
    assert second["entries"][0]["id"] < first["entries"][0]["id"]


def test_tool_errors(alice: httpx.Client, tool_agent: str) -> None:
    r = alice.post("/v1/tools", json={"source": "def nodoc(x: int) -> int:\n    return x\n"})
    assert r.status_code == 422 and "docstring" in r.json()["error"]["message"]
    r = alice.post("/v1/tools", json={"source": "def broken(:"})
    assert r.status_code == 422
    builtin = 'def send_message(message: str) -> str:\n    """Shadow."""\n    return message\n'
    assert alice.post("/v1/tools", json={"source": builtin}).status_code == 409
    assert alice.post("/v1/tools", json={"source": ""}).status_code == 422
    assert alice.put(f"/v1/agents/{tool_agent}/tools/no_such_tool").status_code == 404
    assert alice.post("/v1/approvals/appr-nope", json={"approve": True}).status_code == 404
    assert alice.delete("/v1/tools/no_such_tool").status_code == 404


def test_grants(alice: httpx.Client, tool_agent: str) -> None:
    r = alice.post(f"/v1/agents/{tool_agent}/grants", json={"kind": "files", "target": "docs"})
    assert r.status_code == 201
    assert {"kind": "files", "target": "docs", "mode": "rw"} in r.json()["grants"]
    bad = alice.post(f"/v1/agents/{tool_agent}/grants", json={"kind": "root", "target": "*"})
    assert bad.status_code == 422
    assert alice.delete(f"/v1/agents/{tool_agent}/grants/files/docs").status_code == 204
    assert alice.delete(f"/v1/agents/{tool_agent}/grants/files/docs").status_code == 404
    assert alice.get(f"/v1/agents/{tool_agent}/grants").json()["grants"] == []


@pytest.mark.parametrize("base", ["/v1/agents/{agent}", "/v1/shared/{area}"])
def test_file_versions_and_rollback(alice: httpx.Client, tool_agent: str, base: str) -> None:
    base = base.format(agent=tool_agent, area=unique("area"))
    assert alice.put(f"{base}/files/plan/a.txt", json={"content": "one"}).json()["version"] == 1
    assert alice.put(f"{base}/files/plan/a.txt", json={"content": "two"}).json()["version"] == 2
    assert alice.get(f"{base}/files/plan/a.txt").json()["content"] == "two"
    assert alice.get(f"{base}/files/plan/a.txt", params={"version": 1}).json()["content"] == "one"
    listed = alice.get(f"{base}/files", params={"prefix": "plan/"}).json()["files"]
    assert [f["path"] for f in listed] == ["plan/a.txt"]

    r = alice.post(f"{base}/file-rollback/plan/a.txt", json={"version": 1})
    assert r.status_code == 200 and r.json()["version"] == 3
    assert alice.get(f"{base}/files/plan/a.txt").json()["content"] == "one"

    assert alice.delete(f"{base}/files/plan/a.txt").json()["version"] == 4
    assert alice.get(f"{base}/files/plan/a.txt").status_code == 404
    versions = alice.get(f"{base}/file-versions/plan/a.txt").json()["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3, 4] and versions[-1]["deleted"]
    assert alice.post(f"{base}/file-rollback/plan/a.txt", json={"version": 2}).is_success
    assert alice.get(f"{base}/files/plan/a.txt").json()["content"] == "two"

    # errors: a missing file or version is 404, a bad path or version 422
    assert alice.get(f"{base}/files/nothing.txt").status_code == 404
    assert alice.get(f"{base}/files/plan/a.txt", params={"version": 99}).status_code == 404
    assert alice.post(f"{base}/file-rollback/plan/a.txt", json={"version": 0}).status_code == 422
    assert alice.delete(f"{base}/files/nothing.txt").status_code == 404


def test_agent_file_quota_is_413(alice: httpx.Client, agent: str) -> None:
    # the default quota of an agent's area is 1,000,000 bytes
    big = "x" * 600_000
    assert alice.put(f"/v1/agents/{agent}/files/one.txt", json={"content": big}).is_success
    r = alice.put(f"/v1/agents/{agent}/files/two.txt", json={"content": big})
    assert r.status_code == 413 and r.json()["error"]["code"] == "quota_exceeded"
    assert [f["path"] for f in alice.get(f"/v1/agents/{agent}/files").json()["files"]] == [
        "one.txt"
    ]
