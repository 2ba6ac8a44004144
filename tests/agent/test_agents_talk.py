"""Agents that talk: grant-checked, audited, hop-limited agent-to-agent messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.llm.replay import ScriptedCore, call

ASK = "send_message_to_agent_and_wait_for_reply"
TELL = "send_message_to_agent"


def result_of(req: ChatRequest) -> str:
    return json.loads(req.messages[-1].content or "{}")["message"]


def agent_policy(
    other: str, fn: str, on_event: Callable[[str], ChatResponse] | None = None
) -> Callable[[ChatRequest], ChatResponse]:
    """Messages `other` (by `fn`) on any event; then tells its user the call's result."""

    def policy(req: ChatRequest) -> ChatResponse:
        last = req.messages[-1]
        if last.role == "tool":
            return call("send_message", message=f"result: {result_of(req)}")
        text = last.content or ""
        if on_event is not None:
            reply = on_event(text)
            if reply is not None:
                return reply
        return call(fn, agent_name=other, message=f"ping from a turn on: {text[:40]}",
                    request_heartbeat=True)  # fmt: skip

    return policy


async def make_agents(
    kernel: Kernel, policies: dict[str, Callable[[ChatRequest], ChatResponse]]
) -> None:
    for name, policy in policies.items():
        model = f"scripted/{name.lower()}"
        kernel.add_core(ScriptedCore(policy, name=model), model)
        await kernel.create_agent(
            name, model=model, embedder="test/hash", settings={"agent_tools": True}
        )


def audit_rows(kernel: Kernel, decision: str) -> list[dict]:
    return [r for r in kernel.audit() if r["syscall"] == "agent" and r["decision"] == decision]


async def test_round_trip_a_asks_b_and_gets_its_reply(kernel: Kernel) -> None:
    def b_answers(text: str) -> ChatResponse:
        assert text.startswith("[message from agent A (hop 1 of 3)]")
        return call("send_message", message="The capital is Paris.")

    await make_agents(kernel, {"A": agent_policy("B", ASK), "B": agent_policy("A", ASK, b_answers)})
    kernel.grant("A", "agent", "B")
    specs = {s.name for s in kernel.tool_specs(kernel.image("A"))}
    assert {ASK, TELL} <= specs

    turn = await asyncio.wait_for(kernel.send("A", "What is the capital of France?"), 10)
    assert turn.reply == "result: B replied: The capital is Paris."
    b_messages = [m.content or "" for m in kernel.messages("B")]
    assert any("[message from agent A" in m for m in b_messages)
    (allowed,) = audit_rows(kernel, "allowed")
    assert allowed["target"] == "B" and allowed["agent"] == "A"


async def test_without_a_grant_the_call_is_denied_and_audited(kernel: Kernel) -> None:
    await make_agents(kernel, {"A": agent_policy("B", TELL), "B": agent_policy("A", TELL)})
    turn = await asyncio.wait_for(kernel.send("A", "hello"), 10)
    assert "permission denied" in turn.reply
    (denied,) = audit_rows(kernel, "denied")
    assert denied["target"] == "B" and denied["agent"] == "A"
    assert kernel.messages("B") == []  # nothing reached B

    # another owner's agent of that name is not reachable even with a grant to "*"
    kernel.grant("A", "agent", "*")
    core = ScriptedCore(agent_policy("A", TELL), name="scripted/bob")
    kernel.add_core(core, "scripted/bob")
    await kernel.create_agent("C", model="scripted/bob", embedder="test/hash", owner="bob")
    await make_agents(kernel, {"D": agent_policy("C", TELL)})
    kernel.grant("D", "agent", "*")
    turn = await asyncio.wait_for(kernel.send("D", "hello"), 10)
    assert "there is no agent named 'C'" in turn.reply


async def test_agent_functions_are_offered_only_when_enabled(kernel: Kernel) -> None:
    core = ScriptedCore(agent_policy("B", TELL), name="scripted/plain")
    kernel.add_core(core, "scripted/plain")
    await kernel.create_agent("plain", model="scripted/plain", embedder="test/hash")
    specs = {s.name for s in kernel.tool_specs(kernel.image("plain"))}
    assert TELL not in specs and ASK not in specs
    turn = await asyncio.wait_for(kernel.send("plain", "hi"), 10)
    assert turn.reply.startswith("result: unknown function 'send_message_to_agent'")


async def test_hop_limit_stops_a_ping_pong(kernel: Kernel) -> None:
    await make_agents(kernel, {"A": agent_policy("B", TELL), "B": agent_policy("A", TELL)})
    kernel.grant("A", "agent", "B")
    kernel.grant("B", "agent", "A")

    turn = await asyncio.wait_for(kernel.send("A", "start"), 10)
    assert turn.reply.startswith("result: Delivered to B")
    await kernel.settle_agent_messages(timeout=10)

    # A→B (hop 1), B→A (2), A→B (3); B's message back would be hop 4: refused
    assert len(audit_rows(kernel, "allowed")) == 3
    (stopped,) = audit_rows(kernel, "failed")
    assert stopped["agent"] == "B" and "hop limit" in stopped["detail"]
    # B was told why, as its call's failed result
    refusals = [m for m in kernel.messages("B") if "limit of 3 hops" in (m.content or "")]
    assert len(refusals) == 1 and refusals[0].role == "tool"


async def test_a_waits_for_b_while_b_asks_a_ends_cleanly(kernel: Kernel) -> None:
    await make_agents(kernel, {"A": agent_policy("B", ASK), "B": agent_policy("A", ASK)})
    kernel.grant("A", "agent", "B")
    kernel.grant("B", "agent", "A")

    # B's question to A would wait on A's lock, held by A's turn waiting for
    # B: the kernel refuses it, B replies with that, and A's turn completes.
    turn = await asyncio.wait_for(kernel.send("A", "start"), 10)
    assert turn.stop_reason == "end_turn"
    assert turn.reply.startswith("result: B replied: result: A is waiting for your reply")
    (refused,) = audit_rows(kernel, "failed")
    assert refused["agent"] == "B" and refused["detail"] == "would deadlock"
    await kernel.settle_agent_messages(timeout=10)
    assert not kernel.messenger.waits_for


async def test_a_reply_that_never_comes_times_out(kernel: Kernel) -> None:
    release = asyncio.Event()

    async def slow(req: ChatRequest) -> ChatResponse:
        await release.wait()
        return call("send_message", message="late")

    await make_agents(kernel, {"A": agent_policy("B", ASK)})
    kernel.add_core(ScriptedCore(slow, name="scripted/slow"), "scripted/slow")
    await kernel.create_agent("B", model="scripted/slow", embedder="test/hash")
    kernel.grant("A", "agent", "B")
    kernel.messenger.reply_timeout = 0.2
    turn = await asyncio.wait_for(kernel.send("A", "start"), 10)
    assert "did not reply within 0.2 s" in turn.reply
    release.set()
    await kernel.settle_agent_messages(timeout=10)
    assert any(m.role == "assistant" for m in kernel.messages("B"))


async def test_messaging_yourself_is_refused(kernel: Kernel) -> None:
    await make_agents(kernel, {"A": agent_policy("A", ASK)})
    kernel.grant("A", "agent", "*")
    turn = await asyncio.wait_for(kernel.send("A", "hi"), 10)
    assert "that agent is you" in turn.reply


async def test_a_message_too_long_for_the_target_is_refused(kernel: Kernel) -> None:
    def huge(req: ChatRequest) -> ChatResponse:
        if req.messages[-1].role == "tool":
            return call("send_message", message=f"result: {result_of(req)}")
        return call(TELL, agent_name="B", message="word " * 8_000, request_heartbeat=True)

    # A's window is large enough for the message; B's (8192 tokens) is not
    kernel.add_core(ScriptedCore(huge, name="scripted/big", context_window=131072), "scripted/big")
    await kernel.create_agent(
        "A", model="scripted/big", embedder="test/hash", settings={"agent_tools": True}
    )
    await make_agents(kernel, {"B": agent_policy("A", TELL)})
    kernel.grant("A", "agent", "B")
    turn = await asyncio.wait_for(kernel.send("A", "go"), 10)
    assert "Send a shorter message" in turn.reply
    assert kernel.messages("B") == []
