"""`llmos serve --keep-alive SECONDS`: how long a node keeps an idle HTTP connection open.

Behind a load balancer, the side that closes idle connections must be the
balancer: a node that closes one just as the balancer reuses it resets the
request (ECONNRESET; `benchmarks/concurrency.py` lost 39-57 of 2,000 messages
that way with uvicorn's 5 s against a client keeping connections 15 s). Balancers
with a long idle timeout (60 s is common) need the node's to be longer still.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

LLMOS = [sys.executable, "-m", "llmos.cli.main"]
REQUEST = b"GET /health HTTP/1.1\r\nHost: node\r\n\r\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answer(sock: socket.socket) -> bytes:
    """One response's bytes, b"" if the server has closed the connection."""
    sock.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    return data


def _closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""  # EOF: the server closed it
    except BlockingIOError:
        return False  # still open, nothing to read
    finally:
        sock.setblocking(True)


def test_keep_alive_sets_how_long_idle_connections_stay_open(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [*LLMOS, "serve", "--port", str(port), "--keep-alive", "3"],
        env={**os.environ, "LLMOS_HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise AssertionError(f"serve exited: {proc.stdout.read()}")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            assert _answer(sock).startswith(b"HTTP/1.1 200")
            time.sleep(1.5)  # idle, but under 3 s: the same connection serves again
            assert not _closed_by_server(sock)
            assert _answer(sock).startswith(b"HTTP/1.1 200")
            time.sleep(4.5)  # idle past 3 s: the node has closed it
            assert _closed_by_server(sock)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_keep_alive_below_one_second_is_refused(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmos.cli.main import app

    result = CliRunner().invoke(app, ["--home", str(tmp_path), "serve", "--keep-alive", "0"])
    assert result.exit_code == 2
    assert "--keep-alive" in result.output
