"""`UnixClient`: the llmos API on a Unix socket, with the standard library's `http.client`.

    with UnixClient("/home/me/.llmos/run/kernel.sock") as client:
        client.get("/agents")["agents"]

The local kernel service and the in-process app (`--no-daemon`) listen on a
Unix socket whose permissions say who may connect, so no key, no TLS and no
proxy apply there, and a client needs none of httpx's machinery: this one
keeps a local command's start-up to the interpreter, `http.client` and
`json` (about 30 ms of imports here against httpx's 70). One connection is
kept open for the client's life (HTTP/1.1 keep-alive) and opened again,
before a request is sent, when the server closed it since the last one.

Left out: anything but a Unix socket (`api.Client` speaks TCP and TLS).
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
from collections.abc import Iterator
from typing import Any

from llmos.client.base import BaseClient, ServerFailed

#: seconds to connect; a turn's answer may take minutes, so reads wait without limit
CONNECT_TIMEOUT = 5.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("llmos.local", timeout=CONNECT_TIMEOUT)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(self.socket_path)
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class UnixClient(BaseClient):
    """A synchronous client of an llmos server on the Unix socket `path`."""

    def __init__(self, path: str, *, where: str | None = None) -> None:
        self.path = path
        self.where = where or f"the llmos kernel at {path}"
        self._conn = _UnixConnection(path)

    def close(self) -> None:
        self._conn.close()

    def _send(self, method: str, target: str, content: bytes | None, json_type: bool) -> None:
        sock = self._conn.sock
        if sock is not None and select.select([sock], [], [], 0)[0]:
            # Readable before we asked anything: the server closed the kept-alive
            # connection (its keep-alive timeout passed, e.g. while a chat's user typed).
            # Start a new one now, before sending, so no request is ever sent twice.
            self._conn.close()
        headers = {"content-type": "application/json"} if json_type else {}
        self._conn.request(method, target, body=content, headers=headers)

    def _exchange(
        self, method: str, target: str, content: bytes | None, json_type: bool
    ) -> tuple[int, bytes]:
        try:
            self._send(method, target, content, json_type)
            resp = self._conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise ServerFailed(None, f"cannot reach {self.where}: {_why(exc)}") from None

    @contextlib.contextmanager
    def _open(self, target: str, content: bytes) -> Iterator[tuple[int, Iterator[str], Any]]:
        try:
            self._send("POST", target, content, True)
            resp = self._conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise ServerFailed(None, f"cannot reach {self.where}: {_why(exc)}") from None
        lines = (line.decode("utf-8").rstrip("\r\n") for line in iter(resp.readline, b""))
        try:
            # an error while the caller reads the lines or the rest lands here too
            yield resp.status, lines, resp.read
        except (OSError, http.client.HTTPException) as exc:
            raise ServerFailed(None, f"lost {self.where}: {_why(exc)}") from None
        finally:
            if not resp.isclosed():
                self._conn.close()  # left early or cut off: the connection is spent


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
