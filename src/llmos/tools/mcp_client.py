"""MCP client sessions: one kernel's live connections to MCP servers, and tool calls on them.

`McpClient` keeps one session per (owner, server), started on the first call
(not at kernel start), kept open, and closed by `aclose` (`Kernel.close`).
Every step has a timeout — starting, initializing, listing, calling, closing —
so a hung server never hangs an agent. A server found dead (its connection
closed) when a call comes is restarted by that call, once; so is a session an
HTTP server no longer knows (it restarted since: the SDK's "Session
terminated"). A stdio call pending when its server dies fails at once
("connection closed"); over HTTP the SDK ends such a request silently, so it
fails at its timeout. A call to an HTTP server that is down fails at once. A
call that fails so, or times out, drops its session, so the next call starts
a fresh one. Every failure is a failed tool result the model reads; `call`
never raises.

Where a server's configuration comes from is the subclass's business
(`tools/mcp.py` reads it from the database, by `get`). The `mcp` SDK (1.x) is
imported only when a session starts, so `import llmos` does not pay for it.

Left out: retrying a call that timed out (a tool may have side effects; a call
is retried only when its server's connection turned out closed, or its
session unknown to the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from llmos.errors import InvalidRequest, NotFound
from llmos.tools.sandbox import SandboxResult

#: how often a pending call checks that its server is still there
_WATCH_SECONDS = 0.2


class McpServerError(InvalidRequest):
    """An MCP server that cannot be registered or reached; the message says why."""


@dataclass(slots=True, frozen=True)
class McpServerConfig:
    """How to reach one owner's MCP server: a command (stdio) or a URL (streamable HTTP)."""

    owner: str
    name: str
    transport: str
    command: str | None = None
    args: tuple[str, ...] = ()
    url: str | None = None

    def describe(self) -> dict[str, Any]:
        stdio = " ".join([self.command or "", *self.args])
        target = self.url if self.transport == "http" else stdio
        return {"name": self.name, "transport": self.transport, "target": target}


def reason(e: BaseException) -> str:
    """The innermost useful message: anyio wraps failures in exception groups."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    if isinstance(e, McpServerError):
        return str(e)
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _closed(e: BaseException) -> bool:
    """Whether `e` proves the call never ran: its session was gone before the server got it.

    A closed stream (a stdio server's process is gone), or, over HTTP, the
    server answering 404 to the session's id, which the SDK reports as
    "Session terminated": the server restarted and no longer knows the
    session, so it refused the request without running the tool.
    """
    import anyio  # the SDK's own dependency: loaded once a session has started
    from mcp.shared.exceptions import McpError

    if isinstance(e, McpError):
        return e.error.message == "Session terminated"
    closed = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream)
    return isinstance(e, closed)


def _result(result: Any, seconds: float) -> SandboxResult:
    """A CallToolResult as the executor's result type: text parts joined."""
    parts: list[str] = []
    for item in result.content or []:
        text = getattr(item, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(item, 'type', 'content')}]")
    if not parts and result.structuredContent is not None:
        parts.append(json.dumps(result.structuredContent, ensure_ascii=False))
    text = "\n".join(parts)
    if result.isError:
        return SandboxResult(False, error=text or "the MCP tool reported an error", seconds=seconds)
    return SandboxResult(True, result=text, seconds=seconds)


@dataclass
class McpSession:
    """One running connection to a server, owned by its own task.

    The SDK's transports and session are context managers built on anyio
    task groups, which must be entered and left in one task; so a task holds
    them open until `close()`, while calls from any task use `session`.
    """

    config: McpServerConfig
    session: Any = None
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    errlog: Any = None

    read_stream: Any = None

    @property
    def alive(self) -> bool:
        if self.session is None or self.task is None or self.task.done():
            return False
        # The transport closes its end of the read stream when the server's
        # output ends (its process died): a request sent after that would wait
        # for its timeout, since nothing reads responses any more.
        with contextlib.suppress(Exception):
            return bool(self.read_stream.statistics().open_send_streams)
        return True

    def _transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        c = self.config
        if c.transport == "http":
            from mcp.client import streamable_http

            # newer 1.x SDKs renamed the client and deprecated the old name
            connect = getattr(streamable_http, "streamable_http_client", None)
            return (connect or streamable_http.streamablehttp_client)(c.url or "")
        from mcp.client.stdio import StdioServerParameters, stdio_client

        # the server's stderr goes to a file: its last lines explain a failed start
        # (closed in close(): it outlives this method, so no `with`)
        self.errlog = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        params = StdioServerParameters(command=c.command or "", args=list(c.args))
        return stdio_client(params, errlog=self.errlog)

    async def start(self, timeout: float) -> None:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._run(ready), name=f"mcp:{self.config.name}")
        try:
            await asyncio.wait_for(asyncio.shield(ready), timeout)
        except TimeoutError:
            await self.close()
            raise McpServerError(
                f"MCP server {self.config.name!r} did not start within {timeout:g}s"
                + self._stderr_tail()
            ) from None
        except BaseException as e:
            await self.close()
            raise McpServerError(
                f"cannot start MCP server {self.config.name!r}: {reason(e)}" + self._stderr_tail()
            ) from None

    async def _run(self, ready: asyncio.Future[None]) -> None:
        from mcp import ClientSession

        try:
            async with self._transport() as streams, ClientSession(streams[0], streams[1]) as s:
                await s.initialize()
                self.read_stream = streams[0]
                self.session = s
                ready.set_result(None)
                await self.stop.wait()
        except BaseException as e:
            if not ready.done():
                ready.set_exception(e if isinstance(e, Exception) else RuntimeError(reason(e)))
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            self.session = None

    def _stderr_tail(self) -> str:
        if self.errlog is None:
            return ""
        with contextlib.suppress(Exception):
            self.errlog.seek(0)
            lines = [ln for ln in self.errlog.read().splitlines() if ln.strip()]
            if lines:
                return f" (its stderr: {lines[-1][:300]})"
        return ""

    async def close(self, timeout: float = 5.0) -> None:
        self.stop.set()
        task = self.task
        if task is not None and not task.done():
            # the transport stops the server process on exit; a stuck exit is cancelled
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(task, timeout)
        if self.errlog is not None:
            with contextlib.suppress(Exception):
                self.errlog.close()
            self.errlog = None


class McpClient:
    """Sessions to MCP servers and calls of their tools; `get` names a server's config."""

    def __init__(self, *, start_timeout: float = 30.0, call_timeout: float = 60.0) -> None:
        self.start_timeout = start_timeout
        self.call_timeout = call_timeout
        self._sessions: dict[tuple[str, str], McpSession] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def get(self, owner: str, name: str) -> McpServerConfig:
        """The configuration of `owner`'s server `name`; raises a NotFound if there is none."""
        raise NotImplementedError

    async def _session(self, owner: str, name: str) -> McpSession:
        """The live session to a server, started (or restarted) if needed."""
        key = (owner, name)
        async with self._locks.setdefault(key, asyncio.Lock()):
            s = self._sessions.get(key)
            if s is not None and s.alive:
                return s
            if s is not None:
                await self.drop_session(owner, name)
            s = McpSession(self.get(owner, name))
            await s.start(self.start_timeout)
            self._sessions[key] = s
            return s

    async def drop_session(self, owner: str, name: str) -> None:
        """Close the session to a server, if one is open; the next call starts a fresh one."""
        s = self._sessions.pop((owner, name), None)
        if s is not None:
            await s.close()

    async def call(self, owner: str, server: str, tool: str, args: dict[str, Any]) -> SandboxResult:
        """Call one tool of a server; never raises, never waits past the timeouts."""
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                s = await self._session(owner, server)
            except (McpServerError, NotFound) as e:
                return SandboxResult(False, error=reason(e), seconds=time.perf_counter() - started)
            try:
                result = await self._await_call(s, tool, args)
            except Exception as e:
                elapsed = time.perf_counter() - started
                timed_out = isinstance(e, TimeoutError) or "timed out" in str(e).lower()
                await self.drop_session(owner, server)  # the next call gets a fresh session
                # The request never reached the server, or the server refused it
                # (see _closed), so a retry cannot run the tool twice.
                if _closed(e) and attempt == 1:
                    continue
                what = f"timed out after {self.call_timeout:g}s" if timed_out else reason(e)
                return SandboxResult(
                    False, error=f"MCP server {server!r}, tool {tool!r}: {what}", seconds=elapsed
                )
            return _result(result, time.perf_counter() - started)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _await_call(self, s: McpSession, tool: str, args: dict[str, Any]) -> Any:
        """The call's result; TimeoutError past the timeout, ConnectionError if the server dies.

        The SDK answers a request that was pending when the connection closed,
        but not one sent just after: without watching the session, a call to a
        server that died a moment ago would wait out its whole timeout.
        """
        pending = asyncio.ensure_future(
            s.session.call_tool(
                tool, args, read_timeout_seconds=timedelta(seconds=self.call_timeout)
            )
        )
        deadline = time.monotonic() + self.call_timeout
        try:
            while True:
                done, _ = await asyncio.wait({pending}, timeout=_WATCH_SECONDS)
                if done:
                    return pending.result()
                if not s.alive:
                    raise ConnectionError("the server's connection closed (did it exit?)")
                if time.monotonic() > deadline:
                    raise TimeoutError
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending

    async def aclose(self) -> None:
        """Close every session (the kernel is closing)."""
        for owner, name in list(self._sessions):
            await self.drop_session(owner, name)
