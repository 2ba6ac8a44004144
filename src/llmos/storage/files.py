"""The storage manager's files: versioned text files per agent and in shared areas.

Files live in the database (`files` holds each file's current state,
`file_versions` every version), grouped in *areas*: `agent:<id>` is an
agent's own area, `shared:<name>` a shared area of one owner that agents
reach with a `files` grant (see `access/grants.py`). Every write, delete and
rollback adds a version; `rollback(path, version)` writes that version's
content as a new one, so history is never rewritten. Each area may have a
byte quota on the current (not deleted) contents; a write that would pass it
fails with `QuotaExceeded` and changes nothing.

Left out: binary files (text only), directories as objects (a path is a
name; `list` filters by prefix), quotas on old versions, and FTS indexing
(search is a case-insensitive substring match of name or content, fine for
the sizes a quota allows).
"""

from __future__ import annotations

import posixpath
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update

from llmos.errors import InvalidRequest
from llmos.storage.models import file_versions, files

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from llmos.storage.db import Database

DEFAULT_QUOTA = 1_000_000  # bytes of current content per agent area
MAX_PATH = 512


class FileError(InvalidRequest):
    """A bad path, a missing file or version; the message is for the model or user."""


class QuotaExceeded(FileError):
    """The write would take the area over its quota."""


def agent_area(agent_id: str) -> str:
    return f"agent:{agent_id}"


def shared_area(name: str) -> str:
    return f"shared:{name}"


def delete_area(conn: Connection, area: str) -> int:
    """Delete every file of `area` and all their versions (an agent's, when it is
    deleted); returns how many files there were."""
    ids = select(files.c.id).where(files.c.area == area).scalar_subquery()
    conn.execute(delete(file_versions).where(file_versions.c.file_id.in_(ids)))
    return conn.execute(delete(files).where(files.c.area == area)).rowcount


def clean_path(path: str) -> str:
    """A normalised relative path: no leading '/', no '..', no empty name."""
    p = posixpath.normpath("/" + (path or "").strip()).lstrip("/")
    if not p or p == "." or len(p) > MAX_PATH or "\x00" in p:
        raise FileError(f"invalid file path {path!r}")
    return p


class FileStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _current(self, conn: Connection, owner: str, area: str, path: str) -> Any:
        return conn.execute(
            select(files).where(files.c.owner == owner, files.c.area == area, files.c.path == path)
        ).first()

    def usage(self, owner: str, area: str) -> int:
        with self.db.connect() as conn:
            return int(
                conn.execute(
                    select(func.coalesce(func.sum(files.c.size), 0)).where(
                        files.c.owner == owner, files.c.area == area, files.c.deleted == 0
                    )
                ).scalar_one()
            )

    def _put(
        self,
        owner: str,
        area: str,
        path: str,
        content: str,
        quota: int | None,
        deleted: bool = False,
    ) -> int:
        path = clean_path(path)
        size = 0 if deleted else len(content.encode("utf-8"))
        now = time.time()
        with self.db.begin() as conn:
            row = self._current(conn, owner, area, path)
            if quota is not None and not deleted:
                used = int(
                    conn.execute(
                        select(func.coalesce(func.sum(files.c.size), 0)).where(
                            files.c.owner == owner, files.c.area == area, files.c.deleted == 0
                        )
                    ).scalar_one()
                )
                old = 0 if row is None or row.deleted else row.size
                if used - old + size > quota:
                    raise QuotaExceeded(
                        f"quota exceeded: writing {size} bytes to {path} would use "
                        f"{used - old + size} of {quota} bytes; delete or shorten files first"
                    )
            if row is None:
                if deleted:
                    raise FileError(f"no file {path!r}")
                file_id = conn.execute(
                    files.insert().values(
                        owner=owner,
                        area=area,
                        path=path,
                        version=1,
                        size=size,
                        content=content,
                        deleted=0,
                        updated_at=now,
                    )
                ).inserted_primary_key[0]
                version = 1
            else:
                if deleted and row.deleted:
                    raise FileError(f"no file {path!r}")
                file_id, version = row.id, row.version + 1
                conn.execute(
                    update(files)
                    .where(files.c.id == file_id)
                    .values(
                        version=version,
                        size=size,
                        content="" if deleted else content,
                        deleted=int(deleted),
                        updated_at=now,
                    )
                )
            conn.execute(
                file_versions.insert().values(
                    file_id=file_id,
                    version=version,
                    content="" if deleted else content,
                    size=size,
                    deleted=int(deleted),
                    created_at=now,
                )
            )
        return version

    def write(
        self, owner: str, area: str, path: str, content: str, quota: int | None = None
    ) -> int:
        """Write a file (creating it or adding a version); returns the new version number."""
        return self._put(owner, area, path, content, quota)

    def delete(self, owner: str, area: str, path: str) -> int:
        """Delete a file; its history stays and `rollback` can bring it back."""
        return self._put(owner, area, path, "", None, deleted=True)

    def read(self, owner: str, area: str, path: str, version: int | None = None) -> dict[str, Any]:
        path = clean_path(path)
        with self.db.connect() as conn:
            row = self._current(conn, owner, area, path)
            if row is None:
                raise FileError(f"no file {path!r}")
            if version is None:
                if row.deleted:
                    raise FileError(f"no file {path!r} (deleted; see its versions)")
                return {"path": path, "version": row.version, "content": row.content}
            v = conn.execute(
                select(file_versions).where(
                    file_versions.c.file_id == row.id, file_versions.c.version == version
                )
            ).first()
        if v is None or v.deleted:
            raise FileError(f"{path} has no version {version} with content")
        return {"path": path, "version": version, "content": v.content}

    def versions(self, owner: str, area: str, path: str) -> list[dict[str, Any]]:
        path = clean_path(path)
        with self.db.connect() as conn:
            row = self._current(conn, owner, area, path)
            if row is None:
                raise FileError(f"no file {path!r}")
            rows = conn.execute(
                select(file_versions)
                .where(file_versions.c.file_id == row.id)
                .order_by(file_versions.c.version)
            ).fetchall()
        return [
            {"version": r.version, "size": r.size, "deleted": bool(r.deleted), "at": r.created_at}
            for r in rows
        ]

    def rollback(
        self, owner: str, area: str, path: str, version: int, quota: int | None = None
    ) -> int:
        """Make `version`'s content current again, as a new version; returns its number."""
        old = self.read(owner, area, path, version)
        return self._put(owner, area, path, old["content"], quota)

    def list(self, owner: str, area: str, prefix: str = "") -> list[dict[str, Any]]:
        q = select(files.c.path, files.c.size, files.c.version, files.c.updated_at).where(
            files.c.owner == owner, files.c.area == area, files.c.deleted == 0
        )
        prefix = prefix.strip().lstrip("/")
        if prefix:
            q = q.where(files.c.path.startswith(prefix, autoescape=True))
        with self.db.connect() as conn:
            rows = conn.execute(q.order_by(files.c.path)).fetchall()
        return [dict(r._mapping) for r in rows]

    def search(self, owner: str, area: str, query: str, limit: int = 20) -> list[dict[str, Any]]:
        """Files whose name or content contains `query` (case-insensitive), with a snippet."""
        needle = query.strip().lower()
        if not needle:
            raise FileError("the search query is empty")
        with self.db.connect() as conn:
            rows = conn.execute(
                select(files.c.path, files.c.content)
                .where(
                    files.c.owner == owner,
                    files.c.area == area,
                    files.c.deleted == 0,
                    func.lower(files.c.path).contains(needle, autoescape=True)
                    | func.lower(files.c.content).contains(needle, autoescape=True),
                )
                .order_by(files.c.path)
                .limit(limit)
            ).fetchall()
        out = []
        for r in rows:
            i = r.content.lower().find(needle)
            snippet = r.content[max(0, i - 60) : i + 60 + len(needle)] if i >= 0 else ""
            out.append({"path": r.path, "snippet": snippet.replace("\n", " ")})
        return out
