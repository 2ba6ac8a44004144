"""Loading documents into an agent's archival memory (`llmos load`, `Kernel.load_documents`).

A document (plain text, Markdown, HTML or PDF) is turned into text
(`readers.py`), cut into overlapping chunks that end on paragraph or sentence
boundaries where they can, embedded in batches with the agent's embedder
(through the `embed` callable the caller gives, the kernel's `embed`
syscall), and stored as passages whose `source` is `PATH#INDEX`.

Loads are resumable and idempotent, keyed on the `load_sources` table: one
row per (agent, content hash) holding the source path, how many chunks the
document has and how many are committed. Each batch's passages and the new
`chunks_done` commit in one transaction, so an interrupted load (an embedder
failure, Ctrl-C, a crash) continues at the first missing chunk, and loading
content already loaded adds nothing. A file whose content changed replaces
its old passages (the old row and every passage of that path go first).

Left out: token-exact chunking (chunks are measured in characters, which
keeps chunking independent of the agent's model); what `readers.py` leaves out.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import delete, func, select, update

from llmos.memory.readers import LOADABLE, LoadError, extract_text
from llmos.storage.models import load_sources, passages

if TYPE_CHECKING:
    from llmos.memory.archival import ArchivalStorage
    from llmos.memory.embedders import Embedder
    from llmos.memory.embedders.base import FloatArray
    from llmos.storage.db import Database

CHUNK_SIZE = 800
CHUNK_OVERLAP = 100
BATCH_SIZE = 32

# --- chunking -------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def _pieces(text: str, size: int) -> Iterable[str]:
    """Paragraphs, or the sentences (or hard slices) of paragraphs longer than `size`."""
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        if len(para) <= size:
            yield para
            continue
        for sentence in _SENTENCE_END.split(para):
            sentence = sentence.strip()
            while len(sentence) > size:
                # no sentence boundary in reach: cut at the last space, else hard
                cut = sentence.rfind(" ", size // 2, size)
                cut = cut if cut > 0 else size
                yield sentence[:cut].strip()
                sentence = sentence[cut:].strip()
            if sentence:
                yield sentence


def _tail(text: str, overlap: int) -> str:
    """The last ~`overlap` characters of `text`, starting at a word (or sentence) start."""
    if overlap <= 0 or len(text) <= overlap:
        return text if overlap > 0 else ""
    tail = text[-overlap:]
    sentence = _SENTENCE_END.search(tail)
    if sentence and sentence.end() < len(tail):
        return tail[sentence.end() :]
    space = tail.find(" ")
    return tail[space + 1 :] if 0 <= space < len(tail) - 1 else tail


def chunk_text(text: str, size: int = CHUNK_SIZE, overlap: int = CHUNK_OVERLAP) -> list[str]:
    """Chunks of at most about `size` characters, each starting with the last
    ~`overlap` characters of the one before (so a fact cut at a boundary is
    whole in one of them), packed from paragraphs, then sentences."""
    if size < 50:
        raise ValueError("chunk size must be at least 50 characters")
    if not 0 <= overlap < size // 2:
        raise ValueError("overlap must be >= 0 and under half the chunk size")
    chunks: list[str] = []
    current = ""
    fresh = True  # `current` holds nothing but the overlap from the previous chunk
    for piece in _pieces(text, size - overlap):
        sep = "\n\n" if "\n" not in piece and current else " "
        if current and len(current) + len(sep) + len(piece) > size and not fresh:
            chunks.append(current)
            current = _tail(current, overlap)
            fresh = True
        current = f"{current}{sep}{piece}" if current else piece
        fresh = False
    if current and not fresh:
        chunks.append(current)
    return chunks


# --- progress and reports -------------------------------------------------------


@dataclass(slots=True)
class LoadProgress:
    """What a progress callback is told after each committed batch (and at each file's start)."""

    path: str
    file_index: int  # 0-based
    files_total: int
    file_done: int  # chunks of this file stored
    file_total: int
    done: int  # chunks of all files stored (counting those already in before this load)
    total: int


@dataclass(slots=True)
class FileReport:
    path: str
    # loaded | resumed | replaced | unchanged | empty | failed
    status: str
    chunks: int = 0  # chunks the document has
    added: int = 0  # passages this load added
    removed: int = 0  # old passages of a changed file
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "chunks": self.chunks,
            "added": self.added,
            "removed": self.removed,
            "error": self.error,
        }


@dataclass(slots=True)
class LoadReport:
    agent: str
    files: list[FileReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def added(self) -> int:
        return sum(f.added for f in self.files)

    @property
    def failed(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "failed"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "added": self.added,
            "seconds": round(self.seconds, 3),
            "files": [f.as_dict() for f in self.files],
        }


ProgressCallback = Callable[[LoadProgress], None]
#: embeds a batch of chunks with the agent's embedder: (len(texts), dim) vectors
EmbedCallable = Callable[[list[str]], Awaitable["FloatArray"]]


class LoadTarget(Protocol):
    """The agent being loaded into, as the loader sees it (the kernel's image is one)."""

    id: str
    name: str
    #: kept in step with the passages the loader adds and removes
    archival_count: int


@dataclass(slots=True)
class _Doc:
    path: str
    report: FileReport
    content_hash: str = ""
    chunks: list[str] = field(default_factory=list)
    start: int = 0  # first chunk not yet stored


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, and the loadable files under directories named (sorted, recursive)."""
    out: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            out.extend(
                f
                for f in sorted(path.rglob("*"))
                if f.is_file() and f.suffix.lower() in LOADABLE and not f.name.startswith(".")
            )
        else:
            out.append(path)
    return out


def _source_prefix(path: str) -> str:
    return f"{path}#"


# --- the loader -----------------------------------------------------------------


class DocumentLoader:
    """Loads files into one agent's archival memory; see the module docstring.

    `db` and `archival` are where passages and load records go; `agent` is the
    agent loaded into; `embedder` is the agent's embedder (it tags the stored
    vectors) and `embed` computes vectors with it (outside any transaction).
    """

    def __init__(
        self,
        db: Database,
        archival: ArchivalStorage,
        agent: LoadTarget,
        *,
        embedder: Embedder,
        embed: EmbedCallable,
        chunk_size: int = CHUNK_SIZE,
        overlap: int = CHUNK_OVERLAP,
        batch_size: int = BATCH_SIZE,
        progress: ProgressCallback | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        chunk_text("", chunk_size, overlap)  # validates the sizes before any work
        self.db = db
        self.archival = archival
        self.agent = agent
        self.embedder = embedder
        self.embed = embed
        self.chunk_size = chunk_size
        self.overlap = overlap
        self.batch_size = batch_size
        self.progress = progress

    def _hash(self, data: bytes) -> str:
        # The chunking parameters are part of the key: the same bytes chunked
        # differently are different passages.
        h = hashlib.sha256(data)
        h.update(f"|{self.chunk_size}|{self.overlap}".encode())
        return h.hexdigest()

    def _prepare(self, path: Path) -> _Doc:
        shown = str(path.resolve()) if path.exists() else str(path)
        doc = _Doc(shown, FileReport(shown, "loaded"))
        try:
            data = path.read_bytes()
            doc.content_hash = self._hash(data)
            with self.db.connect() as conn:
                row = conn.execute(
                    select(load_sources).where(
                        load_sources.c.agent_id == self.agent.id,
                        load_sources.c.content_hash == doc.content_hash,
                    )
                ).first()
            if row is not None and row.chunks_done >= row.chunks_total:
                doc.report.status = "unchanged"
                doc.report.chunks = row.chunks_total
                return doc
            doc.chunks = chunk_text(extract_text(path, data), self.chunk_size, self.overlap)
        except (OSError, LoadError) as e:
            doc.report.status, doc.report.error = "failed", str(e)
            return doc
        doc.report.chunks = len(doc.chunks)
        if not doc.chunks:
            doc.report.status = "empty"
        elif row is not None and row.source == shown:
            doc.start = min(row.chunks_done, len(doc.chunks))
            doc.report.status = "resumed" if doc.start else "loaded"
        return doc

    def _begin(self, doc: _Doc) -> None:
        """Record the load of `doc` before its first batch, dropping what an older
        version of the same path (or an unfinished load of it) left."""
        archival = self.archival
        with self.db.begin() as conn:
            # this path's passages, and those of an unfinished load of the same
            # content from another path (that row is replaced below)
            sources = {doc.path} | {
                r.source
                for r in conn.execute(
                    select(load_sources.c.source).where(
                        load_sources.c.agent_id == self.agent.id,
                        load_sources.c.content_hash == doc.content_hash,
                    )
                )
            }
            stale = [
                pid
                for prefix in map(_source_prefix, sorted(sources))
                for (pid,) in conn.execute(
                    select(passages.c.id).where(
                        passages.c.agent_id == self.agent.id,
                        func.substr(passages.c.source, 1, len(prefix)) == prefix,
                    )
                )
            ]
            for pid in stale:
                archival.delete(conn, self.agent.id, pid)
            conn.execute(
                delete(load_sources).where(
                    load_sources.c.agent_id == self.agent.id,
                    (load_sources.c.source == doc.path)
                    | (load_sources.c.content_hash == doc.content_hash),
                )
            )
            conn.execute(
                load_sources.insert().values(
                    agent_id=self.agent.id,
                    content_hash=doc.content_hash,
                    source=doc.path,
                    chunks_total=len(doc.chunks),
                    chunks_done=0,
                    created_at=time.time(),
                )
            )
        if stale:
            doc.report.removed = len(stale)
            doc.report.status = "replaced"
            self.agent.archival_count -= len(stale)

    def _commit(self, doc: _Doc, start: int, texts: list[str], vectors: Any) -> None:
        with self.db.begin() as conn:
            for i, (chunk, vector) in enumerate(zip(texts, vectors, strict=True)):
                self.archival.insert(
                    conn,
                    self.agent.id,
                    self.embedder,
                    [chunk],
                    source=f"{doc.path}#{start + i}",
                    vectors=[vector],
                )
            done = start + len(texts)
            conn.execute(
                update(load_sources)
                .where(
                    load_sources.c.agent_id == self.agent.id,
                    load_sources.c.content_hash == doc.content_hash,
                )
                .values(
                    chunks_done=done,
                    finished_at=time.time() if done >= len(doc.chunks) else None,
                )
            )
        self.agent.archival_count += len(texts)

    async def load(self, paths: Iterable[str | Path]) -> LoadReport:
        began = time.perf_counter()
        report = LoadReport(self.agent.name)
        # Extract and chunk everything first: the overall bar needs the total.
        docs = [self._prepare(p) for p in expand_paths(paths)]
        report.files = [d.report for d in docs]
        total = sum(len(d.chunks) for d in docs)
        done = sum(d.start for d in docs)
        for index, doc in enumerate(docs):
            if not doc.chunks:
                continue
            if doc.start == 0:
                self._begin(doc)
            self._tell(doc, index, len(docs), doc.start, done, total)
            position = doc.start
            while position < len(doc.chunks):
                texts = doc.chunks[position : position + self.batch_size]
                vectors = await self.embed(texts)
                self._commit(doc, position, texts, vectors)
                position += len(texts)
                doc.report.added += len(texts)
                done += len(texts)
                self._tell(doc, index, len(docs), position, done, total)
        report.seconds = time.perf_counter() - began
        return report

    def _tell(
        self, doc: _Doc, index: int, files: int, file_done: int, done: int, total: int
    ) -> None:
        if self.progress is not None:
            self.progress(
                LoadProgress(doc.path, index, files, file_done, len(doc.chunks), done, total)
            )
