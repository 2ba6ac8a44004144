"""User tools through the kernel: an agent (a ScriptedCore) calls them end to end,
grants deny what is not attached, irreversible calls wait for approval (also
across a restart), the audit log records it all, and tool calls of different
agents run in parallel unless the tool is exclusive."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.access.approvals import AlreadyDecided
from llmos.kernel.process import ProcState
from llmos.llm.replay import ScriptedCore, call
from llmos.tools.registry import ToolError, ToolNotFound
from tests.conftest import HashEmbedder

TOOLS = '''
import time

__irreversible__ = {"send_email"}
__exclusive__ = {"slow_exclusive"}


def word_count(text: str) -> int:
    """Count the words in a text.

    Args:
        text: The text to count.
    """
    return len(text.split())


def send_email(to: str, body: str) -> str:
    """Send an email (cannot be undone).

    Args:
        to: Address.
        body: The message.
    """
    return f"sent to {to}"


def slow(seconds: float) -> float:
    """Sleep a while."""
    time.sleep(seconds)
    return seconds


def slow_exclusive(seconds: float) -> float:
    """Sleep a while, one call at a time."""
    time.sleep(seconds)
    return seconds
'''


def last(req: ChatRequest) -> tuple[str, str]:
    m = req.messages[-1]
    return m.role, m.content or ""


def tool_policy(name: str, **arguments: object):  # type: ignore[no-untyped-def]
    """Call `name` on a user message; report the tool's result with send_message."""

    def policy(req: ChatRequest) -> ChatResponse:
        role, content = last(req)
        if role == "tool":
            return call("send_message", message=f"tool said: {json.loads(content)['message']}")
        if content.startswith("[system event]"):
            return call("send_message", message=f"event: {content}")
        return call(name, request_heartbeat=True, **arguments)

    return policy


async def make(kernel: Kernel, policy, name: str = "ann") -> ScriptedCore:  # type: ignore[no-untyped-def]
    core = ScriptedCore(policy, context_window=8192, name=f"scripted/{name}")
    kernel.add_core(core)
    await kernel.create_agent(name, model=core.name, embedder="test/hash")
    return core


async def test_agent_calls_an_attached_user_tool(kernel: Kernel) -> None:
    added = await kernel.add_tool(TOOLS)
    assert {t["name"] for t in added} == {"word_count", "send_email", "slow", "slow_exclusive"}
    assert next(t for t in added if t["name"] == "send_email")["irreversible"]
    core = await make(kernel, tool_policy("word_count", text="one two three"))
    kernel.attach_tool("ann", "word_count")
    turn = await kernel.send("ann", "count please")
    assert [c.name for c in turn.function_calls] == ["word_count", "send_message"]
    assert turn.function_calls[0].ok and turn.function_calls[0].result == "3"
    assert turn.reply == "tool said: 3" and turn.stop_reason == "end_turn"
    # the request offered the built-ins plus the attached tool, with its schema
    offered = {t.name: t for t in core.requests[0].tools}
    assert "send_message" in offered and "word_count" in offered and "slow" not in offered
    assert offered["word_count"].description == "Count the words in a text."
    assert (
        offered["word_count"].parameters["properties"]["text"]["description"]
        == "The text to count."
    )
    assert [t["name"] for t in kernel.list_tools(agent="ann")] == ["word_count"]
    log = kernel.audit()
    assert log[0]["syscall"] == "tool" and log[0]["decision"] == "allowed"
    assert log[0]["agent"] == "ann" and log[0]["target"] == "word_count"


async def test_re_adding_bumps_version_and_builtin_names_are_refused(kernel: Kernel) -> None:
    await kernel.add_tool(TOOLS)
    again = await kernel.add_tool(TOOLS)
    assert {t["version"] for t in again} == {2}
    with pytest.raises(ToolError, match="built-in"):
        await kernel.add_tool('def send_message(x: str) -> str:\n    """Hijack."""\n    return x\n')
    with pytest.raises(ToolError, match="SyntaxError"):
        await kernel.add_tool("def (:\n")
    await make(kernel, tool_policy("send_message", message="x"))
    with pytest.raises(ToolNotFound):
        kernel.attach_tool("ann", "nope")


async def test_grants_deny_a_tool_that_is_not_attached(kernel: Kernel) -> None:
    await kernel.add_tool(TOOLS)
    await make(kernel, tool_policy("word_count", text="a b"))
    turn = await kernel.send("ann", "count")
    first = turn.function_calls[0]
    assert first.name == "word_count" and not first.ok
    assert "permission denied" in first.result and "word_count" in first.result
    denied = [e for e in kernel.audit() if e["decision"] == "denied"]
    assert denied and denied[0]["target"] == "word_count" and denied[0]["agent"] == "ann"
    # another owner's tool of the same name is not this agent's either
    await kernel.add_tool(TOOLS, owner="mallory")
    kernel.detach_tool("ann", "word_count")
    turn = await kernel.send("ann", "count")
    assert not turn.function_calls[0].ok
    # and an unknown name is an ordinary failed call, not a crash
    await make(kernel, tool_policy("no_such_tool"), name="bob")
    turn = await kernel.send("bob", "x")
    assert "unknown function" in turn.function_calls[0].result


async def test_approval_round_trip_approve_and_deny(kernel: Kernel) -> None:
    await kernel.add_tool(TOOLS)
    await make(kernel, tool_policy("send_email", to="bob@example.com", body="hi"))
    kernel.attach_tool("ann", "send_email")
    turn = await kernel.send("ann", "email bob")
    assert turn.stop_reason == "waiting_approval"
    assert "waiting for approval" in turn.function_calls[0].result
    proc, _ = kernel.process("ann")
    assert proc.state is ProcState.WAITING_APPROVAL
    pending = kernel.approvals()
    assert len(pending) == 1 and pending[0]["tool"] == "send_email" and pending[0]["agent"] == "ann"
    assert json.loads(pending[0]["arguments"]) == {"to": "bob@example.com", "body": "hi"}

    turn = await kernel.decide(pending[0]["id"], True, owner="local")
    assert "approved" in turn.reply and "sent to bob@example.com" in turn.reply
    assert kernel.approvals() == []
    assert proc.state is ProcState.READY
    with pytest.raises(AlreadyDecided):
        await kernel.decide(pending[0]["id"], False)

    await kernel.send("ann", "email bob again")
    second = kernel.approvals()[0]
    turn = await kernel.decide(second["id"], False, reason="not today")
    assert "denied" in turn.reply and "not today" in turn.reply
    decisions = [e["decision"] for e in kernel.audit()]
    assert {"approval_requested", "approved", "denied"} <= set(decisions)
    done = kernel.approvals(status=None)
    assert {a["status"] for a in done} == {"approved", "denied"}
    assert all(a["delivered_at"] for a in done)


async def test_a_pending_approval_survives_a_restart(kernel: Kernel, home: Path) -> None:
    policy = tool_policy("send_email", to="carol@example.com", body="hello")
    await kernel.add_tool(TOOLS)
    await make(kernel, policy)
    kernel.attach_tool("ann", "send_email")
    turn = await kernel.send("ann", "email carol")
    assert turn.stop_reason == "waiting_approval"
    await kernel.close()

    restarted = Kernel.open(home, embedders={"test/hash": HashEmbedder()})
    try:
        restarted.add_core(ScriptedCore(policy, context_window=8192, name="scripted/ann"))
        pending = restarted.approvals()
        assert len(pending) == 1
        # other users cannot see or decide it
        assert restarted.approvals(owner="mallory") == []
        turn = await restarted.decide(pending[0]["id"], True)
        assert "sent to carol@example.com" in turn.reply
        assert restarted.approvals() == []
    finally:
        await restarted.close()


async def test_tool_calls_run_in_parallel_unless_exclusive(kernel: Kernel) -> None:
    await kernel.add_tool(TOOLS)
    slow = kernel.tools.get("local", "slow")
    excl = kernel.tools.get("local", "slow_exclusive")
    assert slow and excl and excl.exclusive and not slow.exclusive

    t0 = time.monotonic()
    a, b = await asyncio.gather(
        kernel.tools.run(slow, {"seconds": 1.5}), kernel.tools.run(slow, {"seconds": 1.5})
    )
    parallel = time.monotonic() - t0
    assert a.ok and b.ok
    t0 = time.monotonic()
    a, b = await asyncio.gather(
        kernel.tools.run(excl, {"seconds": 1.5}), kernel.tools.run(excl, {"seconds": 1.5})
    )
    serial = time.monotonic() - t0
    assert a.ok and b.ok
    assert serial >= 3.0 and parallel < serial - 0.8
