"""AIOS's memory and storage queries on an llmos agent: its archival memory and its files.

A mixin of `AiosService` (`service.py`). A memory id is an archival passage
id; `k` is honoured; metadata (keywords, tags, category, context) is kept as
JSON in the passage's `source`. Storage is the agent's versioned file area,
or a shared area of the user's (`params.area`); `retrieve` ranks files by how
many of the query's words they contain (llmos's file search is by substring);
rollback goes back `n` versions or to `version`, as a new version.

Left out: `add_agentic_memory`'s LLM-made keywords (stored as `add_memory`),
directories as objects (a path names its directory), `mount` of a host
directory (files live in llmos's database), rollback by time.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from llmos.agent.functions import embed
from llmos.errors import InvalidRequest
from llmos.kernel.memory_verbs import PassageNotFound
from llmos.server.aios import shapes
from llmos.storage.files import DEFAULT_QUOTA, FileError, QuotaExceeded

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel
    from llmos.memory.image import AgentImage

_SOURCE_PREFIX = "aios:"
_MAX_ID = 2**62  # ids and versions past this cannot be the database's (SQLite: 64-bit)
_AREA = re.compile(r"^[\w.@+-]{1,128}$")


class OpFailed(InvalidRequest):
    """An operation that failed for a reason the agent should read (answered in-band,
    with `status` in the response, never as an HTTP error)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class StoreOps:
    """Memory and storage queries; `kernel` and `owner` are `AiosService`'s."""

    kernel: Kernel
    owner: str

    # --- memory -------------------------------------------------------------------

    async def memory(self, image: AgentImage, data: shapes.OpsQueryData) -> dict:
        op, p = data.operation_type, data.all_params()
        try:
            if op in ("add_memory", "add_agentic_memory"):
                content = _required_text(p, "content")
                ids = await self.kernel.insert_archival(
                    image.id, [content], self.owner, source=_metadata_source(p)
                )
                return shapes.memory_response(memory_id=str(ids[0]))
            if op == "get_memory":
                passage = self._passage(image, p)
                return shapes.memory_response(
                    memory_id=str(passage.id),
                    content=passage.text,
                    metadata=_metadata(passage.source) | {"timestamp": passage.created_at},
                )
            if op == "update_memory":
                return await self._update_memory(image, p)
            if op == "remove_memory":
                pid = _memory_id(p)
                try:
                    self.kernel.delete_archival(image.id, pid, self.owner)
                except PassageNotFound:
                    raise OpFailed("Memory not found", 404) from None
                return shapes.memory_response(memory_id=str(pid))
            if op in ("retrieve_memory", "retrieve_memory_raw"):
                query = _required_text(p, "content" if "content" in p else "query")
                k = p.get("k", p.get("limit", 5))
                if not isinstance(k, int) or not 1 <= k <= 100:
                    raise OpFailed("k must be an integer from 1 to 100")
                found, _ = await self.kernel.search_archival(
                    image.id, query, 0, self.owner, page_size=k
                )
                results = [
                    {
                        **_metadata(x.source),
                        "memory_id": str(x.id),
                        "content": x.text,
                        "score": round(x.score, 6),
                        "timestamp": x.created_at,
                    }
                    for x in found
                ]
                return shapes.memory_response(search_results=results)
        except OpFailed as e:
            return shapes.memory_response(error=str(e), status=e.status)
        raise InvalidRequest(
            f"memory operation_type {op!r} is not one of add_memory, get_memory, update_memory, "
            "remove_memory, retrieve_memory, retrieve_memory_raw"
        )

    def _passage(self, image: AgentImage, p: dict[str, Any]) -> Any:
        with self.kernel.db.connect() as conn:
            passage = self.kernel.archival.get(conn, image.id, _memory_id(p))
        if passage is None:
            raise OpFailed("Memory not found", 404)
        return passage

    async def _update_memory(self, image: AgentImage, p: dict[str, Any]) -> dict:
        old = self._passage(image, p)
        content = p.get("content")
        if content is None:
            content = old.text
        elif not isinstance(content, str) or not content.strip():
            raise OpFailed("content must be non-empty text")
        source = old.source if p.get("metadata") is None else _metadata_source(p)
        vector = (await embed(self.kernel, image, [content]))[0]
        embedder = self.kernel.embedder(image.embedder)
        with self.kernel.db.begin() as conn:
            if not self.kernel.archival.update(
                conn, image.id, embedder, old.id, content, source, vector
            ):
                raise OpFailed("Memory not found", 404)
        return shapes.memory_response(memory_id=str(old.id))

    # --- storage ------------------------------------------------------------------

    async def storage(self, image: AgentImage, data: shapes.OpsQueryData) -> dict:
        op, p = data.operation_type, data.all_params()
        files, owner = self.kernel.files, self.owner
        area, quota = self._area(image, p)
        try:
            if op == "mount":
                message: Any = (
                    f"storage mounted for agent {image.name}: its files live in llmos's database"
                )
            elif op == "create_file":
                path = _path(p)
                if any(f["path"] == path for f in files.list(owner, area, path)):
                    raise OpFailed(f"file {path!r} already exists", 409)
                message = {"file_path": path, "version": files.write(owner, area, path, "", quota)}
            elif op == "create_dir":
                message = (
                    f"directory {_path(p, 'dir_path')!r} ready (a file's path names its directory)"
                )
            elif op == "write":
                content = p.get("content")
                if not isinstance(content, str):
                    raise OpFailed("write needs content (text)")
                path = _path(p)
                message = {
                    "file_path": path,
                    "version": files.write(owner, area, path, content, quota),
                }
            elif op in ("read", "read_file"):
                version = _version(p.get("version"))
                got = files.read(owner, area, _path(p), version)
                message = {
                    "file_path": got["path"],
                    "version": got["version"],
                    "content": got["content"],
                }
            elif op == "list_dir":
                prefix = str(p.get("dir_path") or p.get("path") or "").strip("/")
                message = [
                    f["path"] for f in files.list(owner, area, prefix + "/" if prefix else "")
                ]
            elif op == "delete_file":
                path = _path(p)
                message = {"file_path": path, "version": files.delete(owner, area, path)}
            elif op == "delete_dir":
                prefix = _path(p, "dir_path") + "/"
                inside = files.list(owner, area, prefix)
                if inside and not p.get("recursive"):
                    raise OpFailed(f"{prefix} holds {len(inside)} files; pass recursive: true", 409)
                for f in inside:
                    files.delete(owner, area, f["path"])
                message = {"dir_path": prefix, "deleted": len(inside)}
            elif op == "retrieve":
                message = self._retrieve(area, p)
            elif op == "rollback":
                message = self._rollback(area, quota, p)
            elif op in ("share", "link"):
                path = _path(p)
                target = str(p.get("to_area") or "aios")
                if not _AREA.match(target):
                    raise OpFailed(f"invalid shared area name {target!r}")
                content = files.read(owner, area, path)["content"]
                shared = self.kernel.file_area(shared=target, owner=owner)
                version = files.write(owner, shared, path, content)
                message = {"file_path": path, "shared_area": target, "version": version}
            else:
                raise InvalidRequest(
                    f"storage operation_type {op!r} is not one of mount, create_file, create_dir, "
                    "write, read, list_dir, delete_file, delete_dir, retrieve, rollback, share"
                )
        except OpFailed as e:
            return shapes.plain_response("storage", None, error=str(e), status=e.status)
        except FileError as e:
            status = (
                413
                if isinstance(e, QuotaExceeded)
                else 404
                if "no file" in str(e) or ("has no version" in str(e))
                else 422
            )
            return shapes.plain_response("storage", None, error=str(e), status=status)
        if not isinstance(message, str):
            message = json.dumps(message, ensure_ascii=False)
        return shapes.plain_response("storage", message)

    def _area(self, image: AgentImage, p: dict[str, Any]) -> tuple[str, int | None]:
        shared = p.get("area")
        if shared:
            if not isinstance(shared, str) or not _AREA.match(shared):
                raise InvalidRequest(f"invalid shared area name {shared!r}")
            return self.kernel.file_area(shared=shared, owner=self.owner), None
        quota = int(image.settings.get("file_quota") or DEFAULT_QUOTA)
        return self.kernel.file_area(agent=image.id, owner=self.owner), quota

    def _retrieve(self, area: str, p: dict[str, Any]) -> list[dict[str, Any]]:
        """Files matching the query, most matched words first (a substring search per word)."""
        query = str(p.get("query_text") or p.get("query") or "").strip()
        keywords = p.get("keywords") if isinstance(p.get("keywords"), list) else []
        words = [query, *keywords, *query.split()]
        n = p.get("n", p.get("k", 3))
        n = int(n) if str(n).isdigit() else 3
        hits: dict[str, dict[str, Any]] = {}
        for word in dict.fromkeys(w for w in words if isinstance(w, str) and len(w.strip()) > 2):
            for hit in self.kernel.files.search(self.owner, area, word, limit=50):
                found = hits.setdefault(hit["path"], {"file_path": hit["path"], "matches": 0})
                found["matches"] += 1
                found.setdefault("snippet", hit["snippet"])
        if not query and not keywords:
            raise OpFailed("retrieve needs query_text")
        return sorted(hits.values(), key=lambda h: (-h["matches"], h["file_path"]))[: max(1, n)]

    def _rollback(self, area: str, quota: int | None, p: dict[str, Any]) -> dict[str, Any]:
        path = _path(p)
        files = self.kernel.files
        versions = files.versions(self.owner, area, path)
        target = _version(p.get("version"))
        if target is None:
            n = p.get("n", 1)
            n = int(n) if str(n).isdigit() else 0
            if n < 1:
                raise OpFailed("n must be a positive integer")
            target = versions[-1]["version"] - n
        if not isinstance(target, int) or target < 1:
            raise OpFailed(f"{path} has {len(versions)} versions; cannot go back that far")
        version = files.rollback(self.owner, area, path, target, quota)
        return {"file_path": path, "version": version, "from_version": target}


def _required_text(p: dict[str, Any], key: str) -> str:
    value = p.get(key)
    if not isinstance(value, str) or not value.strip():
        raise OpFailed(f"{key} must be non-empty text")
    return value


def _memory_id(p: dict[str, Any]) -> int:
    raw = p.get("memory_id", p.get("id"))
    digits = isinstance(raw, str) and raw.isdigit() and len(raw) < 19
    if (isinstance(raw, int) or digits) and 0 < int(raw) < _MAX_ID:
        return int(raw)
    raise OpFailed("Memory not found" if raw else "memory_id is required", 404 if raw else 400)


def _metadata_source(p: dict[str, Any]) -> str | None:
    meta = p.get("metadata") or {}
    if not isinstance(meta, dict):
        raise OpFailed("metadata must be an object")
    meta = {k: p[k] for k in ("keywords", "tags", "category", "context") if k in p} | meta
    if not meta:
        return None
    text = _SOURCE_PREFIX + json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
    if len(text) > 512:
        raise OpFailed(f"metadata takes {len(text)} characters as JSON; at most 500 are kept")
    return text


def _metadata(source: str | None) -> dict[str, Any]:
    if source and source.startswith(_SOURCE_PREFIX):
        try:
            meta = json.loads(source[len(_SOURCE_PREFIX) :])
            return meta if isinstance(meta, dict) else {}
        except ValueError:
            return {}
    return {"source": source} if source else {}


def _version(raw: Any) -> int | None:
    if raw is None:
        return None
    if not isinstance(raw, int) or not 0 < raw < _MAX_ID:
        raise OpFailed("version must be a positive integer")
    return raw


def _path(p: dict[str, Any], key: str = "file_path") -> str:
    value = p.get(key) or p.get("name") or p.get("path")
    if not isinstance(value, str) or not value.strip():
        raise OpFailed(f"{key} is required")
    return value.strip().lstrip("/")
