"""The AIOS listener: AIOS's API, keyless, on a loopback port, as one llmos user.

AIOS's SDK sends no credentials, so `llmos serve --aios-user NAME` opens a
second socket on loopback (127.0.0.1 or ::1, never another address: `
loopback_socket` refuses) that serves only AIOS's routes, as NAME. One
uvicorn server serves both sockets; `AiosFront` sends a request to the AIOS
app when it arrived on the AIOS socket (the connection's local port) and to
the main app otherwise, so both share one kernel and one event loop.

Loopback is not the whole door: a web page the user visits can make their
browser send requests to 127.0.0.1. So the AIOS app also refuses (403) any
request with an `Origin` header (browsers send one on cross-site requests;
the SDK never does) or a `Host` that is not a loopback name (a DNS-rebound
site's own name), takes POST bodies only as `application/json` (a form
post or `text/plain` is 415), and keeps the server's body and rate limits.
Other local accounts on the machine can still reach the port: run it on a
machine that is yours.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from sqlalchemy import select

from llmos.access.policy import User, UserNotFound, redact
from llmos.server.aios.routes import build_router
from llmos.server.deps import APIError, ServerState, error_body
from llmos.storage.models import users

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from llmos.storage.db import Database

log = logging.getLogger("llmos.server")
DEFAULT_PORT = 8000  # the SDK's default kernel URL is http://localhost:8000
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_socket(host: str, port: int) -> socket.socket:
    """A listening socket on a loopback address; ValueError for any other host."""
    if not is_loopback(host):
        raise ValueError(
            f"the AIOS listener takes no key, so it listens on loopback only "
            f"(127.0.0.1 or ::1), not {host!r}"
        )
    import uvicorn

    return uvicorn.Config(app=None, host=host.strip("[]"), port=port).bind_socket()  # type: ignore[arg-type]


def find_user(db: Database, name: str) -> User:
    with db.connect() as conn:
        row = conn.execute(select(users).where(users.c.name == name)).first()
    if row is None:
        raise UserNotFound(f"no llmos user named {name!r} (make one: llmos user create {name})")
    return User(row.id, row.name, row.created_at)


def check_user(home: Path, name: str) -> None:
    """Raise UserNotFound unless `name` is a user on the database at `home`."""
    from llmos.storage.db import Database

    db = Database.open(home / "llmos.db")
    try:
        find_user(db, name)
    finally:
        db.close()


def create_aios_app(main: FastAPI, user_name: str) -> FastAPI:
    """The AIOS routes as `user_name`, over the main app's kernel and state."""
    from llmos.server.app import install_error_handlers

    state: ServerState = main.state.llmos
    cache: dict[str, User] = {}

    async def the_user(request: Request) -> User:
        user = request.scope.get("state", {}).get("user")
        if not isinstance(user, User):  # the guard always sets it
            raise APIError(401, "no user", "authentication_error")
        return user

    async def resolve() -> User:
        if user_name not in cache:
            if state.kernel is None:
                raise APIError(503, "the server is starting or stopping", "unavailable")
            cache[user_name] = find_user(state.kernel.db, user_name)
        return cache[user_name]

    app = FastAPI(title="llmos: AIOS kernel API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.llmos = state
    app.state.aios = main.state.aios
    app.include_router(build_router(the_user))
    install_error_handlers(app)
    app.add_middleware(LoopbackGuard, state=state, resolve=resolve)
    return app


class LoopbackGuard:
    """The AIOS app's front door: browser checks, the user, rate and body limits."""

    def __init__(self, app: ASGIApp, state: ServerState, resolve: Callable[[], Any]) -> None:
        self.app = app
        self.state = state
        self.resolve = resolve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if "origin" in headers or not is_loopback(name):
            await _respond(
                send,
                403,
                "the AIOS listener serves local programs only, not browsers or other host names",
            )
            return
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if scope["method"] == "POST" and content_type != "application/json":
            await _respond(send, 415, "send the body as application/json")
            return
        try:
            user = await self.resolve()
        except APIError as e:
            await _respond(send, e.status, e.message)
            return
        except UserNotFound as e:
            await _respond(send, 503, str(e))
            return
        wait = self.state.limiter.take(user.name)
        if wait > 0:
            await _respond(
                send,
                429,
                f"rate limit reached; retry after {wait:.2f} s",
                {"retry-after": str(max(1, math.ceil(wait)))},
            )
            return
        declared = headers.get("content-length", "0").strip()
        limit = self.state.config.max_body_bytes
        if not declared.isdigit() or int(declared) > limit or "transfer-encoding" in headers:
            await _respond(send, 413, f"send a Content-Length of at most {limit} bytes")
            return
        scope.setdefault("state", {})["user"] = user
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # as the main API's gate: logged redacted, a JSON 500
            lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
            log.error("unhandled error on AIOS %s:\n%s", scope.get("path"), redact("".join(lines)))
            if not started:
                await _respond(send, 500, "internal error; see the server log")


async def _respond(
    send: Send, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    import json

    raw = json.dumps(
        error_body(message, "invalid_request_error" if status < 500 else "unavailable")
    ).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    hdrs += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": raw})


class AiosFront:
    """One ASGI app over two sockets: the AIOS socket's requests go to the AIOS app."""

    def __init__(self, main: ASGIApp, aios: ASGIApp, aios_port: int) -> None:
        self.main = main
        self.aios = aios
        self.aios_port = aios_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server") or (None, None)
        if scope["type"] in ("http", "websocket") and server[1] == self.aios_port:
            await self.aios(scope, receive, send)
        else:
            await self.main(scope, receive, send)


def front(
    main: FastAPI, user_name: str, aios_host: str = "127.0.0.1", aios_port: int = DEFAULT_PORT
) -> tuple[AiosFront, socket.socket, str]:
    """(the ASGI app serving both, the AIOS socket, its URL). ValueError off loopback."""
    sock = loopback_socket(aios_host, aios_port)
    port = sock.getsockname()[1]
    shown = f"[{aios_host.strip('[]')}]" if ":" in aios_host else aios_host
    return AiosFront(main, create_aios_app(main, user_name), port), sock, f"http://{shown}:{port}"


def serve(
    main: FastAPI,
    *,
    host: str,
    port: int,
    user_name: str,
    aios_port: int = DEFAULT_PORT,
    on_ready: Callable[[str], None] = print,
    keep_alive: int = 5,
) -> None:
    """Run the main API on host:port and the AIOS listener beside it, until stopped."""
    import uvicorn

    aios_host = host if is_loopback(host) and host != "localhost" else "127.0.0.1"
    app, aios_sock, url = front(main, user_name, aios_host, aios_port)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", timeout_keep_alive=keep_alive
    )
    main_sock = config.bind_socket()
    on_ready(url)
    uvicorn.Server(config).run(sockets=[main_sock, aios_sock])
