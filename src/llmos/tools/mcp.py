"""MCP servers as tool providers: their tools become attachable llmos tools.

An owner registers an MCP server by name — a command started over stdio
(`llmos mcp add NAME -- COMMAND ARGS...`) or a streamable-HTTP URL
(`llmos mcp add NAME --url URL`). Registering connects once, lists the
server's tools and stores each one as a row of `tools` named `NAME__tool`
(only `[A-Za-z0-9_-]`, at most 64 characters: valid OpenAI function names),
with the server's input schema. From then on an MCP tool is attached,
granted, approved (when registered `irreversible`) and audited exactly like
a Python tool; only running it differs: `ToolManager.run` hands it to
`McpManager.call`, which calls `session.call_tool` on the server.

Sessions are per kernel: started on the first call (not at kernel start),
kept open, closed by `Kernel.close`. Every step has a timeout — starting,
initializing, listing, calling, closing — so a hung server never hangs an
agent. A server found dead (its connection closed) when a call comes is
restarted by that call, once; so is a session an HTTP server no longer
knows (it restarted since: the SDK's "Session terminated"). A stdio call
pending when its server dies fails at once ("connection closed"); over
HTTP the SDK ends such a request silently, so it fails at its timeout. A
call to an HTTP server that is down fails at once. A call that fails so, or
times out, drops its session, so the next call starts a fresh one. Every
failure is a failed tool result the model reads; `call` never raises.

The `mcp` SDK (1.x) is imported only when a session starts, so `import
llmos` does not pay for it. Left out: MCP resources, prompts, sampling and
notifications (tools only), authentication headers for HTTP servers,
re-listing a server's tools on each start (`llmos mcp add` again refreshes
them), and retrying a call that timed out (a tool may have side effects; a
call is retried only when its server's connection turned out closed, or
its session unknown to the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from llmos.storage.models import agent_tools, mcp_servers, tools
from llmos.tools.sandbox import SandboxResult

if TYPE_CHECKING:
    from llmos.storage.db import Database
    from llmos.tools.registry import UserTool

#: the `source` of a tool row that is an MCP tool: this prefix, then the server name
MCP_SOURCE = "#mcp:"
#: a server name: part of every tool name, so no "__" (the separator) and short
SERVER_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_)){0,31}$")
TRANSPORTS = ("stdio", "http")
#: how often a pending call checks that its server is still there
_WATCH_SECONDS = 0.2
_HEARTBEAT = {"type": "boolean", "description": "true: take another step after this call"}


class McpServerError(ValueError):
    """An MCP server that cannot be registered or reached; the message says why."""


class McpServerNotFound(LookupError):
    """No MCP server of that name for this owner."""


@dataclass(slots=True, frozen=True)
class McpServerConfig:
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


def tool_name(server: str, tool: str) -> str:
    """The llmos name of an MCP server's tool: `SERVER__tool`, a valid function name."""
    return f"{server}__{re.sub(r'[^A-Za-z0-9_-]', '_', tool)}"[:64]


def mcp_server_of(tool: UserTool) -> str | None:
    """The server name if `tool` is an MCP tool, else None."""
    if tool.source.startswith(MCP_SOURCE) and "\n" not in tool.source:
        return tool.source[len(MCP_SOURCE) :]
    return None


def _reason(e: BaseException) -> str:
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


def _schema(input_schema: dict[str, Any] | None) -> dict[str, Any]:
    """The server's input schema as function parameters, with llmos's request_heartbeat."""
    schema = dict(input_schema or {})
    schema["type"] = "object"
    props = dict(schema.get("properties") or {})
    props.setdefault("request_heartbeat", _HEARTBEAT)
    schema["properties"] = props
    return schema


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
class _Session:
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
                f"cannot start MCP server {self.config.name!r}: {_reason(e)}" + self._stderr_tail()
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
                ready.set_exception(e if isinstance(e, Exception) else RuntimeError(_reason(e)))
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


class McpManager:
    """Registered MCP servers (database) and this kernel's sessions to them (memory)."""

    def __init__(
        self,
        db: Database,
        *,
        start_timeout: float = 30.0,
        call_timeout: float = 60.0,
    ) -> None:
        self.db = db
        self.start_timeout = start_timeout
        self.call_timeout = call_timeout
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Called after the tools table changes, so cached tool lists refresh.
        self.on_change: Callable[[], None] | None = None

    # --- configuration ----------------------------------------------------------------

    async def add(
        self,
        name: str,
        owner: str = "local",
        *,
        command: str | None = None,
        args: list[str] | tuple[str, ...] = (),
        url: str | None = None,
        irreversible: bool = False,
    ) -> dict[str, Any]:
        """Register (or re-register) a server and its tools. Raises McpServerError.

        Connects once to list the tools; nothing is stored if that fails.
        """
        if not SERVER_NAME.match(name or ""):
            raise McpServerError(
                "an MCP server name is 1 to 32 letters, digits, '-' or single '_' "
                "(no '__'), starting with a letter or digit"
            )
        if (command is None) == (url is None):
            raise McpServerError("give either a command (stdio) or --url (streamable HTTP)")
        if url is not None and not re.match(r"^https?://", url):
            raise McpServerError(f"not an http(s) URL: {url!r}")
        config = McpServerConfig(owner, name, "http" if url else "stdio", command, tuple(args), url)
        session = _Session(config)
        await session.start(self.start_timeout)
        try:
            listed = await asyncio.wait_for(session.session.list_tools(), self.start_timeout)
        except Exception as e:
            why = _reason(e)
            raise McpServerError(f"MCP server {name!r} did not list its tools: {why}") from None
        finally:
            await session.close()
        found: dict[str, Any] = {}
        for t in listed.tools:
            llmos_name = tool_name(name, t.name)
            if llmos_name in found:
                raise McpServerError(f"two tools of {name!r} would both be named {llmos_name}")
            found[llmos_name] = t
        await self._drop((owner, name))  # a running session of the old config
        self._store(config, found, irreversible)
        return self.describe(owner, name)

    def _store(self, config: McpServerConfig, found: dict[str, Any], irreversible: bool) -> None:
        now = time.time()
        source = MCP_SOURCE + config.name
        with self.db.begin() as conn:
            conn.execute(
                delete(mcp_servers).where(
                    mcp_servers.c.owner == config.owner, mcp_servers.c.name == config.name
                )
            )
            conn.execute(
                mcp_servers.insert().values(
                    owner=config.owner,
                    name=config.name,
                    transport=config.transport,
                    command=config.command,
                    args=list(config.args),
                    url=config.url,
                    created_at=now,
                )
            )
            old = {
                r.name: r
                for r in conn.execute(
                    select(tools.c.id, tools.c.name, tools.c.version).where(
                        tools.c.owner == config.owner, tools.c.source == source
                    )
                )
            }
            gone = [n for n in old if n not in found]
            if gone:
                conn.execute(delete(tools).where(tools.c.id.in_([old[n].id for n in gone])))
                self._detach(conn, config.owner, gone)
            for llmos_name, t in found.items():
                values = {
                    "description": (t.description or f"{t.name} (MCP server {config.name})")[:4000],
                    "source": source,
                    "function": t.name,
                    "schema": _schema(t.inputSchema),
                    "exclusive": 0,
                    "irreversible": int(irreversible),
                    "updated_at": now,
                }
                if llmos_name in old:
                    row = old[llmos_name]
                    conn.execute(
                        tools.update()
                        .where(tools.c.id == row.id)
                        .values(version=row.version + 1, **values)
                    )
                else:
                    # a Python tool of the same name is replaced: the name is the server's
                    conn.execute(
                        delete(tools).where(
                            tools.c.owner == config.owner, tools.c.name == llmos_name
                        )
                    )
                    conn.execute(
                        tools.insert().values(
                            owner=config.owner, name=llmos_name, version=1, created_at=now, **values
                        )
                    )
        if self.on_change is not None:
            self.on_change()

    @staticmethod
    def _detach(conn: Any, owner: str, names: list[str]) -> None:
        from llmos.storage.models import agents

        mine = select(agents.c.id).where(agents.c.owner == owner)
        conn.execute(
            delete(agent_tools).where(
                agent_tools.c.tool_name.in_(names), agent_tools.c.agent_id.in_(mine)
            )
        )

    def get(self, owner: str, name: str) -> McpServerConfig:
        with self.db.connect() as conn:
            r = conn.execute(
                select(mcp_servers).where(mcp_servers.c.owner == owner, mcp_servers.c.name == name)
            ).first()
        if r is None:
            raise McpServerNotFound(f"no MCP server named {name!r}")
        return McpServerConfig(r.owner, r.name, r.transport, r.command, tuple(r.args or ()), r.url)

    def describe(self, owner: str, name: str) -> dict[str, Any]:
        """A server's config and its tools (llmos name, MCP name, description, schema)."""
        config = self.get(owner, name)
        with self.db.connect() as conn:
            rows = conn.execute(
                select(tools)
                .where(tools.c.owner == owner, tools.c.source == MCP_SOURCE + name)
                .order_by(tools.c.name)
            ).fetchall()
        return config.describe() | {
            "running": (owner, name) in self._sessions and self._sessions[(owner, name)].alive,
            "tools": [
                {
                    "name": r.name,
                    "mcp_name": r.function,
                    "description": r.description,
                    "parameters": r.schema,
                    "irreversible": bool(r.irreversible),
                }
                for r in rows
            ],
        }

    def list(self, owner: str = "local") -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            names = conn.execute(
                select(mcp_servers.c.name)
                .where(mcp_servers.c.owner == owner)
                .order_by(mcp_servers.c.name)
            ).scalars()
            names = list(names)
        return [self.describe(owner, n) for n in names]

    async def remove(self, name: str, owner: str = "local") -> None:
        """Forget a server: its tools go, agents lose them. Raises McpServerNotFound."""
        self.get(owner, name)
        await self._drop((owner, name))
        with self.db.begin() as conn:
            names = list(
                conn.execute(
                    select(tools.c.name).where(
                        tools.c.owner == owner, tools.c.source == MCP_SOURCE + name
                    )
                ).scalars()
            )
            conn.execute(
                delete(tools).where(tools.c.owner == owner, tools.c.source == MCP_SOURCE + name)
            )
            if names:
                self._detach(conn, owner, names)
            conn.execute(
                delete(mcp_servers).where(mcp_servers.c.owner == owner, mcp_servers.c.name == name)
            )

        # --- sessions and calls -------------------------------------------------------------
        if self.on_change is not None:
            self.on_change()

    async def _session(self, owner: str, name: str) -> _Session:
        """The live session to a server, started (or restarted) if needed."""
        key = (owner, name)
        async with self._locks.setdefault(key, asyncio.Lock()):
            s = self._sessions.get(key)
            if s is not None and s.alive:
                return s
            if s is not None:
                await self._drop(key)
            s = _Session(self.get(owner, name))
            await s.start(self.start_timeout)
            self._sessions[key] = s
            return s

    async def _drop(self, key: tuple[str, str]) -> None:
        s = self._sessions.pop(key, None)
        if s is not None:
            await s.close()

    async def call_tool(self, tool: UserTool, args: dict[str, Any]) -> SandboxResult:
        server = mcp_server_of(tool)
        if server is None:
            return SandboxResult(False, error=f"{tool.name} is not an MCP tool")
        return await self.call(tool.owner, server, tool.function, args)

    async def call(self, owner: str, server: str, tool: str, args: dict[str, Any]) -> SandboxResult:
        """Call one tool of a server; never raises, never waits past the timeouts."""
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                s = await self._session(owner, server)
            except (McpServerError, McpServerNotFound) as e:
                return SandboxResult(False, error=_reason(e), seconds=time.perf_counter() - started)
            try:
                result = await self._await_call(s, tool, args)
            except Exception as e:
                elapsed = time.perf_counter() - started
                timed_out = isinstance(e, TimeoutError) or "timed out" in str(e).lower()
                await self._drop((owner, server))  # the next call gets a fresh session
                # The request never reached the server, or the server refused it
                # (see _closed), so a retry cannot run the tool twice.
                if _closed(e) and attempt == 1:
                    continue
                what = f"timed out after {self.call_timeout:g}s" if timed_out else _reason(e)
                return SandboxResult(
                    False, error=f"MCP server {server!r}, tool {tool!r}: {what}", seconds=elapsed
                )
            return _result(result, time.perf_counter() - started)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _await_call(self, s: _Session, tool: str, args: dict[str, Any]) -> Any:
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
        for key in list(self._sessions):
            await self._drop(key)
