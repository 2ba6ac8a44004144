"""Versioned files: versions, rollback, quotas, and shared-area grants through an agent."""

from __future__ import annotations

import json

import pytest

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.llm.replay import ScriptedCore, call
from llmos.storage.files import FileError, QuotaExceeded, clean_path
from tests.conftest import both_engines

engine = both_engines()


def test_paths_are_normalised_and_confined() -> None:
    assert clean_path("/a/./b/../c.txt") == "a/c.txt"
    assert clean_path("../../etc/passwd") == "etc/passwd"
    with pytest.raises(FileError):
        clean_path("/")


async def test_versions_rollback_delete_search(kernel: Kernel) -> None:
    fs = kernel.files
    area = "shared:team"
    assert fs.write("local", area, "notes/todo.md", "buy milk") == 1
    assert fs.write("local", area, "notes/todo.md", "buy milk and eggs") == 2
    assert fs.read("local", area, "notes/todo.md")["content"] == "buy milk and eggs"
    assert fs.read("local", area, "notes/todo.md", 1)["content"] == "buy milk"
    assert fs.rollback("local", area, "notes/todo.md", 1) == 3
    assert fs.read("local", area, "notes/todo.md") == {
        "path": "notes/todo.md",
        "version": 3,
        "content": "buy milk",
    }
    fs.write("local", area, "ideas.txt", "Sail around the world")
    assert [f["path"] for f in fs.list("local", area)] == ["ideas.txt", "notes/todo.md"]
    assert [f["path"] for f in fs.list("local", area, "notes/")] == ["notes/todo.md"]
    assert [f["path"] for f in fs.search("local", area, "SAIL")] == ["ideas.txt"]
    assert [f["path"] for f in fs.search("local", area, "todo")] == ["notes/todo.md"]
    assert fs.delete("local", area, "ideas.txt") == 2
    with pytest.raises(FileError, match="deleted"):
        fs.read("local", area, "ideas.txt")
    assert fs.search("local", area, "sail") == []
    assert fs.rollback("local", area, "ideas.txt", 1) == 3  # undelete
    assert [v["deleted"] for v in fs.versions("local", area, "ideas.txt")] == [False, True, False]
    # other owners do not see the area
    assert fs.list("mallory", area) == []


async def test_quota_is_enforced_with_a_clear_error(kernel: Kernel) -> None:
    fs = kernel.files
    fs.write("local", "agent:x", "a.txt", "x" * 60, quota=100)
    fs.write("local", "agent:x", "a.txt", "y" * 90, quota=100)  # replacing frees the old size
    with pytest.raises(QuotaExceeded, match="quota exceeded"):
        fs.write("local", "agent:x", "b.txt", "z" * 20, quota=100)
    assert fs.usage("local", "agent:x") == 90
    fs.delete("local", "agent:x", "a.txt")
    fs.write("local", "agent:x", "b.txt", "z" * 20, quota=100)


def script(*calls: ChatResponse):  # type: ignore[no-untyped-def]
    """Play the calls in order, one per step, then send_message with the last result."""
    queue = list(calls)

    def policy(req: ChatRequest) -> ChatResponse:
        if queue:
            return queue.pop(0)
        last = req.messages[-1]
        return call("send_message", message=json.loads(last.content or "{}").get("message", ""))

    return policy


async def test_agent_file_tools_with_grants_and_quota(kernel: Kernel) -> None:
    hb = {"request_heartbeat": True}
    core = ScriptedCore(
        script(
            call("file_write", path="plan.md", content="step one", **hb),
            call("file_write", path="plan.md", content="step two", **hb),
            call("file_read", path="plan.md", version=1, **hb),
            call("file_write", path="shared/team/x.md", content="hi", **hb),
            call("file_write", path="big.txt", content="x" * 500, **hb),
            call("file_search", query="two", **hb),
        ),
        name="scripted/files",
    )
    kernel.add_core(core)
    await kernel.create_agent(
        "ann",
        model=core.name,
        embedder="test/hash",
        settings={"file_tools": True, "file_quota": 100},
    )
    turn = await kernel.send("ann", "go")
    calls = turn.function_calls
    assert [c.ok for c in calls[:6]] == [True, True, True, False, False, True]
    assert "version 2" in calls[1].result
    assert "step one" in calls[2].result
    assert "permission denied" in calls[3].result
    assert "quota exceeded" in calls[4].result
    assert "plan.md" in calls[5].result
    assert "file_write" in {t.name for t in core.requests[0].tools}
    denied = [e for e in kernel.audit() if e["decision"] == "denied"]
    assert denied and denied[0]["target"] == "shared/team"

    # with a read grant the agent reads the shared area but still cannot write it
    kernel.files.write("local", kernel.file_area(shared="team"), "x.md", "team notes")
    kernel.grant("ann", "files", "team", "r")
    core.policy = script(
        call("file_read", path="shared/team/x.md", **hb),
        call("file_write", path="shared/team/x.md", content="mine", **hb),
    )
    turn = await kernel.send("ann", "again")
    assert turn.function_calls[0].ok and "team notes" in turn.function_calls[0].result
    assert not turn.function_calls[1].ok
    kernel.grant("ann", "files", "team", "rw")
    core.policy = script(call("file_write", path="shared/team/x.md", content="mine", **hb))
    turn = await kernel.send("ann", "third")
    assert turn.function_calls[0].ok
    assert kernel.files.read("local", "shared:team", "x.md")["content"] == "mine"


async def test_file_tools_are_off_by_default(kernel: Kernel) -> None:
    core = ScriptedCore(script(call("file_write", path="a", content="b")), name="scripted/off")
    kernel.add_core(core)
    await kernel.create_agent("bob", model=core.name, embedder="test/hash")
    turn = await kernel.send("bob", "go")
    assert not turn.function_calls[0].ok and "unknown function" in turn.function_calls[0].result
    assert "file_write" not in {t.name for t in core.requests[0].tools}
