"""MCP servers as tool providers: the registered servers, whose tools become llmos tools.

An owner registers an MCP server by name — a command started over stdio
(`llmos mcp add NAME -- COMMAND ARGS...`) or a streamable-HTTP URL
(`llmos mcp add NAME --url URL`). Registering connects once, lists the
server's tools and stores each one as a row of `tools` named `NAME__tool`
(only `[A-Za-z0-9_-]`, at most 64 characters: valid OpenAI function names),
with the server's input schema. From then on an MCP tool is attached,
granted, approved (when registered `irreversible`) and audited exactly like
a Python tool; only running it differs: `ToolManager.run` hands it to
`McpManager.call`, which calls the tool on the server through the session
that `tools/mcp_client.py` keeps (started on the first call, timeouts on
every step; `call` never raises).

Left out: MCP resources, prompts, sampling and notifications (tools only),
authentication headers for HTTP servers, and re-listing a server's tools on
each start (`llmos mcp add` again refreshes them).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from llmos.errors import NotFound
from llmos.storage.models import agent_tools, mcp_servers, tools
from llmos.tools.mcp_client import McpClient, McpServerConfig, McpServerError, McpSession, reason

if TYPE_CHECKING:
    from llmos.storage.db import Database

__all__ = [
    "MCP_SOURCE",
    "SERVER_NAME",
    "McpManager",
    "McpServerConfig",
    "McpServerError",
    "McpServerNotFound",
    "mcp_server_of",
    "tool_name",
]

#: the `source` of a tool row that is an MCP tool: this prefix, then the server name
MCP_SOURCE = "#mcp:"
#: a server name: part of every tool name, so no "__" (the separator) and short
SERVER_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_)){0,31}$")
TRANSPORTS = ("stdio", "http")
_HEARTBEAT = {"type": "boolean", "description": "true: take another step after this call"}


class McpServerNotFound(NotFound):
    """No MCP server of that name for this owner."""


def tool_name(server: str, tool: str) -> str:
    """The llmos name of an MCP server's tool: `SERVER__tool`, a valid function name."""
    return f"{server}__{re.sub(r'[^A-Za-z0-9_-]', '_', tool)}"[:64]


def mcp_server_of(source: str) -> str | None:
    """The server name if a tool's `source` makes it an MCP tool, else None."""
    if source.startswith(MCP_SOURCE) and "\n" not in source:
        return source[len(MCP_SOURCE) :]
    return None


def _schema(input_schema: dict[str, Any] | None) -> dict[str, Any]:
    """The server's input schema as function parameters, with llmos's request_heartbeat."""
    schema = dict(input_schema or {})
    schema["type"] = "object"
    props = dict(schema.get("properties") or {})
    props.setdefault("request_heartbeat", _HEARTBEAT)
    schema["properties"] = props
    return schema


class McpManager(McpClient):
    """Registered MCP servers (database) and this kernel's sessions to them (memory)."""

    def __init__(
        self,
        db: Database,
        *,
        start_timeout: float = 30.0,
        call_timeout: float = 60.0,
    ) -> None:
        super().__init__(start_timeout=start_timeout, call_timeout=call_timeout)
        self.db = db
        # Called after the tools table changes, so cached tool lists refresh.
        self.on_change: Callable[[], None] | None = None

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
        session = McpSession(config)
        await session.start(self.start_timeout)
        try:
            listed = await asyncio.wait_for(session.session.list_tools(), self.start_timeout)
        except Exception as e:
            why = reason(e)
            raise McpServerError(f"MCP server {name!r} did not list its tools: {why}") from None
        finally:
            await session.close()
        found: dict[str, Any] = {}
        for t in listed.tools:
            llmos_name = tool_name(name, t.name)
            if llmos_name in found:
                raise McpServerError(f"two tools of {name!r} would both be named {llmos_name}")
            found[llmos_name] = t
        await self.drop_session(owner, name)  # a running session of the old config
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
        await self.drop_session(owner, name)
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

        if self.on_change is not None:
            self.on_change()
