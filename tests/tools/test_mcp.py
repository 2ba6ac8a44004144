"""MCP servers' tools end to end, on a real stdio server (`mcp_server.py`, FastMCP).

Registered, their tools listed with schemas and attached, called by an agent
(a ScriptedCore); the server killed mid-session is restarted by the next
call; a command that does not exist, or a server that never answers, is a
clear error within the timeouts. Each server start is a Python process
importing the SDK (~2 s on 2 cores), so the tests start as few as they can.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.llm.replay import ScriptedCore, call
from llmos.tools.mcp import McpServerError, McpServerNotFound, tool_name
from llmos.tools.registry import ToolNotFound

SERVER = [str(Path(__file__).with_name("mcp_server.py"))]
ARITH_TOOLS = ["arith__add", "arith__fail", "arith__sleep", "arith__whoami"]


def calls(name: str, **arguments: object):  # type: ignore[no-untyped-def]
    """A policy: on the user's message call `name`; then say what the tool returned."""

    def policy(req: ChatRequest) -> ChatResponse:
        m = req.messages[-1]
        if m.role == "tool":
            return call("send_message", message=f"tool said: {json.loads(m.content)['message']}")
        return call(name, request_heartbeat=True, **arguments)

    return policy


async def agent(kernel: Kernel, name: str, policy) -> ScriptedCore:  # type: ignore[no-untyped-def]
    core = ScriptedCore(policy, name=f"scripted/{name}")
    kernel.add_core(core)
    await kernel.create_agent(name, model=core.name, embedder="test/hash")
    return core


def test_tool_names_are_valid_function_names() -> None:
    assert tool_name("fs", "read_file") == "fs__read_file"
    assert tool_name("web", "search.v2/query") == "web__search_v2_query"
    assert len(tool_name("s", "x" * 100)) == 64


async def test_agent_calls_an_mcp_tool_and_survives_a_killed_server(kernel: Kernel) -> None:
    kernel.mcp.call_timeout = 10
    added = await kernel.mcp.add("arith", command=sys.executable, args=SERVER)
    assert [t["name"] for t in added["tools"]] == ARITH_TOOLS
    add = added["tools"][0]
    assert add["parameters"]["properties"]["a"]["type"] == "integer"
    assert add["parameters"]["required"] == ["a", "b"]
    # they are the owner's tools, attachable like any other
    assert {"arith__add", "arith__whoami"} <= {t["name"] for t in kernel.list_tools()}
    assert [s["name"] for s in kernel.mcp.list()] == ["arith"]

    core = await agent(kernel, "ann", calls("arith__add", a=2, b=40))
    kernel.attach_tool("ann", "arith__add")
    turn = await kernel.send("ann", "add them")
    assert [c.name for c in turn.function_calls] == ["arith__add", "send_message"]
    assert turn.function_calls[0].ok and turn.reply == "tool said: 42"
    offered = {t.name: t for t in core.requests[0].tools}
    assert offered["arith__add"].description == "Add two integers."
    assert kernel.audit()[0]["target"] == "arith__add"
    assert kernel.audit()[0]["decision"] == "allowed"

    # kill the server mid-session: the next call restarts it (once) and succeeds
    first = await kernel.mcp.call("local", "arith", "whoami", {})
    assert first.ok
    os.kill(int(first.result), signal.SIGKILL)
    await asyncio.sleep(0.3)  # the event loop runs on while the agent waits
    started = time.monotonic()
    again = await kernel.mcp.call("local", "arith", "whoami", {})
    if not again.ok:
        # the call raced the server's death: a clear failure, fast; the next restarts it
        assert "connection closed" in again.error, again.error
        assert time.monotonic() - started < 5
        again = await kernel.mcp.call("local", "arith", "whoami", {})
    assert again.ok, again.error
    assert again.result != first.result
    turn = await kernel.send("ann", "add again")
    assert turn.reply == "tool said: 42"

    # a tool error is a failed result, not an exception
    bad = await kernel.mcp.call("local", "arith", "add", {"a": "not a number"})
    assert not bad.ok and bad.error

    await kernel.mcp.remove("arith")
    assert kernel.mcp.list() == []
    assert kernel.list_tools(agent="ann") == []
    with pytest.raises(McpServerNotFound):
        await kernel.mcp.remove("arith")
    with pytest.raises(ToolNotFound):
        kernel.attach_tool("ann", "arith__add")


async def test_a_missing_command_is_a_clear_error(kernel: Kernel) -> None:
    with pytest.raises(McpServerError, match=r"cannot start MCP server 'gone'.*no-such-mcp"):
        await kernel.mcp.add("gone", command="/nonexistent/no-such-mcp-server")
    assert kernel.mcp.list() == []


async def test_a_silent_server_times_out(kernel: Kernel) -> None:
    kernel.mcp.start_timeout = 2
    started = time.monotonic()
    with pytest.raises(McpServerError, match="did not start within 2s"):
        await kernel.mcp.add(
            "mute", command=sys.executable, args=["-c", "import time; time.sleep(60)"]
        )
    assert time.monotonic() - started < 10


async def test_a_server_that_cannot_start_later_is_a_failed_call(kernel: Kernel) -> None:
    kernel.mcp.start_timeout = 10
    await kernel.mcp.add("arith", command=sys.executable, args=SERVER)
    # the server's command goes away (e.g. uninstalled): calls fail, clearly and fast
    kernel.mcp._sessions.clear()
    from sqlalchemy import update

    from llmos.storage.models import mcp_servers

    with kernel.db.begin() as conn:
        conn.execute(update(mcp_servers).values(command="/nonexistent/mcp"))
    await agent(kernel, "bo", calls("arith__add", a=1, b=2))
    kernel.attach_tool("bo", "arith__add")
    turn = await kernel.send("bo", "add")
    result = turn.function_calls[0]
    assert not result.ok and "cannot start MCP server 'arith'" in result.result


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("a__b", {"command": "x"}),
        ("", {"command": "x"}),
        ("ok", {}),
        ("ok", {"command": "x", "url": "http://h"}),
        ("ok", {"url": "ftp://h"}),
    ],
)
async def test_bad_registrations(kernel: Kernel, name: str, kwargs: dict) -> None:
    with pytest.raises(McpServerError):
        await kernel.mcp.add(name, **kwargs)


async def test_unreachable_http_server(kernel: Kernel) -> None:
    kernel.mcp.start_timeout = 5
    with pytest.raises(McpServerError, match=r"cannot start|did not start"):
        await kernel.mcp.add("web", url="http://127.0.0.1:9/mcp")


def test_cli_add_list_remove(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmos.cli.main import app

    runner = CliRunner()
    env = {"NO_COLOR": "1", "COLUMNS": "200"}

    def run(*args: str) -> tuple[int, str]:
        r = runner.invoke(app, ["--home", str(tmp_path), *args], env=env)
        return r.exit_code, r.stdout + r.stderr

    code, text = run("mcp", "add", "arith", "--", sys.executable, *SERVER)
    assert code == 0, text
    assert "arith__add" in text and "arith__whoami" in text
    code, text = run("mcp", "list", "--json")
    listed = json.loads(text)
    assert listed[0]["name"] == "arith" and listed[0]["transport"] == "stdio"
    assert [t["name"] for t in listed[0]["tools"]] == ARITH_TOOLS
    code, text = run("mcp", "add", "gone", "--", "/nonexistent/no-such-mcp-server")
    assert code == 1 and "cannot start MCP server 'gone'" in text
    code, text = run("mcp", "add", "both", "--url", "http://x", "--", "cmd")
    assert code == 1 and "not both" in text
    assert run("mcp", "remove", "arith")[0] == 0
    code, text = run("mcp", "remove", "arith")
    assert code == 1 and "no MCP server named 'arith'" in text
    assert "no MCP servers" in run("mcp", "list")[1]


async def test_an_irreversible_servers_tools_wait_for_approval(kernel: Kernel) -> None:
    """`irreversible=True` (the CLI's --irreversible) marks every tool of the server:
    each call waits for the owner; registered again without it, calls run at once."""
    kernel.mcp.call_timeout = 10
    added = await kernel.mcp.add("arith", command=sys.executable, args=SERVER, irreversible=True)
    assert [t["irreversible"] for t in added["tools"]] == [True] * len(ARITH_TOOLS)
    assert all(t["irreversible"] for t in kernel.list_tools() if t["name"] in ARITH_TOOLS)

    def policy(req: ChatRequest) -> ChatResponse:
        m = req.messages[-1]
        if m.role == "tool":
            return call("send_message", message=f"tool said: {json.loads(m.content)['message']}")
        if (m.content or "").startswith("[system event]"):
            return call("send_message", message=m.content)
        return call("arith__add", a=2, b=40, request_heartbeat=True)

    await agent(kernel, "ann", policy)
    kernel.attach_tool("ann", "arith__add")
    turn = await kernel.send("ann", "add them")
    assert turn.stop_reason == "waiting_approval"
    assert not turn.function_calls[0].ok
    assert "waiting for approval" in turn.function_calls[0].result
    pending = kernel.approvals()
    assert [(p["tool"], p["agent"]) for p in pending] == [("arith__add", "ann")]
    turn = await kernel.decide(pending[0]["id"], True)
    assert "approved" in turn.reply and "Result: 42" in turn.reply, turn.reply
    assert kernel.approvals() == []

    await kernel.mcp.add("arith", command=sys.executable, args=SERVER)
    assert not any(t["irreversible"] for t in kernel.mcp.describe("local", "arith")["tools"])
    turn = await kernel.send("ann", "add again")
    assert turn.stop_reason == "end_turn" and turn.reply == "tool said: 42"
    assert kernel.approvals() == []


def test_cli_add_irreversible(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmos.cli.main import app

    runner = CliRunner()
    env = {"NO_COLOR": "1", "COLUMNS": "200"}
    base = ["--home", str(tmp_path)]
    r = runner.invoke(
        app,
        [*base, "mcp", "add", "arith", "--irreversible", "--", sys.executable, *SERVER],
        env=env,
    )
    assert r.exit_code == 0, r.stdout + r.stderr
    listed = json.loads(runner.invoke(app, [*base, "mcp", "list", "--json"], env=env).stdout)
    assert [(t["name"], t["irreversible"]) for t in listed[0]["tools"]] == [
        (name, True) for name in ARITH_TOOLS
    ]
