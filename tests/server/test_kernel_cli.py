"""`llmos ps` and `llmos kernel stats`, against a live server and against the local kernel."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from llmos.cli.main import app
from llmos.kernel.nodes import NodeRegistry
from llmos.storage.models import nodes
from tests.server.conftest import LiveServer, unique


def run(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def test_ps_and_stats_from_a_live_server(live: LiveServer, alice: httpx.Client, agent: str) -> None:
    assert alice.post(f"/v1/agents/{agent}/messages", json={"text": "hi"}).status_code == 200
    key = live.users["alice"]
    ps = run("ps", "--url", live.url, "--key", key, "--json")
    assert ps.exit_code == 0, ps.output
    rows = json.loads(ps.stdout)["processes"]
    mine = [r for r in rows if r["name"] == agent]
    assert mine and mine[0]["state"] == "ready"
    stats = run("kernel", "stats", "--url", live.url, "--key", key, "--json")
    data = json.loads(stats.stdout)
    assert agent in data["usage"] and data["cores"]
    # bob's key shows none of alice's agents
    other = json.loads(run("ps", "--url", live.url, "--key", live.users["bob"], "--json").stdout)
    assert all(r["name"] != agent for r in other["processes"])
    bad = run("ps", "--url", live.url, "--key", "llmos-wrong")
    assert bad.exit_code == 1 and "rejected" in bad.stderr


def test_ps_locally_shows_the_agents_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --url the commands ask the local kernel (here in-process, LLMOS_NO_DAEMON):
    a kernel just booted has no agent in memory, and stats count them all."""
    monkeypatch.setenv("OPENAI_API_KEY", "test")  # the embedder is made, never called
    created = run(
        "--home",
        str(tmp_path),
        "agent",
        "create",
        "solo",
        "--model",
        "openai/x",
        "--embedder",
        "openai/text-embedding-3-small",
        "--context-window",
        "4096",
    )
    assert created.exit_code == 0, created.output
    ps = run("--home", str(tmp_path), "ps", "--json")
    assert ps.exit_code == 0, ps.output
    assert json.loads(ps.stdout)["processes"] == []
    stats = json.loads(run("--home", str(tmp_path), "kernel", "stats", "--json").stdout)
    assert stats["agents"] == 1 and "solo" in stats["usage"]
    table = run("--home", str(tmp_path), "kernel", "stats")
    assert "solo" in table.stdout


def test_the_cli_against_a_remote_server_with_url_and_key(live: LiveServer) -> None:
    """--url/--key point every client command at a real `llmos serve` on loopback, as
    that key's user; LLMOS_URL/LLMOS_KEY do the same."""
    key = live.users["bob"]
    remote = ("--url", live.url, "--key", key)
    name = unique("cli")
    created = run(*remote, "agent", "create", name, "--model", "scripted/echo")
    assert created.exit_code == 0, created.output
    sent = run(*remote, "send", name, "over the wire")
    assert sent.exit_code == 0, sent.output
    assert "over the wire" in sent.stdout
    turn = json.loads(run(*remote, "send", name, "json too", "--json").stdout)
    assert turn["stop_reason"] == "end_turn"
    listed = CliRunner().invoke(
        app, ["agent", "list", "--json"], env={"LLMOS_URL": live.url, "LLMOS_KEY": key}
    )
    assert name in [a["name"] for a in json.loads(listed.stdout)]
    # another user's key does not see it; a wrong key is one clean line
    alices = run("--url", live.url, "--key", live.users["alice"], "agent", "show", name)
    assert alices.exit_code == 1 and alices.stderr.startswith("error: ")
    bad = run("--url", live.url, "--key", "llmos-wrong", "agent", "list")
    assert bad.exit_code == 1 and "rejected the API key" in bad.stderr
    assert bad.stderr.count("\n") == 1
    nokey = run("--url", live.url, "agent", "list")
    assert nokey.exit_code == 1 and "--key" in nokey.stderr
    # set-embedder runs in the server's kernel; a server loads no files of its own disk
    switched = run(*remote, "agent", "set-embedder", name, "test/hash", "--json")
    assert switched.exit_code == 0, switched.output
    assert json.loads(switched.stdout)["embedder"] == "test/hash"
    local_only = run(*remote, "load", name, str(Path(__file__)))
    assert local_only.exit_code == 1 and "from its own disk" in local_only.stderr
    # export and import over the wire
    doc = run(*remote, "agent", "export", name)
    assert doc.exit_code == 0, doc.output
    copy = unique("copy")
    with_doc = CliRunner().invoke(
        app, [*remote, "agent", "import", "-", "--name", copy], input=doc.stdout
    )
    assert with_doc.exit_code == 0, with_doc.output
    assert f"Created agent {copy}" in with_doc.stdout


def test_tools_and_approvals_from_the_cli_over_the_api(live: LiveServer, tmp_path: Path) -> None:
    """tool add / list AGENT / attach, an irreversible call waiting, `approvals deny`
    printing "denied", and the audit log: all through the HTTP API with --url."""
    from tests.server.test_tools_api import LAUNCH, add_tooluser

    add_tooluser(live)
    remote = ("--url", live.url, "--key", live.users["alice"])
    agent = unique("cli-tools")
    assert run(*remote, "agent", "create", agent, "--model", "scripted/tooluser").exit_code == 0
    name = unique("launch").replace("-", "_")
    source = tmp_path / "launch.py"
    source.write_text(LAUNCH.replace("def launch", f"def {name}"))
    added = run(*remote, "tool", "add", str(source))
    if added.exit_code == 1 and "sandbox" in added.stderr:
        pytest.skip("no OS sandbox here")
    assert added.exit_code == 0 and "irreversible" in added.stdout, added.output
    assert run(*remote, "tool", "attach", agent, name).exit_code == 0
    assert name in run(*remote, "tool", "list", agent).stdout  # the agent, positionally
    sent = run(*remote, "send", agent, f'call {name} {{"target": "moon"}}', "--json")
    assert json.loads(sent.stdout)["stop_reason"] == "waiting_approval"
    listed = json.loads(run(*remote, "approvals", "--json").stdout)
    (pending,) = [a for a in listed if a["tool"] == name]
    denied = run(*remote, "approvals", "deny", pending["id"], "-r", "not today")
    assert denied.exit_code == 0, denied.output
    assert f"denied {pending['id']}" in denied.stdout and "denyd" not in denied.stdout
    again = run(*remote, "approvals", "approve", pending["id"])
    assert again.exit_code == 1 and again.stderr.startswith("error: ")
    audit = json.loads(run(*remote, "audit", "--agent", agent, "--json").stdout)
    assert any(e["target"] == name for e in audit)


def test_ps_lists_the_nodes_scoped_to_the_caller(tmp_path: Path) -> None:
    """`llmos ps` shows every node on the database (a table, and in --json), with the
    caller's own agents a node holds by name and only a count of everyone's."""
    server = LiveServer(tmp_path)
    try:
        keys = {}
        with server.client("alice") as alice, server.client("bob") as bob:
            ids = {}
            for who, client in (("alice", alice), ("bob", bob)):
                r = client.post(
                    "/v1/agents", json={"name": f"{who}-secret", "model": "scripted/echo"}
                )
                assert r.status_code == 201, r.text
                ids[who] = r.json()["id"]
            keys = dict(server.users)
        other, gone = NodeRegistry("kernel-other", 1.0), NodeRegistry("kernel-gone", 1.0)
        with server.kernel.db.begin() as conn:
            other.beat(conn, [ids["alice"], ids["bob"]], images=2)
            gone.beat(conn, [ids["bob"]], images=1)
            conn.execute(
                update(nodes).where(nodes.c.id == "kernel-gone").values(last_seen=time.time() - 60)
            )
        remote = ("--url", server.url, "--key", keys["alice"])
        listed = json.loads(run("ps", *remote, "--json").stdout)["nodes"]
        by_id = {n["id"]: n for n in listed}
        assert by_id["kernel-other"]["agents"] == ["alice-secret"]
        assert by_id["kernel-other"]["agents_held"] == 2
        assert by_id["kernel-gone"]["status"] == "stale" and by_id["kernel-gone"]["agents"] == []
        assert sum(n["this"] for n in listed) == 1
        table = run("ps", *remote)
        assert table.exit_code == 0, table.output
        text = table.stdout
        assert "nodes" in text and "kernel-other" in text and "kernel-gone" in text
        assert "alice-secret" in text and "stale" in text
        assert "bob-secret" not in text and ids["bob"] not in text
        bobs = run("ps", "--url", server.url, "--key", keys["bob"])
        assert "bob-secret" in bobs.stdout and "alice-secret" not in bobs.stdout
    finally:
        server.stop()
