"""What a 200 promises survives a kill -9, and the home is the owner's alone.

A real `llmos serve` process, a streamed `POST /v1/agents/{a}/messages`, a
real SIGKILL as soon as the stream's first bytes arrive (the model is slow, so
the turn is still in flight), a restart on the same home: the message is in
the history, as it is for the plain POST.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from llmos.cli.main import app
from tests.fakes.openai_server import FakeOpenAIServer

LLMOS = [sys.executable, "-m", "llmos.cli.main"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serve(home: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    env = {**os.environ, "LLMOS_HOME": str(home), "OPENAI_API_KEY": "sk-test-durability"}
    proc = subprocess.Popen(
        [*LLMOS, "serve", "--port", str(port), "--allow-base-url"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with suppress(httpx.TransportError):
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.05)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_a_streamed_message_survives_a_sigkill_right_after_its_first_bytes(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    key = CliRunner().invoke(app, ["--home", str(home), "user", "create", "alice"]).stdout.strip()
    auth = {"Authorization": f"Bearer {key}"}

    def reply(_body: dict[str, Any]) -> dict[str, Any]:
        return {"tool_calls": [{"name": "send_message", "arguments": {"message": "hi"}}]}

    text = "remember me, I was streamed"
    with FakeOpenAIServer(reply, delay=3) as backend:
        with _serve(home) as (proc, url):
            r = httpx.post(
                f"{url}/v1/agents",
                headers=auth,
                json={"name": "sam", "model": "openai/fake", "base_url": backend.base_url},
            )
            assert r.status_code == 201, r.text
            # A first turn keeps the agent busy, so the streamed message waits for it:
            # its 200 must not come before it is stored.
            busy = threading.Thread(
                target=lambda: _post_quietly(url, auth, "keep the agent busy"), daemon=True
            )
            busy.start()
            while not backend.requests:
                time.sleep(0.01)
            with httpx.stream(
                "POST",
                f"{url}/v1/agents/sam/messages",
                headers=auth,
                json={"text": text, "stream": True},
                timeout=60,
            ) as stream:
                assert stream.status_code == 200
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        with _serve(home) as (_proc, url):
            history = httpx.get(f"{url}/v1/agents/sam/messages", headers=auth).json()
    stored = [m["content"] for m in history["messages"] if m["role"] == "user"]
    assert text in stored, stored


def _post_quietly(url: str, auth: dict[str, str], text: str) -> None:
    with suppress(httpx.TransportError):
        httpx.post(f"{url}/v1/agents/sam/messages", headers=auth, json={"text": text}, timeout=60)


def test_the_home_and_the_database_are_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "fresh-home"
    done = CliRunner().invoke(app, ["--home", str(home), "user", "create", "alice"])
    assert done.exit_code == 0, done.output
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for f in home.glob("llmos.db*"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
