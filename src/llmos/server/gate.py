"""The server's front door: authentication, rate limits and body size, before any route.

`Gate` is a plain ASGI middleware (no buffering of responses, so SSE streams
pass straight through). For every request under `/v1` it, in this order:

1. authenticates `Authorization: Bearer KEY` (401, with `WWW-Authenticate`);
2. spends a token of the user's bucket (429, with `Retry-After`);
3. reads the body up to the configured limit (413 past it — by the declared
   Content-Length or by the bytes that actually arrive), then replays it to
   the app;
4. for expensive work (`expensive()`: registering a tool, which runs its code
   in the sandbox, or an MCP server; an import; inserting archival passages or
   loading documents; a new embedder, which embeds every passage again) holds
   one of the user's places of the server's `WorkLimiter` while the route
   runs: a few run at once per user,
   a few more wait, and past that the answer is 429 (`too_much_work`), so
   one user's flood cannot take every worker from the others.

Doing this here rather than in FastAPI dependencies makes the order hold for
every request: FastAPI parses a JSON body before it runs dependencies, so an
unauthenticated request with a broken body would otherwise get 422, not 401.

`GET /health`, `/openapi.json` and `/docs` are outside `/v1` and need no key:
they show no user's data. The gate also turns any exception that escapes a
route into a JSON 500 logged with secrets redacted (Starlette's own handler
would log the raw exception).

Left out: TLS (run behind a reverse proxy), IP-based limits for failed logins
(keys are 256 random bits: guessing is not a threat), and CORS.
"""

from __future__ import annotations

import json
import logging
import math
import re
import traceback
from typing import TYPE_CHECKING, Any

from llmos.access.policy import User, WorkQueueFull, redact
from llmos.server.deps import error_body

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from llmos.server.deps import ServerState

log = logging.getLogger("llmos.server")

IMPORT_PATH = "/v1/agents/import"
# Past a refused body's declared size we still read (and drop) up to this many
# bytes, so the client is reading our 413 rather than a reset connection.
_DRAIN_LIMIT = 16 << 20


class _TooLarge(Exception):
    def __init__(self, body_done: bool = False) -> None:
        super().__init__()
        self.body_done = body_done  # the last chunk arrived: nothing left to drain


class Gate:
    def __init__(self, app: ASGIApp, state: ServerState, local_user: str | None = None) -> None:
        self.app = app
        self.state = state
        # a key-less request on a Unix socket is this user (see create_app)
        self.local_user = User("user-local", local_user, 0.0) if local_user else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            path: str = scope["path"]
            if path == "/v1" or path.startswith("/v1/"):
                receive = await self._admit(scope, receive, tracking_send)
                if receive is None:
                    return
            user = scope.get("state", {}).get("user")
            if user is not None and scope["state"].get("expensive"):
                try:
                    async with self.state.work.slot(user.name):
                        await self.app(scope, receive, tracking_send)
                except WorkQueueFull as full:
                    if started:
                        raise
                    body = error_body(str(full), "rate_limit_error", code=full.code)
                    await _respond(tracking_send, 429, body, {"retry-after": "1"})
                return
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
            log.error(
                "unhandled error on %s %s:\n%s",
                scope.get("method"),
                scope.get("path"),
                redact("".join(lines)),
            )
            if not started:
                await _respond(
                    tracking_send,
                    500,
                    error_body("internal error; see the server log", "server_error"),
                )

    async def _admit(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Authenticate, rate-limit and read the body; None when a response was sent."""
        state = self.state
        headers = _headers(scope)
        if state.access is None:
            await _respond(send, 503, error_body("the server is starting", "unavailable"))
            return None
        scheme, _, key = headers.get("authorization", "").partition(" ")
        user = state.access.authenticate(key.strip()) if scheme.lower() == "bearer" else None
        if user is None and not scheme and self.local_user and scope.get("client") is None:
            user = self.local_user  # a Unix socket's peer (uvicorn gives no client address)
        if user is None:
            await _respond(
                send,
                401,
                error_body(
                    "missing or invalid API key: send 'Authorization: Bearer <key>' "
                    "(make one with: llmos user create NAME)",
                    "authentication_error",
                ),
                {"www-authenticate": "Bearer"},
            )
            return None
        wait = state.limiter.take(user.name)
        if wait > 0:
            await _respond(
                send,
                429,
                error_body(
                    f"rate limit reached ({state.limiter.rate:g} requests/s, bursts of "
                    f"{state.limiter.burst:g}); retry after {wait:.2f} s",
                    "rate_limit_error",
                ),
                {"retry-after": str(max(1, math.ceil(wait)))},
            )
            return None

        limit = (
            state.config.max_import_bytes
            if scope["path"] == IMPORT_PATH
            else state.config.max_body_bytes
        )
        declared = headers.get("content-length")
        if declared is not None and not declared.strip().isdigit():
            await _respond(send, 400, error_body("invalid Content-Length", "invalid_request_error"))
            return None
        try:
            if declared is not None and int(declared) > limit:
                raise _TooLarge
            body = await _read_body(receive, limit)
        except _TooLarge as too_large:
            if not too_large.body_done and (declared is None or int(declared) <= _DRAIN_LIMIT):
                await _drain(receive)
            await _respond(
                send,
                413,
                error_body(
                    f"request body is larger than this server's limit of {limit} bytes",
                    "invalid_request_error",
                ),
                {"connection": "close"},
            )
            return None
        except _Disconnected:
            return None
        scope.setdefault("state", {})["user"] = user
        scope["state"]["expensive"] = expensive(scope.get("method", ""), scope["path"], body)

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnects

        return replay


_AGENT = r"/v1/agents/[^/]+"


def expensive(method: str, path: str, body: bytes) -> bool:
    """Whether a request does work that costs seconds of CPU (see the module doc)."""
    if method == "POST":
        return path in ("/v1/tools", "/v1/mcp", IMPORT_PATH) or bool(
            re.fullmatch(_AGENT + "/(archival|embedder|documents)", path)
        )
    # an update that changes the embedder embeds every passage again
    return method == "PATCH" and bool(re.fullmatch(_AGENT, path)) and b'"embedder"' in body


class _Disconnected(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge(body_done=not message.get("more_body", False))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _drain(receive: Receive) -> None:
    size = 0
    while size <= _DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _respond(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    raw = json.dumps(body).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    hdrs += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": raw})
