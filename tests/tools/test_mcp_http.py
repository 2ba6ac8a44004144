"""MCP over streamable HTTP end to end, on a real server on loopback.

The server is `mcp_server.py --http PORT` (FastMCP's streamable-HTTP app run
by uvicorn) in a subprocess, so a test can kill it and start it again on the
same port. Tested: registering by URL lists its tools as attachable llmos
tools and an agent (a ScriptedCore) calls one; a killed server is a failed
tool result at once, and a call pending when it dies fails at its timeout;
a server started again is reconnected to, including by the very next call
when it restarted between calls; a tool that raises is a failed result with
its error text. Left out: the tools' schemas and removal (test_mcp.py covers
them over stdio, and they do not depend on the transport).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from llmos import Kernel
from tests.tools.test_mcp import SERVER, agent, calls

#: how long a server process may take to import the SDK and listen (2 cores, a loaded CI)
START_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpServer:
    """`mcp_server.py --http PORT` as a process: started, killed and started again."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/mcp"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.pid = 0  # of the process started last
        self._stderr: IO[bytes] | None = None

    def start(self) -> int:
        """Start the server and wait until its port accepts connections; its pid."""
        assert self.process is None, "already running"
        self._stderr = self.log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, *SERVER, "--http", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the MCP server exited: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                self.pid = self.process.pid
                return self.pid
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the MCP server did not listen on {self.port}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no goodbye to its clients, as when a server crashes."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HttpServer]:
    s = HttpServer(free_port(), tmp_path / "mcp_server.log")
    s.start()
    yield s
    s.kill()


async def test_an_agent_calls_a_tool_of_an_http_server(kernel: Kernel, server: HttpServer) -> None:
    added = await kernel.mcp.add("web", url=server.url)
    assert added["transport"] == "http" and added["target"] == server.url
    names = ["web__add", "web__fail", "web__sleep", "web__whoami"]
    assert [t["name"] for t in added["tools"]] == names
    assert added["tools"][0]["parameters"]["required"] == ["a", "b"]
    assert set(names) <= {t["name"] for t in kernel.list_tools()}
    assert not added["running"]  # registering does not keep a session open

    core = await agent(kernel, "ann", calls("web__add", a=2, b=40))
    kernel.attach_tool("ann", "web__add")
    turn = await kernel.send("ann", "add them")
    assert [c.name for c in turn.function_calls] == ["web__add", "send_message"]
    assert turn.function_calls[0].ok and turn.reply == "tool said: 42"
    assert {t.name: t for t in core.requests[0].tools}["web__add"].description == (
        "Add two integers."
    )
    assert kernel.audit()[0]["target"] == "web__add"
    assert kernel.mcp.describe("local", "web")["running"]  # the call's session stays open


async def test_a_tool_that_raises_is_a_failed_result(kernel: Kernel, server: HttpServer) -> None:
    await kernel.mcp.add("web", url=server.url)
    await agent(kernel, "bo", calls("web__fail", why="the disk is on fire"))
    kernel.attach_tool("bo", "web__fail")
    turn = await kernel.send("bo", "fail")
    failed = turn.function_calls[0]
    assert failed.name == "web__fail" and not failed.ok
    assert "the disk is on fire" in failed.result
    # the session survives a tool's error
    direct = await kernel.mcp.call("local", "web", "fail", {"why": "again"})
    assert not direct.ok and direct.error is not None and "again" in direct.error
    assert (await kernel.mcp.call("local", "web", "add", {"a": 1, "b": 1})).result == "2"


async def test_a_killed_http_server_fails_fast_and_is_reconnected_when_back(
    kernel: Kernel, server: HttpServer
) -> None:
    kernel.mcp.call_timeout = 20  # the failures below must come long before it
    await kernel.mcp.add("web", url=server.url)
    await agent(kernel, "cy", calls("web__whoami"))
    kernel.attach_tool("cy", "web__whoami")
    first = await kernel.mcp.call("local", "web", "whoami", {})
    assert first.ok and first.result == str(server.pid)

    # killed: the agent's next call is a clear failed result, fast
    server.kill()
    started = time.monotonic()
    turn = await kernel.send("cy", "who is there?")
    failed = turn.function_calls[0]
    assert failed.name == "web__whoami" and not failed.ok
    assert "MCP server 'web'" in failed.result, failed.result
    assert time.monotonic() - started < 5
    # still down: calls keep failing fast, now at connecting
    started = time.monotonic()
    down = await kernel.mcp.call("local", "web", "whoami", {})
    assert not down.ok and down.error is not None
    assert "cannot start MCP server 'web'" in down.error, down.error
    assert time.monotonic() - started < 5

    # back on the same port: the next call connects a new session
    pid = server.start()
    back = await kernel.mcp.call("local", "web", "whoami", {})
    assert back.ok, back.error
    assert back.result == str(pid) != first.result
    turn = await kernel.send("cy", "who is there now?")
    assert turn.function_calls[0].ok and turn.reply == f"tool said: {pid}"

    # restarted between two calls: the server no longer knows the session
    # ("Session terminated"); the call reconnects and succeeds on its own
    server.kill()
    pid = server.start()
    again = await kernel.mcp.call("local", "web", "whoami", {})
    assert again.ok, again.error
    assert again.result == str(pid)


async def test_a_call_pending_when_the_server_dies_fails_within_its_timeout(
    kernel: Kernel, server: HttpServer
) -> None:
    # The SDK ends a streamed response cut off by the server's death without
    # telling the session, so the call fails at its timeout (a short one here).
    kernel.mcp.call_timeout = 2
    await kernel.mcp.add("web", url=server.url)
    assert (await kernel.mcp.call("local", "web", "whoami", {})).ok  # the session is open
    started = time.monotonic()
    pending = asyncio.create_task(kernel.mcp.call("local", "web", "sleep", {"seconds": 60}))
    await asyncio.sleep(0.3)  # let the request reach the server (if not: a faster failure)
    server.kill()
    result = await asyncio.wait_for(pending, kernel.mcp.call_timeout + 5)
    assert not result.ok and result.error is not None
    assert "MCP server 'web', tool 'sleep'" in result.error, result.error
    assert time.monotonic() - started < kernel.mcp.call_timeout + 2

    pid = server.start()
    back = await kernel.mcp.call("local", "web", "whoami", {})
    assert back.ok and back.result == str(pid), back.error
