"""A waiting agent call (`send_message_to_agent_and_wait_for_reply`) when nodes share the
database: the target's turn runs on the node that runs the target, and a cycle of waits
through two nodes (each agent's turn running on its own node, each asking the other) is
refused at once instead of both waiting until they time out.

Two started `Kernel` objects on one database play two nodes; each has its own scripted
core, whose replies say which node ran the turn.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.llm.replay import ScriptedCore, call
from tests.conftest import HashEmbedder, both_engines

engine = both_engines()
ASK = "send_message_to_agent_and_wait_for_reply"


def policy(node: str, entered: dict[str, asyncio.Event]):
    async def respond(req: ChatRequest) -> ChatResponse:
        last = req.messages[-1]
        if last.role == "tool":
            result = json.loads(last.content or "{}").get("message", "")
            return call("send_message", message=f"{node}: {result}")
        said = last.content or ""
        if said.startswith("[message from agent"):
            return call("send_message", message=f"{node} saw it")
        if said.startswith("ask "):  # "ask OTHER as ME[ together]"
            _, other, _, me, *together = said.split()
            entered[me].set()
            if together:  # both turns are running before either asks
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in entered.values())), 10)
            return call(ASK, agent_name=other, message="ping", request_heartbeat=True)
        return call("send_message", message=f"{node} hello")

    return respond


@pytest.fixture
async def nodes(
    home: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Kernel, Kernel]]:
    # PostgreSQL: passes are far apart, so only a NOTIFY explains a quick delivery.
    monkeypatch.setenv("LLMOS_PICKUP_INTERVAL", "30" if engine == "postgresql" else "0.2")
    entered = {"al": asyncio.Event(), "cy": asyncio.Event()}
    kernels = []
    for name in ("A", "B"):
        k = Kernel.open(home, embedders={"test/hash": HashEmbedder()}, shared=True)
        k.add_core(ScriptedCore(policy(name, entered), name="scripted/p"))
        kernels.append(k)
    a, b = kernels
    async with a, b:
        for name in ("cy", "al"):
            await a.create_agent(
                name, model="scripted/p", embedder="test/hash", settings={"agent_tools": True}
            )
        a.grant("al", "agent", "cy")
        a.grant("cy", "agent", "al")
        assert (await a.send("cy", "hi")).reply == "A hello"  # cy runs on A
        assert (await b.send("al", "hi")).reply == "B hello"  # al runs on B
        for k in (a, b):
            k.messenger.reply_timeout = 20.0
            k.pickup.beat()
        yield a, b


async def test_a_waiting_call_runs_the_targets_turn_where_the_target_runs(
    nodes: tuple[Kernel, Kernel],
) -> None:
    a, b = nodes
    turn = await asyncio.wait_for(b.send("al", "ask cy as al"), 15)
    assert turn.reply == "B: cy replied: A saw it"  # al's turn on B, cy's on A
    assert b.messenger.handed_over == 1
    with a.db.connect() as conn:  # nothing left behind: no edge, no row
        assert conn.exec_driver_sql("SELECT count(*) FROM pending_messages").scalar() == 0


async def test_a_cycle_of_waits_across_two_nodes_is_refused_at_once(
    nodes: tuple[Kernel, Kernel],
) -> None:
    a, b = nodes
    t0 = time.monotonic()
    cy_turn, al_turn = await asyncio.wait_for(
        asyncio.gather(
            a.send("cy", "ask al as cy together"), b.send("al", "ask cy as al together")
        ),
        30,
    )
    assert time.monotonic() - t0 < 15  # well before the 20 s reply timeout
    replies = sorted([cy_turn.reply, al_turn.reply])
    refused = [r for r in replies if "is waiting for your reply" in r]
    answered = [r for r in replies if "replied:" in r]
    assert len(refused) == 1 and len(answered) == 1, replies
    # the refused agent finished its turn, then answered the other's question on its node
    assert answered[0] in ("A: al replied: B saw it", "B: cy replied: A saw it")
    failed = [r for r in a.audit() if r["decision"] == "failed"]  # one table for both
    assert [r["detail"] for r in failed] == ["would deadlock"]
