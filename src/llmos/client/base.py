"""What every llmos API client shares, on the standard library alone.

`BaseClient` holds the request verbs (`get`, `post`, `put`, `patch`,
`delete`), `health` and `stream` (Server-Sent Events as dicts), built on two
methods a transport provides: `_exchange` (one request, its status and body)
and `_open` (one request whose body is read as it arrives). Two transports:
`api.Client` (httpx: TCP and TLS, proxies from the environment) for a remote
`llmos serve`, and `unix.UnixClient` (`http.client` on a Unix socket) for the
local kernel service, which keeps httpx out of a local command's start-up.

An error answer becomes `RequestFailed` (4xx) or `ServerFailed` (5xx, or the
server cannot be reached), carrying the server's one-line message, its
status and its error type; the CLI prints the message.

Left out: retries (the server's 503 for a failed turn says not to resend).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import quote, urlencode

from llmos.errors import BackendError, InvalidRequest


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


def answer_error(status: int, raw: bytes) -> RequestFailed | ServerFailed:
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


def sse_events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The `data:` of each Server-Sent Event in `lines` (without line ends), as JSON."""
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []
    if data:
        yield json.loads("\n".join(data))


def query_string(params: dict[str, Any] | None) -> str:
    """`?a=1&b=x` for the parameters that are set ("" when none is)."""
    kept = {k: _param(v) for k, v in (params or {}).items() if v is not None}
    return "?" + urlencode(kept, doseq=True) if kept else ""


def _param(value: Any) -> Any:
    if isinstance(value, bool):  # as httpx writes them, which the server's parser takes
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return [_param(v) for v in value]
    return value


class BaseClient:
    """A synchronous client of one llmos server; paths are relative to `/v1`."""

    #: how error messages name the server
    where: str = "the llmos server"

    # --- what a transport provides ----------------------------------------------------

    def _exchange(
        self, method: str, target: str, content: bytes | None, json_type: bool
    ) -> tuple[int, bytes]:
        """Send one request to `target` (a path with its query, from the server's root)
        and return the answer's status and whole body; ServerFailed when unreachable."""
        raise NotImplementedError

    def _open(
        self, target: str, content: bytes
    ) -> AbstractContextManager[tuple[int, Iterator[str], Any]]:
        """POST `content` (JSON) to `target` and give the status, an iterator of the
        answer's lines as they arrive (no line ends), and a callable reading the rest
        of the body as bytes; ServerFailed when unreachable or cut off."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of the connection."""

    # --- requests ---------------------------------------------------------------------

    def __enter__(self) -> BaseClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

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
        if json_body is not None:
            content = json.dumps(json_body).encode()
        status, raw = self._exchange(
            method, "/v1" + path + query_string(params), content, json_body is not None
        )
        if status >= 400:
            raise answer_error(status, raw)
        return json.loads(raw) if raw else None

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
        status, raw = self._exchange("GET", "/health", None, False)
        if status != 200:
            raise answer_error(status, raw)
        return json.loads(raw)

    def stream(self, path: str, body: Any) -> Iterator[dict[str, Any]]:
        """POST `body` with `stream: true` and yield each Server-Sent Event's data
        (a dict with its `type`) as it arrives."""
        content = json.dumps({**body, "stream": True}).encode()
        with self._open("/v1" + path, content) as (status, lines, read_rest):
            if status >= 400:
                raise answer_error(status, read_rest())
            yield from sse_events(lines)
