"""Where no OS sandbox works: the server refuses user tools, the CLI warns once and runs them.

"No bubblewrap" is simulated with `LLMOS_BWRAP` naming a file that does not
exist, which makes the backend lookup fail exactly as on a machine without it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.server.deps import ServerConfig
from llmos.tools import sandbox
from llmos.tools.registry import UserTool
from tests.server.conftest import TEST_CONFIG, LiveServer

TOOL = 'def add(a: int, b: int) -> int:\n    """Add."""\n    return a + b\n'


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOS_BWRAP", "/nonexistent/bwrap")


def test_select_refuses_without_isolation_unless_unsafe_is_allowed(no_bwrap: None) -> None:
    missing = sandbox.isolation_missing()
    assert missing is not None and "bubblewrap" in missing and "LLMOS_BWRAP" in missing
    with pytest.raises(sandbox.SandboxUnavailable, match=r"bubblewrap.*--unsafe-tools"):
        sandbox.select(allow_unsafe=False)
    backend = sandbox.select(allow_unsafe=True)
    assert not backend.isolated
    assert sandbox.call(TOOL, "add", {"a": 1, "b": 2}, backend=backend).result == 3


@pytest.fixture
def server(tmp_path: Path, no_bwrap: None) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path / "home", TEST_CONFIG)
    yield live
    live.stop()


def test_the_server_refuses_user_tools_with_a_403_naming_what_is_missing(
    server: LiveServer,
) -> None:
    with server.client("alice") as alice:
        r = alice.post("/v1/tools", json={"source": TOOL})
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "sandbox_unavailable" and err["type"] == "permission_error"
    assert "bubblewrap" in err["message"] and "--unsafe-tools" in err["message"]
    # a tool registered earlier (by the CLI, on the same home) does not run either
    tool = UserTool(0, "alice", "add", "Add.", TOOL, "add", 1, {}, False, False)
    ran = asyncio.run(server.kernel.tools.run(tool, {"a": 1, "b": 2}))
    assert not ran.ok and "bubblewrap" in (ran.error or "")


def test_unsafe_tools_lets_the_operator_run_them_anyway(tmp_path: Path, no_bwrap: None) -> None:
    import dataclasses

    config: ServerConfig = dataclasses.replace(TEST_CONFIG, unsafe_tools=True)
    live = LiveServer(tmp_path / "home", config)
    try:
        with live.client("alice") as alice:
            r = alice.post("/v1/tools", json={"source": TOOL})
        assert r.status_code == 201, r.text
    finally:
        live.stop()


def test_the_cli_runs_tools_without_a_sandbox_with_one_warning(tmp_path: Path) -> None:
    script = shutil.which("llmos", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "llmos.cli.main"]
    source = tmp_path / "add.py"
    source.write_text(TOOL + TOOL.replace("add", "plus"))
    env = {**os.environ, "LLMOS_HOME": str(tmp_path / "home"), "LLMOS_BWRAP": "/nonexistent"}
    done = subprocess.run(
        [*command, "tool", "add", str(source)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "add" in done.stdout and "plus" in done.stdout
    assert done.stderr.count("WITHOUT an OS sandbox") == 1, done.stderr
