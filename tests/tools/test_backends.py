"""Another sandbox backend plugs in as one class and one `sandbox.register()` call,
as the README says: here a stand-in for a remote runner, used by registration
and calls even where bubblewrap is missing, and handed the agent's net grants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmos import Kernel
from llmos.access.grants import Grants
from llmos.llm.replay import ScriptedCore, call
from llmos.tools import sandbox
from llmos.tools.registry import ToolManager

TOOL = 'def double(n: int) -> int:\n    """Twice n."""\n    return 2 * n\n'


class RemoteRunner(sandbox.Sandbox):
    """What a remote runner would be: send the request elsewhere, return its answer.
    (Here "elsewhere" is the plain child process; a real one would POST it.)"""

    name = "remote"
    isolated = True

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def run(self, request: dict[str, Any], limits: sandbox.Limits) -> sandbox.SandboxResult:
        self.requests.append(request)
        return sandbox.PlainProcess().run(request, limits)


async def test_a_registered_backend_runs_registration_and_calls(
    kernel: Kernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOS_BWRAP", str(tmp_path / "no-bwrap"))  # no bubblewrap here
    assert sandbox.isolation_missing() is not None
    runner = RemoteRunner()
    undo = sandbox.register(lambda: runner)
    try:
        assert sandbox.isolation_missing() is None
        assert sandbox.select(allow_unsafe=False) is runner
        core = ScriptedCore(lambda _r: call("send_message", message="hi"), name="scripted/x")
        kernel.add_core(core)
        agent = (await kernel.create_agent("a", model=core.name, embedder="test/hash"))["id"]
        Grants(kernel.db).grant(agent, "net", "API.example.com:443")
        tools = ToolManager(kernel.db, allow_unsafe=False)
        await tools.add(TOOL, "local")
        tool = tools.get("local", "double")
        assert tool is not None
        ran = await tools.run(tool, {"n": 21}, agent)
    finally:
        undo()
    assert ran.ok and ran.result == 42, ran
    assert [r["mode"] for r in runner.requests] == ["describe", "call"]
    assert runner.requests[1]["hosts"] == ["api.example.com:443"]
    assert sandbox.isolation_missing() is not None  # undone
