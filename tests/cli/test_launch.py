"""The `llmos` launcher's plain-send test, and the standard-library Unix-socket client.

Which command lines the launcher takes itself (`plain_send`), and what
`UnixClient` does with a server that closes kept-alive connections (it
opens a new one before sending, never sending a request twice) or that
goes away mid-request (a clear error, the request not sent again). The
servers here are raw sockets, so each test sees every byte that arrived.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.cli.launch import plain_send
from llmos.client.base import RequestFailed, ServerFailed
from llmos.client.unix import UnixClient


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["send", "ada", "hi there"], ("ada", "hi there", False)),
        (["send", "ada", "hi", "--json"], ("ada", "hi", True)),
        (["send", "--json", "ada", "hi"], ("ada", "hi", True)),
        (["send", "ada", "-"], ("ada", "-", False)),  # "-" reads stdin
        (["send", "ada"], None),  # typer explains the missing argument
        (["send", "ada", "hi", "extra"], None),
        (["send", "ada", "--help"], None),
        (["send", "ada", "-5 degrees"], None),  # typer decides what a dash means
        (["send", "ada", "hi", "--json", "--json"], None),
        (["--home", "/x", "send", "ada", "hi"], None),  # global options: the typer app
        (["agent", "list"], None),
        ([], None),
    ],
)
def test_which_command_lines_are_a_plain_send(
    argv: list[str], expected: tuple[str, str, bool] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMOS_URL", raising=False)
    monkeypatch.delenv("LLMOS_NO_DAEMON", raising=False)
    assert plain_send(argv) == expected


@pytest.mark.parametrize("variable", ["LLMOS_URL", "LLMOS_NO_DAEMON"])
def test_a_remote_server_or_no_daemon_goes_to_the_typer_app(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "1")
    assert plain_send(["send", "ada", "hi"]) is None


class RawServer:
    """A Unix-socket server that answers each request with `answer` (None: hang up
    without answering) and, with `one_per_connection`, closes the connection after
    each answer without saying so (as a server whose keep-alive timeout passed)."""

    def __init__(self, path: Path, answer: bytes | None, one_per_connection: bool) -> None:
        self.path, self.answer, self.one = str(path), answer, one_per_connection
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                buf = b""
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                    while b"\r\n\r\n" in buf:
                        head, buf = buf.split(b"\r\n\r\n", 1)
                        length = _content_length(head)
                        while len(buf) < length:
                            buf += conn.recv(65536)
                        self.requests.append(head.split(b"\r\n", 1)[0])
                        buf = buf[length:]
                        if self.answer is None:
                            break
                        conn.sendall(self.answer)
                        if self.one:
                            break
                    else:
                        continue
                    break
            self.closed += 1

    def wait_closed(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while self.closed < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.closed >= count

    def close(self) -> None:
        self.sock.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body), body)  # fmt: skip


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "s.sock"


def test_a_connection_the_server_closed_is_replaced_before_sending(sock_path: Path) -> None:
    server = RawServer(sock_path, _ok(b'{"n": 1}'), one_per_connection=True)
    try:
        with UnixClient(str(sock_path)) as client:
            assert client.get("/agents") == {"n": 1}
            server.wait_closed(1)  # the server hung up after answering
            assert client.post("/agents/a/messages", {"text": "hi"}) == {"n": 1}
            server.wait_closed(2)
            assert client.get("/agents") == {"n": 1}
    finally:
        server.close()
    assert server.requests == [b"GET /v1/agents HTTP/1.1",
                               b"POST /v1/agents/a/messages HTTP/1.1",
                               b"GET /v1/agents HTTP/1.1"]  # fmt: skip
    assert server.connections == 3


def test_a_server_gone_mid_request_is_an_error_and_nothing_is_sent_twice(
    sock_path: Path,
) -> None:
    server = RawServer(sock_path, None, one_per_connection=True)
    try:
        with UnixClient(str(sock_path)) as client, pytest.raises(ServerFailed) as info:
            client.post("/agents/a/messages", {"text": "hi"})
    finally:
        server.close()
    assert "cannot reach the llmos kernel at" in str(info.value)
    assert server.requests == [b"POST /v1/agents/a/messages HTTP/1.1"]


def test_no_server_is_a_clear_error(sock_path: Path) -> None:
    with (
        UnixClient(str(sock_path), where="the test kernel") as client,
        pytest.raises(ServerFailed, match="cannot reach the test kernel"),
    ):
        client.health()


def test_an_error_answer_carries_the_servers_message(sock_path: Path) -> None:
    body = b'{"error": {"message": "no agent named a", "type": "not_found"}}'
    answer = b"HTTP/1.1 404 Not Found\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    server = RawServer(sock_path, answer, one_per_connection=False)
    try:
        with UnixClient(str(sock_path)) as client, pytest.raises(RequestFailed) as info:
            client.get("/agents/a", limit=5, deep=True)
    finally:
        server.close()
    assert (info.value.status, str(info.value), info.value.type) == (
        404, "no agent named a", "not_found")  # fmt: skip
    assert server.requests == [b"GET /v1/agents/a?limit=5&deep=true HTTP/1.1"]


def test_a_stream_cut_off_midway_is_an_error(sock_path: Path) -> None:
    cut = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
           b"transfer-encoding: chunked\r\n\r\n"
           b'1c\r\ndata: {"type": "token", "te')  # fmt: skip
    server = RawServer(sock_path, cut, one_per_connection=True)
    try:
        with UnixClient(str(sock_path)) as client, pytest.raises(ServerFailed) as info:
            list(client.stream("/agents/a/messages", {"text": "hi"}))
    finally:
        server.close()
    assert str(info.value).startswith("lost the llmos kernel at")
    assert server.requests == [b"POST /v1/agents/a/messages HTTP/1.1"]
