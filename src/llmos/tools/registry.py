"""The tool manager: user tools registered from Python source, stored, attached to agents.

`ToolManager.add(source, owner)` runs the file in the sandbox once (user code
never runs in the kernel's process, not even at registration) to find its
public functions and build each one's schema from its signature and docstring
(`schema.py`), then stores one row per function in `tools` (re-adding a name
bumps its version). Tools are attached to agents by name (`agent_tools`); an
agent's request tools are the built-ins plus its attached tools
(`specs_for`), and an attached tool is what the agent is granted to call.
The built-in tools (`tools/builtin/`: calculate, current_time, fetch_url,
run_python) are attached the same way, under names no user tool may take.

Versions: every `add` of a name stores a new version in `tool_versions`
(who wrote it, and for an agent-written tool who approved it); the `tools`
row is the version in use. `rollback(name, version)` puts an older version
back in use; the next `add` still gets a new, higher number.
`run()` executes one call in a fresh sandbox off the event loop; a tool
declared exclusive runs one call at a time (an asyncio lock per tool), others
run in parallel across agents.

`allow_unsafe` says what happens where no OS sandbox works (no bubblewrap):
True (the default, the CLI's single local user) runs tools in a plain
subprocess with a warning once; False (`llmos serve` without
`--unsafe-tools`) refuses: `add` raises SandboxUnavailable and a call is a
failed result naming what is missing.

Flags: a file may set `__exclusive__` / `__irreversible__` to True (every tool
in it) or to a set of tool names; `add(..., exclusive=, irreversible=)`
overrides. Irreversible tools need their owner's approval per call (see
`access/approvals.py` and `tools/executor.py`).

Each agent's attached set is cached in this process (it is read at every
step) and dropped on every change made through this manager, or through the
MCP manager (`invalidate`). A change made by another process (another node,
or a `llmos tool attach` while `llmos serve` runs) reaches this one within
ATTACHED_TTL seconds, when its cached set expires.

Left out: tool dependencies (a tool can import what the kernel's Python has,
nothing else), and sharing tools between owners.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select

from llmos.access.grants import Grants
from llmos.errors import InvalidRequest, NotFound
from llmos.expiring import ExpiringCache
from llmos.llm.core import ToolSpec
from llmos.storage.models import agent_tools, tool_versions, tools
from llmos.tools import builtin, sandbox
from llmos.tools.builtin.fetch_url import policy_from_env
from llmos.tools.mcp import mcp_server_of

if TYPE_CHECKING:
    from llmos.storage.db import Database
    from llmos.tools.mcp import McpManager


class ToolError(InvalidRequest):
    """A tool file that cannot be registered; the message says why."""

    code = "tool_error"


class ToolNotFound(NotFound):
    """No tool of that name for this owner."""

    code = "tool_not_found"


@dataclass(slots=True, frozen=True)
class UserTool:
    id: int
    owner: str
    name: str
    description: str
    source: str
    function: str
    version: int
    parameters: dict[str, Any]
    exclusive: bool
    irreversible: bool

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)

    @property
    def builtin(self) -> bool:
        return self.source.startswith(builtin.BUILTIN_PREFIX)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "owner": self.owner,
            "version": self.version,
            "description": self.description,
            "parameters": self.parameters,
            "exclusive": self.exclusive,
            "irreversible": self.irreversible,
            "builtin": self.builtin,
        }


def builtin_tool(owner: str, name: str) -> UserTool | None:
    """The built-in tool `name` as a UserTool of `owner` (version 0: it has no versions)."""
    b = builtin.TOOLS.get(name)
    if b is None:
        return None
    params = builtin.parameters(b)
    tool_id = -1 - list(builtin.TOOLS).index(name)  # below every stored id: specs_for's key
    source = builtin.source_of(name)
    return UserTool(tool_id, owner, name, b.description, source, name, 0, params, False, False)


def _version_row(r: Any) -> dict[str, Any]:
    return {
        "name": r.name,
        "version": r.version,
        "description": r.description,
        "author": r.author,
        "approved_by": r.approved_by,
        "created_at": r.created_at,
        "source": r.source,
    }


def _row_tool(r: Any) -> UserTool:
    return UserTool(
        r.id,
        r.owner,
        r.name,
        r.description,
        r.source,
        r.function,
        r.version,
        r.schema,
        bool(r.exclusive),
        bool(r.irreversible),
    )


#: seconds an agent's attached set is reused before it is read again: how long a
#: tool attached or changed through another node takes to reach this one
ATTACHED_TTL = 5.0


class ToolManager:
    def __init__(
        self, db: Database, limits: sandbox.Limits | None = None, *, allow_unsafe: bool = True
    ) -> None:
        # (agent id, owner) -> attached tools: read on every step, changed rarely.
        # Every change made through this process clears it (`invalidate`; a
        # lookup in a reader thread that it overtook keeps nothing, see
        # kernel/wake.py); other processes' changes arrive as entries expire.
        self.attached_cache: ExpiringCache[tuple[str, str], list[UserTool]] = ExpiringCache(
            ATTACHED_TTL
        )
        self.db = db
        self.limits = limits or sandbox.Limits()
        self.allow_unsafe = allow_unsafe
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # ToolSpecs by (tool id, version): rebuilt only when a tool changes
        self._specs: dict[tuple[int, int], ToolSpec] = {}
        # set by the kernel: runs the tools of MCP servers (tools/mcp.py)
        self.mcp: McpManager | None = None

    async def add(
        self,
        source: str,
        owner: str = "local",
        *,
        exclusive: bool | None = None,
        irreversible: bool | None = None,
        reserved: frozenset[str] | set[str] = frozenset(),
        description: str | None = None,
        author: str | None = None,
        approved_by: str | None = None,
    ) -> list[dict[str, Any]]:
        """Register every public function of `source` as a tool of `owner`.

        `description` replaces the docstring's (a one-function file); `author`
        and `approved_by` go in the version's record. Raises ToolError, or
        SandboxUnavailable (no OS sandbox, unsafe not allowed)."""
        found = await self.describe_source(source)
        if not found.ok or not found.tools:
            raise ToolError(f"cannot register the tool file: {found.error}")
        clash = [
            t["name"] for t in found.tools if t["name"] in reserved or t["name"] in builtin.TOOLS
        ]
        if clash:
            raise ToolError(f"{', '.join(clash)}: the name of a built-in function; rename it")
        now = time.time()
        out = []
        with self.db.begin() as conn:
            for t in found.tools:
                flags = {
                    "exclusive": int(t["exclusive"] if exclusive is None else exclusive),
                    "irreversible": int(
                        t["irreversible"] if irreversible is None else irreversible
                    ),
                }
                old = conn.execute(
                    select(tools.c.id, tools.c.version).where(
                        tools.c.owner == owner, tools.c.name == t["name"]
                    )
                ).first()
                latest = conn.execute(
                    select(func.max(tool_versions.c.version)).where(
                        tool_versions.c.owner == owner, tool_versions.c.name == t["name"]
                    )
                ).scalar()
                values = {
                    "description": (description or "").strip() or t["description"],
                    "source": source,
                    "function": t["name"],
                    "schema": t["parameters"],
                    "updated_at": now,
                    **flags,
                }
                if old is not None and latest is None:
                    self._keep_version(conn, owner, old.id)  # registered before versions were kept
                version = max(latest or 0, old.version if old else 0) + 1
                if old is None:
                    conn.execute(
                        tools.insert().values(
                            owner=owner, name=t["name"], version=version, created_at=now, **values
                        )
                    )
                else:
                    conn.execute(
                        tools.update().where(tools.c.id == old.id).values(version=version, **values)
                    )
                conn.execute(
                    tool_versions.insert().values(
                        owner=owner,
                        name=t["name"],
                        version=version,
                        author=author or f"user:{owner}",
                        approved_by=approved_by,
                        created_at=now,
                        **{k: v for k, v in values.items() if k != "updated_at"},
                    )
                )
                out.append(
                    {"name": t["name"], "version": version, "description": values["description"]}
                    | {k: bool(v) for k, v in flags.items()}
                )
        self.invalidate()  # a new version's schema must reach the agents using it
        return out

    async def describe_source(self, source: str) -> sandbox.SandboxResult:
        """The tools `source` defines, found in the sandbox. Raises SandboxUnavailable."""
        backend = sandbox.select(self.allow_unsafe)
        return await sandbox.arun({"mode": "describe", "source": source}, self.limits, backend)

    async def test_call(
        self, source: str, function: str, args: dict[str, Any]
    ) -> sandbox.SandboxResult:
        """One call of a function of `source` that is not registered (yet), in the sandbox."""
        try:
            backend = sandbox.select(self.allow_unsafe)
        except sandbox.SandboxUnavailable as e:
            return sandbox.SandboxResult(False, error=str(e))
        request = {"mode": "call", "source": source, "function": function, "args": args}
        return await sandbox.arun(request, self.limits, backend)

    def _keep_version(self, conn: Any, owner: str, tool_id: int) -> None:
        r = conn.execute(select(tools).where(tools.c.id == tool_id)).first()
        conn.execute(
            tool_versions.insert().values(
                owner=owner,
                name=r.name,
                version=r.version,
                created_at=r.updated_at,
                **_versioned(r),
            )
        )

    def versions(self, owner: str, name: str) -> list[dict[str, Any]]:
        """Every stored version of the tool, oldest first, each marked `current` or not."""
        current = self.get(owner, name)
        if current is None:
            raise ToolNotFound(f"no tool named {name!r}")
        with self.db.connect() as conn:
            rows = conn.execute(
                select(tool_versions)
                .where(tool_versions.c.owner == owner, tool_versions.c.name == name)
                .order_by(tool_versions.c.version)
            ).fetchall()
        found = [_version_row(r) | {"current": r.version == current.version} for r in rows]
        if not any(v["current"] for v in found):  # registered before versions were kept
            found.append(
                {"name": name, "version": current.version, "description": current.description}
                | {"author": None, "approved_by": None, "created_at": None}
                | {"source": current.source, "current": True}
            )
        return found

    def rollback(self, owner: str, name: str, version: int) -> dict[str, Any]:
        """Put a stored version of the tool back in use. Raises ToolNotFound."""
        if self.get(owner, name) is None:  # before its versions: the same error as any name
            raise ToolNotFound(f"no tool named {name!r}")
        with self.db.begin() as conn:
            r = conn.execute(
                select(tool_versions).where(
                    tool_versions.c.owner == owner,
                    tool_versions.c.name == name,
                    tool_versions.c.version == version,
                )
            ).first()
            if r is None:
                raise ToolNotFound(f"the tool {name!r} has no version {version}")
            done = conn.execute(
                tools.update()
                .where(tools.c.owner == owner, tools.c.name == name)
                .values(version=r.version, updated_at=time.time(), **_versioned(r))
            ).rowcount
            if not done:
                raise ToolNotFound(f"no tool named {name!r}")
        self.invalidate()
        return _version_row(r) | {"current": True}

    def list_builtin(self) -> list[dict[str, Any]]:
        return [t.describe() for n in builtin.TOOLS if (t := builtin_tool("", n)) is not None]

    def get(self, owner: str, name: str) -> UserTool | None:
        with self.db.connect() as conn:
            r = conn.execute(
                select(tools).where(tools.c.owner == owner, tools.c.name == name)
            ).first()
        return None if r is None else _row_tool(r)

    def list(self, owner: str = "local") -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            rows = conn.execute(
                select(tools).where(tools.c.owner == owner).order_by(tools.c.name)
            ).fetchall()
        return [_row_tool(r).describe() for r in rows]

    def remove(self, owner: str, name: str) -> None:
        """Delete a tool; agents that had it attached lose it."""
        with self.db.begin() as conn:
            done = conn.execute(
                delete(tools).where(tools.c.owner == owner, tools.c.name == name)
            ).rowcount
            if not done:
                raise ToolNotFound(f"no tool named {name!r}")
            conn.execute(
                delete(tool_versions).where(
                    tool_versions.c.owner == owner, tool_versions.c.name == name
                )
            )
            # agent_tools is by name, and only agents of this owner can have it
            conn.execute(delete(agent_tools).where(agent_tools.c.tool_name == name))
        self.invalidate()

    def attach(self, agent_id: str, owner: str, name: str) -> None:
        if name not in builtin.TOOLS and self.get(owner, name) is None:
            raise ToolNotFound(f"no tool named {name!r}; add it first with `llmos tool add`")
        with self.db.begin() as conn:
            exists = conn.execute(
                select(agent_tools.c.tool_name).where(
                    agent_tools.c.agent_id == agent_id, agent_tools.c.tool_name == name
                )
            ).first()
            if exists is None:
                conn.execute(
                    agent_tools.insert().values(
                        agent_id=agent_id, tool_name=name, created_at=time.time()
                    )
                )
        self.invalidate()

    def detach(self, agent_id: str, name: str) -> bool:
        with self.db.begin() as conn:
            gone = conn.execute(
                delete(agent_tools).where(
                    agent_tools.c.agent_id == agent_id, agent_tools.c.tool_name == name
                )
            ).rowcount
        self.invalidate()
        return bool(gone)

    def invalidate(self) -> None:
        self.attached_cache.forget()

    def attached(self, agent_id: str, owner: str) -> list[UserTool]:
        """The agent's attached tools (owned by its owner), by name."""
        cached = self.attached_cache.get((agent_id, owner))
        if cached is not None:
            return cached
        generation = self.attached_cache.generation
        with self.db.connect() as conn:
            rows = conn.execute(
                select(tools)
                .select_from(
                    agent_tools.join(
                        tools, (tools.c.name == agent_tools.c.tool_name) & (tools.c.owner == owner)
                    )
                )
                .where(agent_tools.c.agent_id == agent_id)
                .order_by(tools.c.name)
            ).fetchall()
            names = conn.execute(
                select(agent_tools.c.tool_name).where(agent_tools.c.agent_id == agent_id)
            ).fetchall()
        found = [_row_tool(r) for r in rows]
        found += [t for (n,) in names if (t := builtin_tool(owner, n)) is not None]
        self.attached_cache.put((agent_id, owner), found, generation)
        return found

    def attached_tool(self, agent_id: str, owner: str, name: str) -> UserTool | None:
        return next((t for t in self.attached(agent_id, owner) if t.name == name), None)

    def specs_for(self, agent_id: str, owner: str, builtins: list[ToolSpec]) -> list[ToolSpec]:
        """Built-ins plus attached tools; the built-in list itself when none is attached."""
        attached = self.attached(agent_id, owner)
        if not attached:
            return builtins
        out = list(builtins)
        for t in attached:
            key = (t.id, t.version)
            spec = self._specs.get(key)
            if spec is None:
                spec = self._specs[key] = t.spec()
            out.append(spec)
        return out

    async def run(
        self, tool: UserTool, args: dict[str, Any], agent_id: str | None = None
    ) -> sandbox.SandboxResult:
        """One call in a fresh sandbox, for `agent_id` (its `net` grants are the hosts
        the tool may reach; none without an agent); exclusive tools wait for their
        previous call."""
        if not tool.exclusive:
            return await self._run(tool, args, agent_id)
        lock = self._locks.setdefault((tool.owner, tool.name), asyncio.Lock())
        async with lock:
            return await self._run(tool, args, agent_id)

    async def _run(
        self, tool: UserTool, args: dict[str, Any], agent_id: str | None
    ) -> sandbox.SandboxResult:
        if tool.builtin:
            env = builtin.Env(self.limits, self.allow_unsafe, policy_from_env())
            return await builtin.run(tool.function, args, env)
        server = mcp_server_of(tool.source)
        if self.mcp is not None and server is not None:
            return await self.mcp.call(tool.owner, server, tool.function, args)
        try:
            backend = sandbox.select(self.allow_unsafe)
        except sandbox.SandboxUnavailable as e:
            return sandbox.SandboxResult(False, error=str(e))
        request = {"mode": "call", "source": tool.source, "function": tool.function, "args": args}
        if agent_id is not None:
            request["hosts"] = Grants(self.db).hosts(agent_id)
        return await sandbox.arun(request, self.limits, backend)


#: What a tool version holds besides its name and number: kept, and put back on rollback.
VERSIONED_COLUMNS = ("description", "source", "function", "schema", "exclusive", "irreversible")


def _versioned(row: Any) -> dict[str, Any]:
    return {c: getattr(row, c) for c in VERSIONED_COLUMNS}
