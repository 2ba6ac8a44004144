"""File routes: an agent's own file area and the caller's shared areas, versioned.

The same seven operations on two kinds of area:

| route (under `/v1`)                                   | what                          |
|-------------------------------------------------------|-------------------------------|
| `GET  /agents/{agent}/files?prefix=`                  | list current files            |
| `GET  /agents/{agent}/files/{path}?version=`          | read (an older version too)   |
| `PUT  /agents/{agent}/files/{path}` `{content}`       | write: a new version          |
| `DELETE /agents/{agent}/files/{path}`                 | delete (history stays)        |
| `GET  /agents/{agent}/file-versions/{path}`           | the file's versions           |
| `POST /agents/{agent}/file-rollback/{path}` `{version}` | that version again, as a new one |
| `GET  /agents/{agent}/file-search?query=&limit=`      | files whose name or text has it |

and the same under `/shared/{area}/...` for a shared area. Areas belong to
the caller: another user's agent is a 404, and a shared area's name is per
user (bob's `shared/notes` is not alice's). Writes to an agent's area keep
to the agent's quota (setting `file_quota`), as the agent's own writes do:
over it is a 413. A missing file or version is a 404, a bad path a 422.

Left out: binary content, moving files between areas, and quotas on shared
areas (the storage manager has none).
"""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from llmos.server.deps import MAX_INT, APIError, CurrentUser, KernelDep
from llmos.storage.files import DEFAULT_QUOTA, MAX_PATH, FileError, QuotaExceeded

router = APIRouter(tags=["files"])

FilePath = Annotated[str, Path(description="The file's path in the area.", max_length=MAX_PATH)]
AreaName = Annotated[
    str, Path(description="The shared area's name.", max_length=128, pattern=r"^[\w.@+-]+$")
]


class FileWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(max_length=1_000_000, description="the file's new text")


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=MAX_INT, description="the version whose content becomes current")


class Area(BaseModel):
    """Where an operation lands: a storage area of the caller, with its quota."""

    owner: str
    area: str
    quota: int | None = None


async def agent_area(
    agent: Annotated[str, Path(description="The agent's name or id.", max_length=128)],
    user: CurrentUser,
    kernel: KernelDep,
) -> Area:
    _, image = kernel.process(agent, user.owner)  # AgentNotFound: 404
    quota = int(image.settings.get("file_quota") or DEFAULT_QUOTA)
    return Area(
        owner=user.owner, area=kernel.file_area(agent=image.id, owner=user.owner), quota=quota
    )


async def shared_area(area: AreaName, user: CurrentUser, kernel: KernelDep) -> Area:
    return Area(owner=user.owner, area=kernel.file_area(shared=area, owner=user.owner))


def file_error(e: FileError) -> APIError:
    """The HTTP error for a storage error (the app's handler for FileError)."""
    text = str(e)
    if isinstance(e, QuotaExceeded):
        return APIError(413, text, code="quota_exceeded")
    if text.startswith("no file") or "has no version" in text:
        return APIError(404, text, "not_found_error", code="file_not_found")
    return APIError(422, text, code="bad_path")


def _add_routes(prefix: str, resolve: Callable[..., Coroutine[Any, Any, Area]], where: str) -> None:
    """Register the file operations under `prefix` for areas found by `resolve`."""
    Target = Annotated[Area, Depends(resolve)]

    @router.get(f"{prefix}/files", summary=f"List files of {where}")
    async def list_files(
        target: Target,
        kernel: KernelDep,
        prefix: Annotated[str, Query(max_length=MAX_PATH)] = "",
    ) -> dict[str, Any]:
        return {"files": kernel.files.list(target.owner, target.area, prefix)}

    @router.get(f"{prefix}/files/{{path:path}}", summary=f"Read a file of {where}")
    async def read_file(
        path: FilePath,
        target: Target,
        kernel: KernelDep,
        version: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    ) -> dict[str, Any]:
        return kernel.files.read(target.owner, target.area, path, version)

    @router.put(f"{prefix}/files/{{path:path}}", summary=f"Write a file of {where}")
    async def write_file(
        path: FilePath, body: FileWrite, target: Target, kernel: KernelDep
    ) -> dict[str, Any]:
        version = kernel.files.write(target.owner, target.area, path, body.content, target.quota)
        return {"path": path, "version": version}

    @router.delete(f"{prefix}/files/{{path:path}}", summary=f"Delete a file of {where}")
    async def delete_file(path: FilePath, target: Target, kernel: KernelDep) -> dict[str, Any]:
        version = kernel.files.delete(target.owner, target.area, path)
        return {"path": path, "version": version, "deleted": True}

    @router.get(f"{prefix}/file-versions/{{path:path}}", summary=f"A file's versions ({where})")
    async def file_versions(path: FilePath, target: Target, kernel: KernelDep) -> dict[str, Any]:
        return {"versions": kernel.files.versions(target.owner, target.area, path)}

    @router.post(f"{prefix}/file-rollback/{{path:path}}", summary=f"Roll a file back ({where})")
    async def rollback(
        path: FilePath, body: Rollback, target: Target, kernel: KernelDep
    ) -> dict[str, Any]:
        version = kernel.files.rollback(target.owner, target.area, path, body.version, target.quota)
        return {"path": path, "version": version, "from_version": body.version}

    @router.get(f"{prefix}/file-search", summary=f"Files whose name or text has a word ({where})")
    async def search(
        target: Target,
        kernel: KernelDep,
        query: Annotated[str, Query(min_length=1, max_length=10_000)],
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
    ) -> dict[str, Any]:
        return {"results": kernel.files.search(target.owner, target.area, query, limit)}


_add_routes("/agents/{agent}", agent_area, "an agent's area")
_add_routes("/shared/{area}", shared_area, "a shared area")
