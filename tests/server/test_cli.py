"""`llmos user create|list|key` and `llmos serve`, run as real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from llmos.cli.main import app

LLMOS = [sys.executable, "-m", "llmos.cli.main"]


def invoke(home: Path, *args: str) -> Any:
    """The CLI in this process (a subprocess costs seconds of imports)."""
    return CliRunner().invoke(app, ["--home", str(home), *args])


def test_user_create_list_and_key(tmp_path: Path) -> None:
    created = invoke(tmp_path, "user", "create", "alice")
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("llmos-") and len(key) > 40
    assert "shown only now" in created.stderr

    again = invoke(tmp_path, "user", "create", "alice")
    assert again.exit_code == 1 and again.stderr.startswith("error: ")
    assert invoke(tmp_path, "user", "create", "no spaces allowed").exit_code == 1

    listed = invoke(tmp_path, "user", "list")
    assert "alice" in listed.stdout and "keys: 1" in listed.stdout
    assert key not in listed.stdout  # keys are never shown again

    second = invoke(tmp_path, "user", "key", "alice", "--revoke-old").stdout.strip()
    assert second.startswith("llmos-") and second != key
    assert "keys: 1" in invoke(tmp_path, "user", "list").stdout
    assert invoke(tmp_path, "user", "key", "nobody").exit_code == 1
    assert '"name": "alice"' in invoke(tmp_path, "user", "list", "--json").stdout

    # the key is stored hashed: it is nowhere in the database files
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("llmos.db*"))
    assert second.encode() not in raw and key.encode() not in raw


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve(tmp_path: Path) -> None:
    key = invoke(tmp_path, "user", "create", "alice").stdout.strip()
    port = _free_port()
    env = {**os.environ, "LLMOS_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [*LLMOS, "serve", "--port", str(port), "--allow-model", "scripted/*"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{url}/v1/agents").status_code == 401
        assert httpx.get(f"{url}/v1/agents", headers=auth).json() == {"agents": []}
        r = httpx.post(f"{url}/v1/agents", headers=auth, json={"name": "a", "model": "openai/x"})
        assert r.status_code == 403  # --allow-model
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert key not in out
    assert "GET /v1/agents" in out  # the access log, without the key
