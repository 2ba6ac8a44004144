"""`/retry` undoes the turn it forgets: block edits, archival inserts and file writes go back,
and what cannot be undone (a message another agent received) is reported."""

from __future__ import annotations

import asyncio
import json

import pytest

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.llm.replay import ScriptedCore, call


def remembers(req: ChatRequest) -> ChatResponse:
    """Ada's first message: note her name, store a passage, write a file; then answer."""
    user = next(m.content or "" for m in reversed(req.messages) if m.role == "user")
    if "my name is Ada" not in user:
        return call("send_message", message="ok")
    steps = [
        ("core_memory_append", {"label": "human", "content": "Name: Ada"}),
        ("core_memory_replace", {"label": "persona", "old_content": "I", "new_content": "Me"}),
        ("archival_memory_insert", {"content": "Ada Lovelace wrote the first program."}),
        ("file_write", {"path": "notes/ada.txt", "content": "Ada v2"}),
    ]
    turn_start = max(i for i, m in enumerate(req.messages) if m.role == "user")
    made = [m.name for m in req.messages[turn_start:] if m.role == "tool"]
    for name, args in steps:
        if name not in made:
            return call(name, request_heartbeat=True, **args)
    return call("send_message", message="Nice to meet you, Ada.")


@pytest.fixture
async def ada(kernel: Kernel) -> str:
    kernel.add_core(ScriptedCore(remembers), model="scripted/undo")
    await kernel.create_agent(
        "ada",
        model="scripted/undo",
        embedder="test/hash",
        persona="I am a helpful assistant.",
        blocks_={"human": ""},
        settings={"file_tools": True},
    )
    area = kernel.file_area("ada")
    kernel.files.write("local", area, "notes/ada.txt", "Ada v1")
    return "ada"


def _block(kernel: Kernel, label: str) -> str:
    return kernel.image("ada").memory.blocks[label].value


async def _check_undone_then_redone(kernel: Kernel) -> None:
    await asyncio.wait_for(kernel.send("ada", "Hi, my name is Ada Lovelace"), 10)
    assert _block(kernel, "human") == "Name: Ada"
    turn = await asyncio.wait_for(kernel.retry("ada"), 10)
    assert turn.reply == "Nice to meet you, Ada."
    assert turn.not_undone == []
    assert _block(kernel, "human") == "Name: Ada"  # once, not twice
    assert _block(kernel, "persona") == "Me am a helpful assistant."
    texts = [p.text for p in kernel.list_archival("ada")[0]]
    assert texts == ["Ada Lovelace wrote the first program."]
    area = kernel.file_area("ada")
    assert kernel.files.read("local", area, "notes/ada.txt")["content"] == "Ada v2"
    # v1 (ours), v2 (first run), v1 again (the undo), v2 (the retried run)
    assert len(kernel.files.versions("local", area, "notes/ada.txt")) == 4


async def test_retry_undoes_the_turn_whole(kernel: Kernel, ada: str) -> None:
    await _check_undone_then_redone(kernel)
    # and a second retry as well (the retried turn was recorded as it began)
    await asyncio.wait_for(kernel.retry("ada"), 10)
    assert _block(kernel, "human") == "Name: Ada"
    assert kernel.list_archival("ada")[1] == 1


async def test_retry_after_a_restart_undoes_appends_from_the_calls(
    kernel: Kernel, ada: str
) -> None:
    await asyncio.wait_for(kernel.send("ada", "Hi, my name is Ada Lovelace"), 10)
    kernel.journal.forget(kernel.image("ada").id)  # as after a restart: no record of the start
    turn = await asyncio.wait_for(kernel.retry("ada"), 10)
    assert _block(kernel, "human") == "Name: Ada"
    # "I" -> "Me" has one inverse: "Me" occurs once in the block after the edit
    assert _block(kernel, "persona") == "Me am a helpful assistant."
    assert turn.not_undone == []
    assert kernel.list_archival("ada")[1] == 1


async def test_what_cannot_be_undone_is_reported(kernel: Kernel) -> None:
    def tells(req: ChatRequest) -> ChatResponse:
        if req.messages[-1].role == "user":
            return call("send_message_to_agent", agent_name="bob", message="hi Bob",
                        request_heartbeat=True)  # fmt: skip
        return call("send_message", message="told him")

    kernel.add_core(ScriptedCore(tells, name="scripted/tells"), "scripted/tells")
    kernel.add_core(ScriptedCore(lambda r: call("send_message", message="hi")), "scripted/bob")
    await kernel.create_agent(
        "cy", model="scripted/tells", embedder="test/hash", settings={"agent_tools": True}
    )
    await kernel.create_agent("bob", model="scripted/bob", embedder="test/hash")
    kernel.grant("cy", "agent", "bob")
    await asyncio.wait_for(kernel.send("cy", "tell bob hi"), 10)
    turn = await asyncio.wait_for(kernel.retry("cy"), 10)
    (kept,) = turn.not_undone
    assert kept.startswith("send_message_to_agent(agent_name='bob'") and "stay" in kept
    assert json.loads(json.dumps(turn.as_dict()))["not_undone"] == [kept]
