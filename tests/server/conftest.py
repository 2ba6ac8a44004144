"""A real llmos server on loopback for the API tests: uvicorn in a background thread.

`LiveServer` opens a kernel on a temporary home with scripted cores (no model
is loaded) and the test hash embedder, creates two users (alice and bob) —
or, given the keys of an earlier server on the same home (`users=`), reuses
them, so a test can stop a server and start another (a restart) — and
serves `create_app(kernel, config)` with uvicorn on 127.0.0.1 at a free
port. Its event loop is the server's own thread; tests talk to it only over
HTTP.

Scripted models: `scripted/echo` replies "echo: <message>" with a thought;
`scripted/think` saves the message to archival memory, then replies (two
steps, every kind of event); `scripted/down` fails like an unreachable
backend, with a provider key in its error; `scripted/slow` replies after a
short wait.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from llmos import Kernel
from llmos.access.policy import AccessManager
from llmos.llm.core import ChatRequest, ChatResponse, CoreUnavailable
from llmos.llm.replay import ScriptedCore, call
from llmos.server.app import create_app
from llmos.server.deps import ServerConfig
from tests.conftest import HashEmbedder

#: what the failing core's error says: a server must never show this key
LEAKY_SECRET = "sk-proj-TESTSECRETabcdef0123456789"


def last_user_text(request: ChatRequest) -> str:
    for m in reversed(request.messages):
        if m.role == "user" and not (m.content or "").startswith("[system event]"):
            return m.content or ""
    return ""


def echo(request: ChatRequest) -> ChatResponse:
    text = last_user_text(request)
    return call("send_message", thought=f"The user said {text!r}.", message=f"echo: {text}")


def think(request: ChatRequest) -> ChatResponse:
    if request.messages[-1].role == "user":
        return call(
            "archival_memory_insert",
            thought="Worth keeping.",
            content=last_user_text(request),
            request_heartbeat=True,
        )
    return call("send_message", message=f"saved: {last_user_text(request)}")


def down(_request: ChatRequest) -> ChatResponse:
    raise CoreUnavailable(f"connection refused; api key {LEAKY_SECRET} was not accepted")


async def slow(request: ChatRequest) -> ChatResponse:
    await asyncio.sleep(0.4)
    return echo(request)


TEST_CONFIG = ServerConfig(
    models=("scripted/*",),
    embedders=("test/hash",),
    default_model="scripted/echo",
    default_embedder="test/hash",
    rate=1000.0,
    burst=10_000.0,
)


class LiveServer:
    """uvicorn serving llmos on 127.0.0.1 in a daemon thread."""

    def __init__(
        self,
        home: Path,
        config: ServerConfig = TEST_CONFIG,
        users: dict[str, str] | None = None,
    ) -> None:
        """`users`: name -> API key of users already on `home` (from an earlier
        LiveServer's `users`); without it, alice and bob are created."""
        self.kernel = Kernel.open(home, embedders={"test/hash": HashEmbedder()})
        for model, policy in {
            "scripted/echo": echo,
            "scripted/think": think,
            "scripted/down": down,
            "scripted/slow": slow,
        }.items():
            core = ScriptedCore(policy, name=model, capacity=8)
            self.kernel.add_core(core, model=model)
        # A failing core is retried with backoff by default; tests want the
        # failure now.
        self.kernel.queue(self.kernel.core("scripted/down")).retries = 0
        access = AccessManager(self.kernel.db)
        self.users: dict[str, str] = dict(users or {})
        for name in ("alice", "bob"):
            if name not in self.users:
                _, self.users[name] = access.create_user(name)
        self.access = access
        self.app = create_app(self.kernel, config)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=0,
                log_config=None,  # records propagate to the root logger (caplog)
                lifespan="on",
                ws="none",
                # uvicorn's 5 s default races a client (schemathesis' requests session)
                # that reuses a connection after a pause: reset by peer, a flaky failure
                timeout_keep_alive=300,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def client(self, user: str | None = "alice", **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.users[user]}"} if user else {}
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, headers=headers, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        asyncio.run(self.kernel.close())


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("server"))
    yield server
    server.stop()


@pytest.fixture
def alice(live: LiveServer) -> Iterator[httpx.Client]:
    with live.client("alice") as c:
        yield c


@pytest.fixture
def bob(live: LiveServer) -> Iterator[httpx.Client]:
    with live.client("bob") as c:
        yield c


def unique(prefix: str = "agent") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def agent(alice: httpx.Client) -> str:
    """A fresh echo agent of alice's; returns its name."""
    name = unique()
    r = alice.post("/v1/agents", json={"name": name, "model": "scripted/echo"})
    assert r.status_code == 201, r.text
    return name
