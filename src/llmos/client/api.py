"""`Client`: the llmos HTTP API from Python over TCP or TLS, on httpx (synchronous).

    client = Client("http://127.0.0.1:8283", key="llmos-...")    # a remote `llmos serve`
    client.get("/agents")["agents"]
    for event in client.stream("/agents/alice/messages", {"text": "hi"}): ...

The verbs, errors and event parsing are `base.BaseClient`'s; this module is
the transport for a server reached by URL (proxies from the environment
apply). The local kernel service on its Unix socket is `unix.UnixClient`.

Left out: an async variant (the CLI runs one request at a time).
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from typing import Any


def _without_httpx_cli() -> None:
    """Keep `import httpx` from importing httpx's own command-line tool (`httpx._main`:
    click, pygments, rich.syntax, rich.progress) — about a quarter of a client
    command's start-up, for a tool the client never runs. httpx imports it under
    `try:` and only binds its `main`; a process that already imported httpx is left
    as it is."""
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    stub = types.ModuleType("httpx._main", "httpx's CLI, left out by llmos.client.api")

    def main(*_args: Any, **_kwargs: Any) -> None:
        raise SystemExit("httpx's command line is not loaded in this process")

    stub.main = main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stub


_without_httpx_cli()

import httpx  # noqa: E402

from llmos.client.base import (  # noqa: E402  (re-exported: the client's public names)
    BaseClient,
    RequestFailed,
    ServerFailed,
    answer_error,
    seg,
)

__all__ = ["Client", "RequestFailed", "ServerFailed", "answer_error", "seg"]

#: a turn on a slow model can take minutes; reads wait for it, connects do not
TIMEOUT = httpx.Timeout(connect=5.0, read=None, write=60.0, pool=5.0)


class Client(BaseClient):
    """A synchronous client of one llmos server over TCP (or TLS), on httpx."""

    def __init__(
        self,
        base_url: str,
        key: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        where: str | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.where = where or base_url  # how errors name the server
        root = base_url.rstrip("/").removesuffix("/v1")
        self.http = httpx.Client(
            base_url=root,
            headers=headers,
            timeout=TIMEOUT,
            transport=transport,
            # on a Unix socket, proxies from the environment do not apply
            trust_env=transport is None,
        )

    def close(self) -> None:
        self.http.close()

    def _exchange(
        self, method: str, target: str, content: bytes | None, json_type: bool
    ) -> tuple[int, bytes]:
        headers = {"content-type": "application/json"} if json_type else {}
        try:
            resp = self.http.request(method, target, content=content, headers=headers)
        except httpx.TransportError as exc:
            raise ServerFailed(None, f"cannot reach {self.where}: {_why(exc)}") from None
        return resp.status_code, resp.content

    @contextlib.contextmanager
    def _open(self, target: str, content: bytes) -> Iterator[tuple[int, Iterator[str], Any]]:
        headers = {"content-type": "application/json"}
        try:
            with self.http.stream("POST", target, content=content, headers=headers) as resp:
                # a transport error while the caller reads the lines lands here too
                yield resp.status_code, resp.iter_lines(), resp.read
        except httpx.TransportError as exc:
            raise ServerFailed(None, f"lost {self.where}: {_why(exc)}") from None


def _why(exc: httpx.TransportError) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
