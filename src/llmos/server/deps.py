"""What the routes share: server configuration and state, the caller, errors, turns.

`ServerConfig` holds the operator's choices (body limits, rate limits, which
models and embedders users may pick); `ServerState` is the running server's
kernel, access manager, rate limiter and the turns in flight. Routes get the
caller with the `CurrentUser` dependency (the gate middleware has already
authenticated them) and raise `APIError` for a clean JSON error.

`TurnRun` runs one turn as a task of its own: a client that disconnects, or a
request that is cancelled, never cancels a turn whose message was accepted.

How a failed turn maps to HTTP: the user's message is committed to recall
storage before the agent's core is called, so a turn that ends with stop
reason "error" (its core failed: unavailable, rate limited past retries,
refused) has still *accepted* the message. Such a turn answers **503** with
the error and the whole turn in the body and the header `x-should-retry:
false`, so OpenAI SDKs do not re-send a message the agent already has;
`POST /v1/agents/{agent}/messages/retry` runs it again. Over SSE the status
is already 200, so the stream carries an `error` event before `done`. Other
stop reasons (`end_turn`, `max_steps`, `context_overflow`) answer 200.

Secrets: everything a route answers about a turn or a message (turn JSON,
SSE events, history, errors) goes through `scrub()`, which masks key-like text
(`llmos.redact`) and the exact values of the server's own secret-named
environment variables (`*_KEY`, `*_SECRET*`, `*TOKEN*`, `*PASSWORD*`).

Left out: per-user configuration (every user gets the same limits and model
policy) and quotas on agents, messages or storage per user.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from llmos.access.policy import AccessManager, RateLimiter, User, WorkLimiter, redact
from llmos.errors import LLMOSError

if TYPE_CHECKING:
    from llmos.agent.loop import Turn
    from llmos.kernel.kernel import Kernel

#: Agent names a URL path can carry: no "/", no control characters, no
#: surrounding spaces (the kernel strips them, so the name would not match).
#: largest integer a route takes (ids, versions, cursors): SQLite's INTEGER is 64-bit
MAX_INT = 2**63 - 1

AGENT_NAME_PATTERN = r"^[\w.@:+-](?:[\w .@:+()-]{0,126}[\w.@:+)-])?$"


@dataclass(slots=True)
class ServerConfig:
    """The operator's settings for one server."""

    #: largest request body, in bytes (413 above it)
    max_body_bytes: int = 1 << 20
    #: largest body of POST /v1/agents/import: an export carries a whole history
    max_import_bytes: int = 64 << 20
    #: per-user token bucket: requests per second, and the largest burst (0: off)
    rate: float = 50.0
    burst: float = 200.0
    #: glob patterns of model strings users may choose; None: any, except
    #: `local:PATH` (a path on the server's disk is the operator's to choose)
    models: tuple[str, ...] | None = None
    #: glob patterns of embedder specs users may choose; None: any
    embedders: tuple[str, ...] | None = None
    #: let users point agents at a base_url of their choice. Off by default:
    #: the server would send its own provider key (OPENAI_API_KEY) there.
    allow_base_url: bool = False
    #: used when a request names no model / embedder (None: the kernel's default)
    default_model: str | None = None
    default_embedder: str | None = None
    #: run user tools even where no OS sandbox works (no bubblewrap): any user
    #: could then run code as the server's account. Off: such tools are a 403.
    unsafe_tools: bool = False
    #: let users name files and commands of the server's machine: load documents from
    #: its disk, run MCP servers there. Only for a server whose one user is the
    #: machine's own (the local kernel service): elsewhere, anyone's code as the server.
    server_files: bool = False
    #: how long shutdown waits for turns in flight
    shutdown_grace_seconds: float = 30.0
    #: per user: expensive requests (tool registration, import, archival inserts,
    #: a new embedder) running at once, and queued behind them; past both, a 429
    work_running: int = 2
    work_waiting: int = 8


@dataclass(slots=True)
class ServerState:
    config: ServerConfig
    limiter: RateLimiter
    kernel: Kernel | None = None
    access: AccessManager | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    work: WorkLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.work = WorkLimiter(self.config.work_running, self.config.work_waiting)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` as a task the server keeps (and awaits at shutdown)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


class APIError(LLMOSError):
    """An error answered as `{"error": {"type": ..., "message": ...}}` with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.headers = headers or {}
        self.extra = extra or {}
        self.code = code

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": scrub(self.message)}
        if self.code:
            err["code"] = self.code
        return {"error": err, **self.extra}


def error_body(message: str, type_: str, **more: Any) -> dict[str, Any]:
    return {"error": {"type": type_, "message": scrub(message), **more}}


_SECRET_NAME = re.compile(r"KEY$|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)


@cache
def server_secrets() -> tuple[str, ...]:
    """The values of this process's secret-named environment variables (read once)."""
    return tuple(v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v.strip()) >= 8)


def scrub(value: Any) -> Any:
    """`value` (text, or JSON-like lists and dicts of it) with every secret masked."""
    if isinstance(value, str):
        return redact(value, server_secrets())
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


# --- dependencies -----------------------------------------------------------------

# Declared so OpenAPI (and /docs) show the bearer scheme; the gate middleware
# has already checked the key by the time a route runs.
_bearer = HTTPBearer(auto_error=False, description="An llmos API key: `llmos user create NAME`")


# Dependencies are `async def` on purpose: FastAPI runs plain `def` ones in a
# worker thread, and the kernel belongs to the event loop's thread.
async def get_state(request: Request) -> ServerState:
    return request.app.state.llmos


async def get_kernel(request: Request) -> Kernel:
    kernel = (await get_state(request)).kernel
    if kernel is None:  # only between startup and shutdown is there a kernel
        raise APIError(503, "the server is starting or stopping", "unavailable")
    return kernel


async def current_user(
    request: Request,
    _creds: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> User:
    user = request.scope.get("state", {}).get("user")
    if not isinstance(user, User):
        raise APIError(401, "missing or invalid API key", "authentication_error")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
State = Annotated[ServerState, Depends(get_state)]
KernelDep = Annotated["Kernel", Depends(get_kernel)]


# --- policy -----------------------------------------------------------------------


def check_choices(
    config: ServerConfig,
    *,
    model: str | None = None,
    base_url: str | None = None,
    embedder: str | None = None,
) -> None:
    """Refuse (403) a model, base_url or embedder the operator does not allow."""
    if base_url and not config.allow_base_url:
        raise APIError(
            403,
            "this server does not let users choose a base_url (the operator can allow it "
            "with --allow-base-url)",
            "permission_error",
        )
    if model is not None:
        if config.models is None:
            if model.startswith("local:"):
                raise APIError(
                    403,
                    "model files on the server's disk are the operator's to choose",
                    "permission_error",
                )
        elif not any(fnmatch.fnmatchcase(model, p) for p in config.models):
            raise APIError(
                403,
                f"model {model!r} is not allowed on this server; allowed: "
                + ", ".join(config.models),
                "permission_error",
            )
    if (
        embedder is not None
        and config.embedders is not None
        and not any(fnmatch.fnmatchcase(embedder, p) for p in config.embedders)
    ):
        raise APIError(
            403,
            f"embedder {embedder!r} is not allowed on this server; allowed: "
            + ", ".join(config.embedders),
            "permission_error",
        )


# --- turns ------------------------------------------------------------------------

_END = object()


def turn_body(turn: Turn) -> dict[str, Any]:
    return scrub(turn.as_dict())


def failed_turn_error(turn: Turn) -> APIError:
    """The 503 for a turn whose core failed (see the module docstring)."""
    return APIError(
        503,
        f"the agent's model failed, so the turn ended without an answer: {turn.error}. "
        "Your message was accepted and stored; do not send it again — "
        "POST /v1/agents/{agent}/messages/retry runs it again.",
        "core_unavailable",
        headers={"x-should-retry": "false"},
        extra={"turn": turn_body(turn)},
    )


class TurnRun:
    """One turn as its own task, with its events queued for whoever streams them."""

    def __init__(self, state: ServerState, kernel: Kernel, agent: str, text: str, owner: str):
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._stored = asyncio.Event()
        self.task: asyncio.Task[Turn] = state.spawn(self._run(kernel, agent, text, owner))

    def _sink(self, event: dict[str, Any]) -> None:
        if event.get("type") == "stored":
            self._stored.set()
        else:
            self._queue.put_nowait(event)

    async def _run(self, kernel: Kernel, agent: str, text: str, owner: str) -> Turn:
        try:
            return await kernel.send(agent, text, owner=owner, on_event=self._sink)
        finally:
            self._stored.set()
            self._queue.put_nowait(_END)

    async def admitted(self) -> None:
        """Return once the kernel has stored the message durably, or raise why it did not.

        A stream's 200 promises the message is kept, exactly as the plain
        POST's answer does, so this waits for the message's commit (which also
        waits for the agent's turn in progress, if any). `Kernel.send`'s checks
        (agent, message size) fail before that, so their errors (404, 422) are
        still real HTTP statuses.
        """
        stored = asyncio.ensure_future(self._stored.wait())
        try:
            await asyncio.wait({self.task, stored}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stored.cancel()
        if self.task.done():
            self.task.result()  # raises AgentNotFound, MessageTooLong, ...

    async def result(self) -> Turn:
        # shield: a cancelled request does not cancel the turn.
        return await asyncio.shield(self.task)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The turn's events as they happen; ends when the turn does."""
        while (event := await self._queue.get()) is not _END:
            yield event
