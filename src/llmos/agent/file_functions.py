"""File functions for agents: `file_write`, `file_read`, `file_list`, `file_search`, `file_delete`.

Kernel-provided tools over `storage/files.py`, offered to an agent whose
settings have `file_tools` set (so agents that do not use files do not pay
for five more schemas in every prompt). A path names a file in the agent's
own area; `shared/AREA/PATH` names one in the owner's shared area AREA, which
needs a `files` grant (`r` to read, `rw` to write) — a denial is audited and
returned to the model as a failed call. The agent's own area has a byte quota
(setting `file_quota`, default 1 MB).

Unlike the memory functions, a file write commits at once rather than with
the step: it is an effect on storage outside the agent's image, like a tool's.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from llmos.agent.functions import (
    HEARTBEAT_DOC,
    Function,
    FunctionContext,
    FunctionError,
    FunctionResult,
)
from llmos.storage.files import DEFAULT_QUOTA, FileError, agent_area, shared_area

SHARED = "shared/"


class _Args(BaseModel):
    request_heartbeat: bool = Field(False, description=HEARTBEAT_DOC)


class WriteArgs(_Args):
    path: str = Field(description="File path; shared/AREA/PATH for a shared area")
    content: str = Field(description="The whole new content")


class ReadArgs(_Args):
    path: str
    version: int | None = Field(None, ge=1, description="An older version; default current")


class ListArgs(_Args):
    prefix: str = Field("", description="Only paths starting with this (shared/AREA/ too)")


class SearchArgs(_Args):
    query: str = Field(description="Words to find in file names or contents")
    area: str | None = Field(None, description="A shared area to search instead of your own")


class DeleteArgs(_Args):
    path: str


def _resolve(ctx: FunctionContext, path: str, mode: str) -> tuple[str, str, int | None]:
    """(area, path within it, quota), after the grant check for shared areas."""
    agent = ctx.agent
    if not path.startswith(SHARED):
        return agent_area(agent.id), path, int(agent.settings.get("file_quota") or DEFAULT_QUOTA)
    name, _, rest = path[len(SHARED) :].partition("/")
    return _shared(ctx, name, mode), rest, None


def _shared(ctx: FunctionContext, name: str, mode: str) -> str:
    agent = ctx.agent
    kernel = ctx.kernel
    allowed = bool(name) and kernel.grants.allows(agent.id, "files", name, mode)
    if not allowed or mode == "rw":  # writes to shared areas are always worth a record
        kernel.audit_log.record(
            agent.owner,
            "file",
            "allowed" if allowed else "denied",
            agent_id=agent.id,
            agent_name=agent.name,
            target=f"shared/{name}",
            detail=f"mode {mode}",
        )
    if not allowed:
        need = "read" if mode == "r" else "write"
        raise FunctionError(f"permission denied: you may not {need} the shared area {name!r}")
    return shared_area(name)


async def file_write(ctx: FunctionContext, args: WriteArgs) -> FunctionResult:
    area, path, quota = _resolve(ctx, args.path, "rw")
    try:
        version = ctx.kernel.files.write(ctx.agent.owner, area, path, args.content, quota)
    except FileError as e:
        raise FunctionError(str(e)) from None
    return FunctionResult("file_write", True, f"Wrote {args.path} (version {version}).")


async def file_read(ctx: FunctionContext, args: ReadArgs) -> FunctionResult:
    area, path, _ = _resolve(ctx, args.path, "r")
    try:
        f = ctx.kernel.files.read(ctx.agent.owner, area, path, args.version)
    except FileError as e:
        raise FunctionError(str(e)) from None
    return FunctionResult(
        "file_read", True, f"{args.path} (version {f['version']}):\n{f['content']}"
    )


async def file_list(ctx: FunctionContext, args: ListArgs) -> FunctionResult:
    prefix = args.prefix
    if prefix.startswith(SHARED):
        name, _, rest = prefix[len(SHARED) :].partition("/")
        area, shown = _shared(ctx, name, "r"), f"{SHARED}{name}/"
    else:
        area, rest, shown = agent_area(ctx.agent.id), prefix, ""
    rows = ctx.kernel.files.list(ctx.agent.owner, area, rest)
    if not rows:
        return FunctionResult("file_list", True, "No files.")
    lines = [f"{shown}{r['path']} ({r['size']} bytes, v{r['version']})" for r in rows]
    return FunctionResult("file_list", True, "\n".join(lines))


async def file_search(ctx: FunctionContext, args: SearchArgs) -> FunctionResult:
    if args.area:
        area, shown = _shared(ctx, args.area, "r"), f"{SHARED}{args.area}/"
    else:
        area, shown = agent_area(ctx.agent.id), ""
    try:
        found = ctx.kernel.files.search(ctx.agent.owner, area, args.query)
    except FileError as e:
        raise FunctionError(str(e)) from None
    if not found:
        return FunctionResult("file_search", True, "No matching files.")
    lines = [f"{shown}{f['path']}: {f['snippet']}" for f in found]
    return FunctionResult("file_search", True, "\n".join(lines))


async def file_delete(ctx: FunctionContext, args: DeleteArgs) -> FunctionResult:
    area, path, _ = _resolve(ctx, args.path, "rw")
    try:
        version = ctx.kernel.files.delete(ctx.agent.owner, area, path)
    except FileError as e:
        raise FunctionError(str(e)) from None
    return FunctionResult(
        "file_delete", True, f"Deleted {args.path} (version {version} records the deletion)."
    )


FILE_FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in [
        Function("file_write", "Write a text file (keeps old versions).", WriteArgs, file_write),
        Function("file_read", "Read a text file, or an old version.", ReadArgs, file_read),
        Function("file_list", "List your files (or a shared area's).", ListArgs, file_list),
        Function("file_search", "Search files by name and content.", SearchArgs, file_search),
        Function("file_delete", "Delete a file (history is kept).", DeleteArgs, file_delete),
    ]
}
FILE_SPECS = [f.spec() for f in FILE_FUNCTIONS.values()]
