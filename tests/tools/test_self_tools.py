"""Agents that write their own tools (`self_tools`): with a scripted core, an agent
writes a tool, its owner approves, and the agent calls it in the same
conversation; a denied tool never runs; a failing test call comes back as an
error the agent corrects; versions replace each other and roll back; another
user's agent can neither see nor call it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.access.approvals import ApprovalNotFound
from llmos.errors import InvalidRequest
from llmos.llm.replay import ScriptedCore, call, raw_call
from llmos.tools import registry
from llmos.tools.authoring import check_source
from llmos.tools.registry import ToolError, ToolNotFound


def tool_source(name: str, body: str, doc: str = "Do it.") -> str:
    args = "    Args:\n        x: A number.\n"
    return f'def {name}(x: int) -> int:\n    """{doc}\n\n{args}    """\n    {body}\n'


DOUBLE = tool_source("double", "return 2 * x", "Double a number.")


def create(args: dict[str, Any]) -> ChatResponse:
    # raw: `call(name, **args)` cannot take an argument called "name"
    return raw_call("create_tool", json.dumps({**args, "request_heartbeat": True}))


def writer(*proposals: dict[str, Any], then: tuple[str, dict[str, Any]] | None = None):  # type: ignore[no-untyped-def]
    """A policy: on the user's message propose the first tool; on a failed create_tool
    propose the next; on an approval event call `then` and report its result."""
    queue = list(proposals)

    def policy(req: ChatRequest) -> ChatResponse:
        m = req.messages[-1]
        content = m.content or ""
        if m.role == "tool":
            body = json.loads(content)
            if m.name == "create_tool" and body["status"] == "Failed" and queue:
                return create(queue.pop(0))
            return call("send_message", message=f"{m.name} said: {body['message']}")
        if content.startswith("[system event]"):
            if "approved your tool" in content and then is not None:
                return call(then[0], request_heartbeat=True, **then[1])
            return call("send_message", message=f"event: {content}")
        if "call it" in content and then is not None:
            return call(then[0], request_heartbeat=True, **then[1])
        return create(queue.pop(0))

    return policy


def proposal(name: str, source: str, examples: list[dict[str, Any]] | None = None) -> dict:
    return {
        "name": name,
        "source": source,
        "description": f"{name}, written by the agent",
        "examples": [{"x": 21}] if examples is None else examples,
    }


async def make(kernel: Kernel, policy, name: str = "ann", owner: str = "local") -> ScriptedCore:  # type: ignore[no-untyped-def]
    core = ScriptedCore(policy, context_window=8192, name=f"scripted/{owner}-{name}")
    kernel.add_core(core)
    await kernel.create_agent(name, model=core.name, embedder="test/hash", owner=owner)
    await kernel.update_agent(name, owner, settings={"self_tools": True})
    return core


async def test_agent_writes_a_tool_owner_approves_agent_uses_it(kernel: Kernel) -> None:
    core = await make(kernel, writer(proposal("double", DOUBLE), then=("double", {"x": 21})))
    assert "create_tool" in {t.name for t in kernel.tool_specs(kernel.image("ann"))}

    turn = await kernel.send("ann", "write yourself a doubling tool")
    assert turn.stop_reason == "waiting_approval"
    first = turn.function_calls[0]
    assert first.name == "create_tool" and first.ok
    assert 'double({"x": 21}) -> 42' in first.result
    assert kernel.tools.get("local", "double") is None  # nothing registered yet
    pending = kernel.approvals()
    assert [a["tool"] for a in pending] == ["create_tool"]
    shown = json.loads(pending[0]["arguments"])
    assert shown["source"] == DOUBLE and shown["name"] == "double"
    assert shown["tests"] == [{"args": {"x": 21}, "result": "42"}]

    turn = await kernel.decide(pending[0]["id"], True)
    calls = [(c.name, c.ok, c.result) for c in turn.function_calls]
    assert calls[0] == ("double", True, "42")
    assert turn.reply == "double said: 42"
    # the tool was offered in the step after the approval event
    assert "double" in {t.name for t in core.requests[-2].tools}
    offered = next(t for t in core.requests[-2].tools if t.name == "double")
    assert offered.description == "double, written by the agent"

    versions = kernel.tool_versions("double")
    assert [(v["version"], v["author"], v["approved_by"], v["current"]) for v in versions] == [
        (1, "agent:ann", "local", True)
    ]
    log = kernel.audit()
    written = next(e for e in log if e["decision"] == "written")
    assert written["agent"] == "ann" and written["target"] == "double"
    installed = next(e for e in log if e["decision"] == "installed")
    assert "written by agent ann, approved by local" in installed["detail"]
    assert any(e["decision"] == "approved" and e["syscall"] == "approval" for e in log)


async def test_a_denied_tool_never_runs(
    kernel: Kernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A spy on the sandbox: every request that runs the tool's code is recorded.
    ran: list[dict[str, Any]] = []
    real = registry.sandbox.arun

    async def spy(request: dict[str, Any], *a: Any, **k: Any) -> Any:
        ran.append(request)
        return await real(request, *a, **k)

    monkeypatch.setattr(registry.sandbox, "arun", spy)
    # The tool writes a marker file wherever it runs unconfined; the sandbox
    # refuses the write (caught, so the test call passes) and nothing else runs it.
    marker = tmp_path / "marker.txt"
    body = f"""try:
        open({str(marker)!r}, "w").write("ran")
    except OSError:
        pass
    return x"""
    source = tool_source("marker", body)
    await make(kernel, writer(proposal("marker", source), then=("marker", {"x": 1})))
    turn = await kernel.send("ann", "write a marker tool")
    assert turn.function_calls[0].ok, turn.function_calls[0].result
    # checked and test-called once, in the sandbox, before the owner saw it
    assert [r["mode"] for r in ran] == ["describe", "call"]
    assert not marker.exists()
    before = len(ran)

    approval = kernel.approvals()[0]["id"]
    turn = await kernel.decide(approval, False, reason="writes files")
    assert "denied your tool marker" in turn.reply and "writes files" in turn.reply
    assert kernel.tools.get("local", "marker") is None
    assert len(ran) == before  # denied: its code never ran again

    # the agent calls it anyway: it is no function of its
    turn = await kernel.send("ann", "call it")
    assert turn.function_calls[0].name == "marker" and not turn.function_calls[0].ok
    assert "unknown function" in turn.function_calls[0].result
    assert len(ran) == before and not marker.exists()


async def test_a_failing_test_call_is_an_error_the_agent_corrects(kernel: Kernel) -> None:
    broken = tool_source("half", "return x // 0", "Halve a number.")
    fixed = tool_source("half", "return x // 2", "Halve a number.")
    await make(kernel, writer(proposal("half", broken), proposal("half", fixed)))
    turn = await kernel.send("ann", "write a halving tool")
    first, second = turn.function_calls[:2]
    assert not first.ok and "test call half" in first.result
    assert "ZeroDivisionError" in first.result and "call create_tool again" in first.result
    assert second.ok and turn.stop_reason == "waiting_approval"
    assert json.loads(kernel.approvals()[0]["arguments"])["source"] == fixed
    assert any(e["decision"] == "test_failed" for e in kernel.audit())


async def test_source_checks_reject_what_is_not_one_typed_documented_function(
    kernel: Kernel,
) -> None:
    fx = 'def f(x: int) -> int:\n    """D."""\n    return x\n'
    bad = {
        "no docstring": "def f(x: int) -> int:\n    return x\n",
        "untyped": 'def f(x):\n    """Doc."""\n    return x\n',
        "two": fx + 'def g() -> int:\n    """D."""\n    return 1\n',
        "code at top": 'import os\nos.system("x")\n' + fx,
        "flags": '__irreversible__ = True\ndef f(x: int) -> int:\n    """D."""\n    return x\n',
        "wrong name": 'def g(x: int) -> int:\n    """D."""\n    return x\n',
        "syntax": "def f(:\n",
        "kwargs": 'def f(**k: int) -> int:\n    """D."""\n    return 1\n',
    }
    for why, source in bad.items():
        with pytest.raises(ToolError):
            check_source("f", source)
            pytest.fail(why)
    with pytest.raises(ToolError, match="built-in"):
        check_source(
            "send_message", 'def send_message(x: str) -> str:\n    """D."""\n', ["send_message"]
        )
    ok = "import math\n\ndef f(x: float, y: int = 2) -> float:\n"
    ok += '    """Power."""\n    return math.pow(x, y)\n'
    assert check_source("f", ok).name == "f"
    # through the agent: a kernel-function name and a missing example are refused
    await make(
        kernel, writer({**proposal("send_message", DOUBLE.replace("double", "send_message"))})
    )
    turn = await kernel.send("ann", "hijack send_message")
    assert not turn.function_calls[0].ok and "built-in" in turn.function_calls[0].result
    await make(kernel, writer(proposal("double", DOUBLE, examples=[])), name="bob")
    turn = await kernel.send("bob", "no examples")
    assert not turn.function_calls[0].ok and "give examples" in turn.function_calls[0].result
    assert kernel.approvals() == []


async def test_second_version_replaces_first_and_rollback_restores_it(kernel: Kernel) -> None:
    v1 = tool_source("answer", "return x + 1", "Version one.")
    v2 = tool_source("answer", "return x + 2", "Version two.")
    await make(kernel, writer(proposal("answer", v1), proposal("answer", v2)))
    await kernel.send("ann", "write v1")
    await kernel.decide(kernel.approvals()[0]["id"], True)
    tool = kernel.tools.get("local", "answer")
    assert tool is not None and (await kernel.tools.run(tool, {"x": 1})).result == 2

    # the second proposal: the policy's queue hands it out on the next user message
    core2 = ScriptedCore(writer(proposal("answer", v2)), context_window=8192, name="scripted/v2")
    kernel.add_core(core2)
    await kernel.create_agent("ann2", model=core2.name, embedder="test/hash")
    await kernel.update_agent("ann2", settings={"self_tools": True})
    turn = await kernel.send("ann2", "write v2")
    assert "a new version" in kernel.audit()[0]["detail"]
    assert turn.stop_reason == "waiting_approval"
    await kernel.decide(kernel.approvals()[0]["id"], True)
    tool = kernel.tools.get("local", "answer")
    assert tool is not None and tool.version == 2
    assert (await kernel.tools.run(tool, {"x": 1})).result == 3
    assert [(v["version"], v["current"], v["author"]) for v in kernel.tool_versions("answer")] == [
        (1, False, "agent:ann"),
        (2, True, "agent:ann2"),
    ]

    restored = kernel.rollback_tool("answer", 1)
    assert restored["version"] == 1
    tool = kernel.tools.get("local", "answer")
    assert tool is not None and tool.version == 1 and "x + 1" in tool.source
    assert (await kernel.tools.run(tool, {"x": 1})).result == 2
    # the agent that had v2 attached now gets v1's schema and code
    spec = next(s for s in kernel.tool_specs(kernel.image("ann2")) if s.name == "answer")
    assert spec.description == "answer, written by the agent"
    assert kernel.audit()[0]["decision"] == "rolled_back"
    with pytest.raises(ToolNotFound):
        kernel.rollback_tool("answer", 7)
    # a later version is numbered after every stored one
    added = await kernel.add_tool(v2)
    assert added[0]["version"] == 3


async def test_a_new_version_keeps_the_owners_irreversible_flag(kernel: Kernel) -> None:
    await kernel.add_tool(DOUBLE, irreversible=True)
    await make(kernel, writer(proposal("double", DOUBLE.replace("2 * x", "x + x"))))
    await kernel.send("ann", "rewrite double")
    await kernel.decide(kernel.approvals()[0]["id"], True)
    tool = kernel.tools.get("local", "double")
    assert tool is not None and tool.version == 2 and tool.irreversible


async def test_another_users_agent_cannot_see_or_call_it(kernel: Kernel) -> None:
    await make(kernel, writer(proposal("double", DOUBLE)))
    await kernel.send("ann", "write it")
    approval = kernel.approvals()[0]["id"]
    # mallory cannot see or decide ann's pending tool
    assert kernel.approvals(owner="mallory") == []
    with pytest.raises(ApprovalNotFound):
        await kernel.decide(approval, True, owner="mallory")
    await kernel.decide(approval, True)

    policy = writer(then=("double", {"x": 2}))
    await make(kernel, policy, name="eve", owner="mallory")
    assert kernel.list_tools("mallory") == []
    with pytest.raises(ToolNotFound):
        kernel.attach_tool("eve", "double", owner="mallory")
    with pytest.raises(ToolNotFound):
        kernel.tool_versions("double", owner="mallory")
    turn = await kernel.send("eve", "call it", owner="mallory")
    first = turn.function_calls[0]
    assert first.name == "double" and not first.ok and "unknown function" in first.result
    assert "double" not in {s.name for s in kernel.tool_specs(kernel.image("eve", "mallory"))}


async def test_without_self_tools_there_is_no_create_tool(kernel: Kernel) -> None:
    core = ScriptedCore(writer(proposal("double", DOUBLE)), context_window=8192, name="s/x")
    kernel.add_core(core)
    await kernel.create_agent("ann", model=core.name, embedder="test/hash")
    turn = await kernel.send("ann", "write it")
    assert "create_tool" not in {t.name for t in core.requests[0].tools}
    assert "unknown function" in turn.function_calls[0].result
    assert kernel.approvals() == []
    with pytest.raises(InvalidRequest, match="self_tools"):
        await kernel.update_agent("ann", settings={"self_tools": "perhaps"})
