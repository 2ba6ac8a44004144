"""Core memory's character limit, at its edge: exactly `limit` characters fit, one more does not.

For every way a block's text is made: the model's append and replace, a
user's set (`Kernel.update_block` and the HTTP routes run through the same
check), and the blocks an agent is created with.
"""

from __future__ import annotations

import pytest

from llmos import Kernel
from llmos.llm.replay import ScriptedCore, call
from llmos.memory.blocks import Block, CoreMemory, MemoryEditError

LIMIT = 20


def memory(value: str = "") -> CoreMemory:
    return CoreMemory([Block("human", value, LIMIT)])


def test_append_up_to_the_limit_and_not_one_more() -> None:
    mem = memory("ab")
    # "ab" + "\n" + 17 characters is exactly 20
    assert mem.append("human", "x" * 17).value == "ab\n" + "x" * 17
    mem = memory("ab")
    with pytest.raises(MemoryEditError) as err:
        mem.append("human", "x" * 18)
    assert str(err.value) == (
        "edit rejected: block 'human' would hold 21 characters, over its limit of 20 by 1; "
        "shorten the edit, or move details to archival memory with archival_memory_insert"
    )
    assert mem.get("human").value == "ab"  # a refused edit changes nothing
    # an empty block takes the content without a separator
    assert memory().append("human", "y" * LIMIT).value == "y" * LIMIT
    with pytest.raises(MemoryEditError, match="would hold 21 characters"):
        memory().append("human", "y" * (LIMIT + 1))


def test_replace_up_to_the_limit_and_not_one_more() -> None:
    mem = memory("name: Al")
    assert mem.replace("human", "Al", "A" * 14).value == "name: " + "A" * 14  # 20
    mem = memory("name: Al")
    with pytest.raises(
        MemoryEditError, match="would hold 21 characters, over its limit of 20 by 1"
    ):
        mem.replace("human", "Al", "A" * 15)
    assert mem.get("human").value == "name: Al"


def test_set_up_to_the_limit_and_not_one_more() -> None:
    mem = memory("old")
    assert mem.set("human", "z" * LIMIT).value == "z" * LIMIT
    with pytest.raises(
        MemoryEditError, match="would hold 21 characters, over its limit of 20 by 1"
    ):
        mem.set("human", "z" * (LIMIT + 1))
    assert mem.get("human").value == "z" * LIMIT


async def test_create_accepts_a_block_of_exactly_the_limit(kernel: Kernel) -> None:
    kernel.add_core(ScriptedCore(lambda req: call("send_message", message="hi")), model="s/x")
    agent = await kernel.create_agent(
        "ann",
        model="s/x",
        embedder="test/hash",
        block_limit=100,
        persona="p" * 100,
        human="h" * 100,
    )
    assert [(b["label"], len(b["value"])) for b in agent["blocks"]] == [
        ("persona", 100),
        ("human", 100),
    ]
    with pytest.raises(ValueError) as err:
        await kernel.create_agent(
            "bo", model="s/x", embedder="test/hash", block_limit=100, persona="p", human="h" * 101
        )
    assert str(err.value) == "block 'human' has 101 characters, over the limit of 100"
    with pytest.raises(ValueError, match="block 'notes' has 101 characters"):
        await kernel.create_agent(
            "bo",
            model="s/x",
            embedder="test/hash",
            block_limit=100,
            persona="p",
            human="h",
            blocks_={"notes": "n" * 101},
        )
    assert [a["name"] for a in kernel.list_agents()] == ["ann"]


async def test_the_model_edits_up_to_the_limit(kernel: Kernel) -> None:
    """Through the agent's functions: an append that lands on the limit is kept."""
    edits = iter(["x" * 17, "y"])  # "ab\n" + 17 = 20; then one more line is over

    def policy(req):  # type: ignore[no-untyped-def]
        if req.messages[-1].role == "tool":
            return call("send_message", message="ok")
        return call(
            "core_memory_append", label="human", content=next(edits), request_heartbeat=True
        )

    kernel.add_core(ScriptedCore(policy), model="s/edit")
    await kernel.create_agent(
        "ed", model="s/edit", embedder="test/hash", block_limit=LIMIT, persona="p", human="ab"
    )
    turn = await kernel.send("ed", "remember")
    assert turn.function_calls[0].ok, turn.function_calls[0].result
    assert kernel.get_agent("ed")["blocks"][1]["value"] == "ab\n" + "x" * 17
    turn = await kernel.send("ed", "remember more")
    assert not turn.function_calls[0].ok
    assert "would hold 22 characters, over its limit of 20 by 2" in turn.function_calls[0].result
    assert kernel.get_agent("ed")["blocks"][1]["value"] == "ab\n" + "x" * 17


async def test_update_block_up_to_the_limit(kernel: Kernel) -> None:
    kernel.add_core(ScriptedCore(lambda req: call("send_message", message="hi")), model="s/u")
    await kernel.create_agent(
        "up", model="s/u", embedder="test/hash", block_limit=LIMIT, persona="p", human="h"
    )
    await kernel.update_block("up", "human", "q" * LIMIT)
    assert kernel.get_agent("up")["blocks"][1]["value"] == "q" * LIMIT
    with pytest.raises(MemoryEditError, match="would hold 21 characters"):
        await kernel.update_block("up", "human", "q" * (LIMIT + 1))
    assert kernel.get_agent("up")["blocks"][1]["value"] == "q" * LIMIT
