"""`Client`: the llmos HTTP API from Python, over TCP or a Unix socket (httpx, synchronous).

    client = Client("http://127.0.0.1:8283", key="llmos-...")    # a remote `llmos serve`
    client = Client.unix("/home/me/.llmos/kernel.sock")           # the local kernel service
    client.get("/agents")["agents"]
    for event in client.stream("/agents/alice/messages", {"text": "hi"}): ...

Paths are relative to `/v1`. An error answer becomes `RequestFailed` (4xx) or
`ServerFailed` (5xx, or the server cannot be reached), carrying the server's
one-line message, its status and its error type; the CLI prints the message.

Left out: retries (the server's 503 for a failed turn says not to resend),
and an async variant (the CLI runs one request at a time).
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote


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

from llmos.errors import BackendError, InvalidRequest  # noqa: E402

#: a turn on a slow model can take minutes; reads wait for it, connects do not
TIMEOUT = httpx.Timeout(connect=5.0, read=None, write=60.0, pool=5.0)


class RequestFailed(InvalidRequest):
    """The server refused the request (a 4xx answer): its message says why."""

    def __init__(self, status: int, message: str, type_: str = "", body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.body = body


class ServerFailed(BackendError):
    """The server failed (a 5xx answer) or could not be reached."""

    backend = "llmos server"

    def __init__(self, status: int | None, message: str, type_: str = "", body: Any = None):
        super().__init__(message)
        self.status = status
        self.type = type_
        self.body = body
        self.unavailable = status is None or status == 503


def seg(value: str) -> str:
    """One path segment (an agent or tool name) quoted for a URL."""
    return quote(value, safe="")


class Client:
    """A synchronous client of one llmos server."""

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
        self.http = httpx.Client(
            base_url=base_url.rstrip("/") + "/v1",
            headers=headers,
            timeout=TIMEOUT,
            transport=transport,
            # on a Unix socket, proxies from the environment do not apply
            trust_env=transport is None,
        )

    @classmethod
    def unix(cls, path: str, *, where: str | None = None) -> Client:
        """A client of a server on the Unix socket `path` (no key: the socket's
        permissions say who may connect)."""
        return cls(
            "http://llmos.local",
            # no TLS on a Unix socket: without verify=False the transport would load
            # the CA bundle, the largest single cost of a warm command
            transport=httpx.HTTPTransport(uds=path, verify=False),
            where=where or f"the llmos kernel at {path}",
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- requests ---------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
    ) -> Any:
        """The answer's JSON (None for an empty answer); raises on an error status."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self.http.request(method, path, json=json_body, params=params, content=content)
        except httpx.TransportError as exc:
            raise ServerFailed(None, f"cannot reach {self.where}: {_why(exc)}") from None
        if resp.status_code >= 400:
            raise _error(resp.status_code, resp.content)
        if not resp.content:
            return None
        return resp.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, json_body=body, params=params)

    def put(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("PUT", path, json_body=body, params=params)

    def patch(self, path: str, body: Any = None) -> Any:
        return self.request("PATCH", path, json_body=body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params=params)

    def health(self) -> dict[str, Any]:
        """`GET /health` (outside /v1, no key needed): status, version, pid."""
        try:
            resp = self.http.get(
                str(self.http.base_url).rstrip("/").removesuffix("/v1") + "/health"
            )
        except httpx.TransportError as exc:
            raise ServerFailed(None, f"cannot reach {self.where}: {_why(exc)}") from None
        if resp.status_code != 200:
            raise _error(resp.status_code, resp.content)
        return resp.json()

    def stream(self, path: str, body: Any) -> Iterator[dict[str, Any]]:
        """POST `body` with `stream: true` and yield each Server-Sent Event's data
        (a dict with its `type`) as it arrives."""
        try:
            with self.http.stream("POST", path, json={**body, "stream": True}) as resp:
                if resp.status_code >= 400:
                    raise _error(resp.status_code, resp.read())
                data: list[str] = []
                for line in resp.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].lstrip(" "))
                    elif not line and data:
                        yield json.loads("\n".join(data))
                        data = []
                if data:
                    yield json.loads("\n".join(data))
        except httpx.TransportError as exc:
            raise ServerFailed(None, f"lost {self.where}: {_why(exc)}") from None


def _why(exc: httpx.TransportError) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error(status: int, raw: bytes) -> RequestFailed | ServerFailed:
    """The exception for an error answer, with the server's message when it sent one."""
    body: Any = None
    message = f"the server answered {status}"
    type_ = ""
    try:
        body = json.loads(raw)
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and err.get("message"):
            message = str(err["message"])
            type_ = str(err.get("type") or "")
    except ValueError:
        pass
    if status == 401:
        message = "the server rejected the API key (" + message + ")"
    cls = ServerFailed if status >= 500 else RequestFailed
    return cls(status, message, type_, body)
