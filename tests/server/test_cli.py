"""`llmos user create|list|key` and `llmos serve`, run as real processes."""

from __future__ import annotations

import contextlib
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


def test_serve_with_two_workers_runs_each_agent_in_one_at_a_time(tmp_path: Path) -> None:
    """`llmos serve --workers 2`: two processes, two kernels, one database. Turns
    sent at once to one agent land on both workers and still run one at a time,
    each seeing the ones before it (agent leases)."""
    import concurrent.futures

    from tests.fakes.openai_server import FakeOpenAIServer

    def policy(body: dict[str, Any]) -> dict[str, Any]:
        users = [
            m for m in body["messages"] if m["role"] == "user" and not m["content"].startswith("[")
        ]
        return {"tool_calls": [{"name": "send_message", "arguments": {"message": str(len(users))}}]}

    key = invoke(tmp_path, "user", "create", "alice").stdout.strip()
    port = _free_port()
    env = {**os.environ, "LLMOS_HOME": str(tmp_path), "OPENAI_API_KEY": "sk-test"}
    with FakeOpenAIServer(policy, delay=0.05) as backend:
        proc = subprocess.Popen(
            [*LLMOS, "serve", "--port", str(port), "--workers", "2", "--allow-base-url"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {key}"}
        try:
            deadline = time.monotonic() + 60
            pids: set[int] = set()
            while len(pids) < 2:  # both workers answer (new connections spread over them)
                with contextlib.suppress(httpx.TransportError):
                    pids.add(httpx.get(f"{url}/health").json()["pid"])
                if proc.poll() is not None:
                    raise AssertionError(f"serve exited {proc.returncode}: {proc.stdout.read()}")  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
            r = httpx.post(
                f"{url}/v1/agents",
                headers=auth,
                json={
                    "name": "sam",
                    "model": "openai/fake",
                    "base_url": backend.base_url,
                    "context_window": 16384,
                },
            )
            assert r.status_code == 201, r.text

            def send(i: int) -> str:
                with httpx.Client(timeout=60) as c:  # a new connection: any worker
                    r = c.post(
                        f"{url}/v1/agents/sam/messages", headers=auth, json={"text": f"m{i}"}
                    )
                    assert r.status_code == 200, r.text
                    return r.json()["reply"]

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                replies = list(pool.map(send, range(16)))
            # each turn saw every turn before it, whichever worker ran it
            assert sorted(int(x) for x in replies) == list(range(1, 17))
            history = httpx.get(
                f"{url}/v1/agents/sam/messages", headers=auth, params={"limit": 100}
            ).json()
            roles = [m["role"] for m in reversed(history["messages"])]
            assert roles == ["user", "assistant", "tool"] * 16
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=30)
    assert out.count("Started server process") == 2, out
    assert key not in out
    import sqlite3

    with sqlite3.connect(tmp_path / "llmos.db") as db:
        (epoch,) = db.execute("SELECT epoch FROM agent_leases").fetchone()
    assert epoch > 1  # the lease changed hands: both workers ran sam's turns
