"""The HTTP server: one kernel shared by many users, behind a FastAPI app.

`create_app(kernel)` builds the app around a kernel the caller opened (tests,
benchmarks, embedding); `create_app(home=...)` opens the kernel in the app's
lifespan instead, on the server's own event loop (what `llmos serve` does).
Either way the kernel runs in that one event loop: its database calls are
synchronous SQLite and short, and its LLM calls are awaited.

Routes live in `routes/`: agents (and export/import), messages (with SSE),
memory (blocks, archival, recall, the context window), a new embedder and
documents (`bulk.py`), kernel status, the OpenAI-compatible chat
completions, tools/grants/approvals/audit (`tools.py`), MCP servers
(`mcp.py`), versioned files (`files.py`) and AIOS's kernel API under
`/v1/aios` (`server/aios/`). Every route under `/v1` needs an API
key (see `gate.py`). Errors are JSON, `{"error": {"type", "message"}}`, with
these statuses:

| status | when |
|---|---|
| 400 | a request the kernel refuses (bad model string, window too small, …) |
| 401 | missing, unknown or revoked API key |
| 403 | a model, embedder or base_url the operator does not allow; tools without an OS sandbox |
| 404 | no such agent *for this user* (another user's agent is a 404 too), block, passage or route |
| 409 | an agent of that name already exists |
| 413 | a body over the configured limit |
| 422 | a body or parameter that fails validation; a message too long for the agent's window |
| 429 | the user's rate limit; `Retry-After` says when to come back |
| 502 | the model or embedding backend refused (bad provider key, bad request) |
| 503 | the core failed (the message *was* stored; see `deps.py`), embedder or DB unavailable |

Left out: tools, grants and the audit log in the console (it has chat,
memory, search, kernel status and approvals), TLS, CORS, and sharing one
rate limiter between server nodes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError
from starlette.exceptions import HTTPException as StarletteHTTPException

import llmos
from llmos.access.policy import AccessManager, RateLimiter
from llmos.errors import BackendError, Busy, Conflict, InvalidRequest, LLMOSError, NotFound
from llmos.server.aios.routes import AiosState, build_router
from llmos.server.console import mount_console
from llmos.server.deps import APIError, ServerConfig, ServerState, current_user, error_body
from llmos.server.gate import Gate
from llmos.server.routes import agents, bulk, files, mcp, memory, messages, openai, tools
from llmos.server.routes import kernel as kernel_status
from llmos.server.routes.files import file_error
from llmos.storage.files import FileError

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

log = logging.getLogger("llmos.server")

DESCRIPTION = """\
llmos runs LLM agents with self-managed memory (MemGPT) on a kernel that
schedules their model calls (AIOS). Authenticate with `Authorization: Bearer
<key>` (`llmos user create NAME` makes a key). `POST /v1/chat/completions`
speaks OpenAI's protocol, with `model` naming one of your agents.
"""


def app_from_env() -> FastAPI:
    """The app of one `llmos serve --workers N` process (uvicorn imports this
    factory in each worker): the home from LLMOS_HOME, the operator's settings
    from LLMOS_SERVE_CONFIG (JSON), agent leases on (LLMOS_SHARED_DB)."""
    import dataclasses
    import json
    import os

    raw = json.loads(os.environ.get("LLMOS_SERVE_CONFIG") or "{}")
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in fields}
    return create_app(config=ServerConfig(**settings), home=os.environ.get("LLMOS_HOME"))


def create_app(
    kernel: Kernel | None = None,
    config: ServerConfig | None = None,
    *,
    home: str | Path | None = None,
    local_user: str | None = None,
) -> FastAPI:
    """The llmos HTTP app. Pass a kernel, or let the lifespan open one on `home`.

    `local_user`: serve requests that arrive on a Unix socket without a key as
    this user (the local kernel service, whose socket only its owner can open;
    see `service.py`). Requests over TCP always need a key.
    """
    config = config or ServerConfig()
    started = time.time()
    state = ServerState(config=config, limiter=RateLimiter(config.rate, config.burst))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from llmos.kernel.kernel import Kernel

        own = kernel is None
        state.kernel = Kernel.open(home) if own else kernel
        state.kernel.tools.allow_unsafe = config.unsafe_tools  # HTTP users: OS sandbox or no tools
        state.access = AccessManager(state.kernel.db)
        state.kernel.waker.start()  # finish agent messages an earlier kernel accepted
        try:
            yield
        finally:
            # Accepted messages are already stored; let their turns finish too.
            if state.tasks:
                _, pending = await asyncio.wait(
                    set(state.tasks), timeout=config.shutdown_grace_seconds
                )
                for task in pending:
                    task.cancel()
            if own:
                await state.kernel.close()
            state.kernel = None
            state.access = None

    app = FastAPI(
        title="llmos",
        version=llmos.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.llmos = state
    app.state.aios = AiosState()  # also served keyless by `serve --aios-user` (server/aios/)
    app.add_middleware(Gate, state=state, local_user=local_user)
    install_error_handlers(app)

    @app.get("/health", tags=["kernel"], summary="Liveness check (no key needed)")
    async def health() -> dict[str, Any]:
        # the pid tells `--workers N` processes apart
        return {
            "status": "ok",
            "version": llmos.__version__,
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - started, 3),
        }

    for module in (agents, messages, memory, bulk, kernel_status, openai, tools, mcp, files):
        app.include_router(module.router, prefix="/v1")
    app.include_router(build_router(current_user), prefix="/v1/aios")
    mount_console(app)  # the web console at /
    return app


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_r: Request, exc: APIError) -> JSONResponse:
        return _json(exc.status, exc.body(), exc.headers)

    # llmos's exception families (llmos/errors.py), each class naming its `code`.
    @app.exception_handler(NotFound)
    async def not_found(_r: Request, exc: NotFound) -> JSONResponse:
        return _json(404, _family_body(exc, "not_found_error"))

    @app.exception_handler(Conflict)
    async def conflict(_r: Request, exc: Conflict) -> JSONResponse:
        return _json(409, _family_body(exc, "conflict_error"))

    @app.exception_handler(InvalidRequest)
    async def invalid_request(_r: Request, exc: InvalidRequest) -> JSONResponse:
        return _json(422, _family_body(exc, "invalid_request_error"))

    @app.exception_handler(Busy)
    async def busy(_r: Request, exc: Busy) -> JSONResponse:
        # e.g. --workers: another worker has held the agent for longer than a lease lasts
        return _json(503, _family_body(exc, "unavailable"), {"retry-after": "5"})

    @app.exception_handler(UnicodeError)
    async def bad_text(_r: Request, _exc: UnicodeError) -> JSONResponse:
        return _json(400, _unicode_body())

    @app.exception_handler(ValueError)
    async def bad_value(_r: Request, exc: ValueError) -> JSONResponse:
        return _json(400, error_body(str(exc), "invalid_request_error"))

    @app.exception_handler(BackendError)
    async def backend_error(_r: Request, exc: BackendError) -> JSONResponse:
        # Outside a turn: probing a model's window at creation, the agent's
        # embedder on an archival insert, search or import.
        body = error_body(f"the {exc.backend} failed: {exc}", "core_unavailable")
        return _json(503 if exc.unavailable else 502, body)

    @app.exception_handler(FileError)
    async def file_failed(_r: Request, exc: FileError) -> JSONResponse:
        err = file_error(exc)
        return _json(err.status, err.body(), err.headers)

    @app.exception_handler(StatementError)
    async def db_error(_r: Request, exc: StatementError) -> JSONResponse:
        if isinstance(exc.orig, UnicodeError):
            return _json(400, _unicode_body())
        if isinstance(exc, IntegrityError):
            return _json(409, error_body("that conflicts with existing data", "conflict_error"))
        if isinstance(exc, OperationalError):
            return _json(
                503,
                error_body("the database is busy; try again", "unavailable"),
                {"retry-after": "1"},
            )
        raise exc

    @app.exception_handler(RequestValidationError)
    async def invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(first["loc"][1:] or first["loc"]) or "request"
        return _json(
            422,
            error_body(f"{where}: {first['msg']}", "invalid_request_error", details=details),
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _json(exc.status_code, error_body(str(exc.detail), type_), dict(exc.headers or {}))


def _family_body(exc: LLMOSError, type_: str) -> dict[str, Any]:
    more = {"code": exc.code} if exc.code else {}
    return error_body(_text(exc), type_, **more)


def _text(exc: BaseException) -> str:
    # LookupError's str() is the repr of its argument.
    return str(exc.args[0]) if exc.args else str(exc)


def _unicode_body() -> dict[str, Any]:
    return error_body(
        "text must be valid Unicode (no unpaired surrogates)", "invalid_request_error"
    )
