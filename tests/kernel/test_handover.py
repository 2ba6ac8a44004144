"""Work for an agent reaches the node that runs it: an agent message accepted by
another kernel, and an owner's decision taken through another kernel, run the
agent's turn on the kernel that last ran it (woken by NOTIFY on PostgreSQL, by
polling on SQLite), or on the accepting kernel when that one is gone.

Two started `Kernel` objects on one database play two nodes; each has its own
scripted core, whose replies say which node ran the turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.kernel.messaging import HandoverTimeout
from llmos.llm.replay import ScriptedCore, call
from tests.conftest import HashEmbedder, both_engines

engine = both_engines()


def policy(node: str):
    def respond(req: ChatRequest) -> ChatResponse:
        last = req.messages[-1]
        if last.role == "tool":
            return call("send_message", message=f"{node} done")
        said = last.content or ""
        if said.startswith("tell cy"):
            return call("send_message_to_agent", agent_name="cy", message="ping",
                        request_heartbeat=True)  # fmt: skip
        return call("send_message", message=f"{node} saw: {said[:60]}")

    return respond


def node(home: Path, name: str) -> Kernel:
    kernel = Kernel.open(home, embedders={"test/hash": HashEmbedder()}, shared=True)
    kernel.add_core(ScriptedCore(policy(name), name="scripted/p"))
    return kernel


@pytest.fixture
async def nodes(
    home: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Kernel, Kernel]]:
    # PostgreSQL: passes are far apart, so only a NOTIFY explains a quick delivery.
    monkeypatch.setenv("LLMOS_PICKUP_INTERVAL", "30" if engine == "postgresql" else "0.2")
    a, b = node(home, "A"), node(home, "B")
    async with a, b:
        for name in ("cy", "al"):
            await a.create_agent(
                name, model="scripted/p", embedder="test/hash", settings={"agent_tools": True}
            )
        a.grant("al", "agent", "cy")
        assert (await a.send("cy", "hello")).reply == "A saw: hello"  # cy runs on A
        a.pickup.beat()
        b.pickup.beat()
        yield a, b


async def _until(check, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def cy_replies(kernel: Kernel) -> list[str]:
    return [
        c.arguments
        for m in reversed(kernel.messages("cy", limit=100))
        for c in m.tool_calls
        if c.name == "send_message"
    ]


async def test_an_agent_message_accepted_elsewhere_runs_where_the_agent_runs(
    nodes: tuple[Kernel, Kernel], engine: str
) -> None:
    a, b = nodes
    turn = await b.send("al", "tell cy")  # al's turn runs on B; cy's on A
    assert turn.reply == "B done"
    assert b.messenger.handed_over == 1
    await _until(lambda: len(cy_replies(a)) == 2)
    assert "A saw: [message from agent al" in cy_replies(a)[1]
    assert b.messenger.delivering == set()  # B never ran it
    if engine == "postgresql":
        assert a.pickup.notified >= 1
    await asyncio.sleep(0.5)
    assert len(cy_replies(a)) == 2  # once


def _approval(kernel: Kernel, call_id: str) -> str:
    agent_id = kernel.get_agent("cy")["id"]
    return kernel.approval_store.create("local", agent_id, "gone_tool", "{}", call_id)


async def test_a_decision_through_another_node_resumes_the_agent_where_it_runs(
    nodes: tuple[Kernel, Kernel],
) -> None:
    a, b = nodes
    approval = _approval(a, "call-1")
    turn = await b.decide(approval, True)
    assert turn.reply.startswith("A saw: [system event] Your owner approved")
    assert turn.as_dict()["agent"] == "cy" and turn.stop_reason == "end_turn"
    assert b.messenger.handed_over == 1
    record = b.approval(approval)
    assert record["status"] == "approved" and record["delivered_at"] is not None
    with b.db.connect() as conn:
        from sqlalchemy import text

        assert conn.execute(text("SELECT count(*) FROM pending_messages")).scalar_one() == 0


async def test_a_decision_runs_on_the_deciding_node_once_the_agents_node_is_gone(
    nodes: tuple[Kernel, Kernel],
) -> None:
    a, b = nodes
    approval = _approval(a, "call-2")
    await a.close()  # leaves the registry: not live any more
    turn = await b.decide(approval, False, "not now")
    assert turn.reply.startswith("B saw: [system event] Your owner denied")
    assert b.messenger.handed_over == 0
    assert b.approval(approval)["delivered_at"] is not None


async def test_a_handover_nobody_finishes_times_out_clearly_and_stays_pending(
    nodes: tuple[Kernel, Kernel],
) -> None:
    a, b = nodes
    await a.pickup.close()  # A stops picking up work but still looks live
    a.pickup.beat()
    image = b.image("cy")
    with pytest.raises(HandoverTimeout, match="stays pending"):
        await b.messenger.deliver_decision(image, "[system event] hello", "appr-x", timeout=0.3)
    assert len(b.messenger.pending.all()) == 1


async def test_a_message_that_cannot_be_delivered_here_is_kept_and_retried_later(
    home: Path,
) -> None:
    a = node(home, "A")
    await a.create_agent("cy", model="scripted/p", embedder="test/hash")
    pid = await a.messenger.pending.add(a.image("cy"), "hello", 1)
    await a.close()
    b = Kernel.open(home, embedders={"test/hash": HashEmbedder()}, shared=True)
    try:  # b has no core for cy's model
        assert b.messenger.resume_pending() == 1
        await b.settle_agent_messages(10)
        assert b.messenger.backoff[pid][0] == 1
        assert b.messenger.resume_pending() == 0  # not again at once: later, then rarer
        assert [r.id for r in b.messenger.pending.all()] == [pid]  # kept, not lost
    finally:
        await b.close()
