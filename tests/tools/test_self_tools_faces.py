"""The faces of agent-written tools and agent settings: the CLI shows a pending tool's
source (`llmos approvals`, `approvals show`), lists versions and rolls back, lists
the built-in tools, and sets any agent setting (`llmos agent set`); over HTTP,
`PATCH /v1/agents/{a}` sets the switches, a scripted agent writes a tool that its
owner approves, versions and rollback are routes, and another user sees none of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.cli.main import app
from llmos.llm.replay import ScriptedCore, call, raw_call
from tests.conftest import HashEmbedder
from tests.server.conftest import LiveServer, unique

SOURCE = '''def triple(x: int) -> int:
    """Triple a number.

    Args:
        x: A number.
    """
    return 3 * x
'''
PROPOSAL = {"name": "triple", "source": SOURCE, "description": "x3", "examples": [{"x": 2}]}


def author(req: ChatRequest) -> ChatResponse:
    """Writes `triple` when asked; calls it once told it is approved; else reports."""
    m = req.messages[-1]
    text = m.content or ""
    if m.role == "tool":
        return call("send_message", message=f"{m.name}: {json.loads(text)['message']}")
    if "approved your tool" in text:
        return call("triple", request_heartbeat=True, x=5)
    if "write" in text:
        return raw_call("create_tool", json.dumps({**PROPOSAL, "request_heartbeat": True}))
    return call("send_message", message="ok")


@pytest.fixture
def cli_home(home: Path) -> Iterator[tuple[CliRunner, str]]:
    async def setup() -> str:
        kernel = Kernel.open(home, embedders={"test/hash": HashEmbedder()})
        try:
            kernel.add_core(ScriptedCore(author, name="scripted/author"))
            await kernel.create_agent("ann", model="scripted/author", embedder="test/hash")
            await kernel.update_agent("ann", settings={"self_tools": True})
            turn = await kernel.send("ann", "write a tool")
            assert turn.stop_reason == "waiting_approval"
            return kernel.approvals()[0]["id"]
        finally:
            await kernel.close()

    import asyncio

    approval = asyncio.run(setup())
    yield CliRunner(env={"COLUMNS": "250"}), approval


def test_cli_shows_the_pending_tool_with_its_source(cli_home: tuple[CliRunner, str]) -> None:
    runner, approval = cli_home
    listed = runner.invoke(app, ["approvals"], catch_exceptions=False)
    assert listed.exit_code == 0 and "new tool triple" in listed.output
    shown = runner.invoke(app, ["approvals", "show", approval], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert "return 3 * x" in shown.output and 'triple({"x": 2}) -> 6' in shown.output
    missing = runner.invoke(app, ["approvals", "show"])
    assert missing.exit_code == 1 and "needs an approval id" in missing.output


def test_cli_agent_set_changes_any_setting_in_one_validated_place(
    cli_home: tuple[CliRunner, str],
) -> None:
    runner, _ = cli_home
    r = runner.invoke(app, ["agent", "set", "ann", "agent_tools=true", "max_steps=5"])
    assert r.exit_code == 0, r.output
    assert "agent_tools=True" in r.output and "max_steps=5" in r.output
    r = runner.invoke(app, ["agent", "set", "ann", "max_steps=", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["max_steps"] == 10  # the default
    for bad, why in [
        (["nonsense=1"], "unknown setting 'nonsense'"),
        (["max_steps=lots"], "max_steps"),
        (["self_tools=maybe"], "self_tools"),
        (["flush_target=0.95"], "flush_target must be below flush_fraction"),
        (["max_steps"], "want KEY=VALUE"),
    ]:
        r = runner.invoke(app, ["agent", "set", "ann", *bad])
        assert r.exit_code == 1 and why in r.output, (bad, r.output)
    # nothing of a refused command was applied
    r = runner.invoke(app, ["agent", "set", "ann", "priority=3", "max_steps=0"])
    assert r.exit_code == 1
    shown = runner.invoke(app, ["agent", "show", "ann", "--json"])
    assert json.loads(shown.output)["settings"]["priority"] == 0  # still the default


def test_cli_tool_versions_rollback_and_builtins(
    cli_home: tuple[CliRunner, str], home: Path
) -> None:
    runner, _ = cli_home
    r = runner.invoke(app, ["tool", "list", "--builtin", "--json"])
    assert [t["name"] for t in json.loads(r.output)] == [
        "calculate",
        "current_time",
        "fetch_url",
        "run_python",
    ]
    assert runner.invoke(app, ["tool", "attach", "ann", "run_python"]).exit_code == 0
    one = home / "triple.py"
    one.write_text(SOURCE)
    two = home / "triple2.py"
    two.write_text(SOURCE.replace("3 * x", "x + x + x"))
    assert runner.invoke(app, ["tool", "add", str(one)]).exit_code == 0
    assert runner.invoke(app, ["tool", "add", str(two)]).exit_code == 0
    r = runner.invoke(app, ["tool", "versions", "triple", "--json"])
    versions = json.loads(r.output)
    assert [(v["version"], v["current"], v["author"]) for v in versions] == [
        (1, False, "user:local"),
        (2, True, "user:local"),
    ]
    r = runner.invoke(app, ["tool", "rollback", "triple", "1"])
    assert r.exit_code == 0 and "version 1 again" in r.output
    r = runner.invoke(app, ["tool", "versions", "triple", "--source"])
    assert "3 * x" in r.output and "x + x + x" in r.output
    r = runner.invoke(app, ["tool", "rollback", "triple", "9"])
    assert r.exit_code == 1 and "no version 9" in r.output


# --- over HTTP ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("selftools"))
    live.kernel.add_core(ScriptedCore(author, name="scripted/author"), model="scripted/author")
    yield live
    live.stop()


def test_http_settings_agent_writes_tool_owner_approves_and_rolls_back(
    server: LiveServer,
) -> None:
    alice: httpx.Client = server.client("alice")
    bob: httpx.Client = server.client("bob")
    name = unique()
    r = alice.post("/v1/agents", json={"name": name, "model": "scripted/author"})
    assert r.status_code == 201, r.text
    r = alice.patch(f"/v1/agents/{name}", json={"settings": {"self_tools": "maybe"}})
    assert r.status_code == 422
    r = alice.patch(f"/v1/agents/{name}", json={"settings": {"self_tools": True}})
    assert r.status_code == 200 and r.json()["settings"]["self_tools"] is True

    r = alice.post(f"/v1/agents/{name}/messages", json={"text": "write a tool"})
    assert r.status_code == 200, r.text
    pending = alice.get("/v1/approvals").json()["approvals"]
    mine = [a for a in pending if a["agent"] == name]
    assert len(mine) == 1 and json.loads(mine[0]["arguments"])["source"] == SOURCE
    assert [a for a in bob.get("/v1/approvals").json()["approvals"] if a["agent"] == name] == []
    assert bob.post(f"/v1/approvals/{mine[0]['id']}", json={"approve": True}).status_code == 404

    r = alice.post(f"/v1/approvals/{mine[0]['id']}", json={"approve": True})
    assert r.status_code == 200, r.text
    calls = r.json()["turn"]["function_calls"]
    assert calls[0]["name"] == "triple" and calls[0]["result"] == "15"

    r = alice.get("/v1/tools/triple/versions")
    assert [v["author"] for v in r.json()["versions"]] == [f"agent:{name}"]
    assert bob.get("/v1/tools/triple/versions").status_code == 404
    assert alice.post("/v1/tools", json={"source": SOURCE.replace("3 * x", "4 * x")}).is_success
    r = alice.post("/v1/tools/triple/rollback", json={"version": 1})
    assert r.status_code == 200 and r.json()["version"] == 1 and "3 * x" in r.json()["source"]
    assert bob.post("/v1/tools/triple/rollback", json={"version": 1}).status_code == 404
    assert alice.post("/v1/tools/triple/rollback", json={"version": 0}).status_code == 422
    names = [t["name"] for t in alice.get("/v1/tools", params={"builtin": True}).json()["tools"]]
    assert names == ["calculate", "current_time", "fetch_url", "run_python"]
    r = alice.put(f"/v1/agents/{name}/tools/calculate")
    assert r.status_code == 200 and "calculate" in {t["name"] for t in r.json()["tools"]}
