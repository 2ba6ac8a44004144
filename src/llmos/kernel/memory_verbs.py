"""The kernel's verbs on an agent's memory: blocks, recall, archival, documents, the embedder.

A mixin of `Kernel` (kernel/kernel.py), kept apart so the facade stays short.
Every verb finds the agent by name or id within its owner, so nothing here
reaches another owner's memory. Searches are syscalls, as an agent's own are;
edits the agent should know of (a block set by its user) reach it as events.
Re-embedding under a new embedder happens in batches, then swaps the vectors
in one transaction: a failure leaves the agent on its old embedder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llmos.agent import functions as fn
from llmos.agent.loop import profile_of
from llmos.agent.syscalls import MemorySyscall, StepWrites
from llmos.errors import InvalidRequest, LLMOSError, NotFound
from llmos.kernel import undo
from llmos.memory.transcript import compile_transcript
from llmos.memory.window import compile_window

if TYPE_CHECKING:
    from pathlib import Path

    from llmos.kernel.agents import AgentStore
    from llmos.kernel.cores import CoreTable
    from llmos.kernel.process import Process
    from llmos.kernel.undo import TurnJournal
    from llmos.kernel.wake import Waker
    from llmos.llm.core import Core, ToolSpec
    from llmos.memory.archival import ArchivalStorage, Passage
    from llmos.memory.embedders import Embedder
    from llmos.memory.image import AgentImage
    from llmos.memory.recall import RecallStorage, StoredMessage
    from llmos.memory.window import CompiledWindow
    from llmos.storage.db import Database
    from llmos.storage.files import FileStore


def check_block_edits(image: AgentImage, edits: dict[str, str]) -> None:
    """Raise InvalidRequest unless every edit names a block of the agent and fits its limit."""
    for label, value in edits.items():
        block = image.memory.blocks.get(label)
        if block is None:
            raise InvalidRequest(f"the agent has no block labelled {label!r}")
        if len(value) > block.limit:
            raise InvalidRequest(
                f"block {label!r} allows {block.limit} characters; got {len(value)}"
            )


class PassageNotFound(NotFound):
    """No archival passage of that id for this agent."""


class MemoryVerbs:
    """Memory verbs of `Kernel`; the attributes below are the kernel's."""

    db: Database
    recall: RecallStorage
    archival: ArchivalStorage
    cores: CoreTable
    store: AgentStore
    waker: Waker
    journal: TurnJournal
    files: FileStore

    if TYPE_CHECKING:

        def image(self, name_or_id: str, owner: str = "local") -> AgentImage: ...
        def process(self, name_or_id: str, owner: str = "local") -> tuple[Process, AgentImage]: ...
        def core(self, model: str, base_url: str | None = None) -> Core: ...
        def embedder(self, spec: str) -> Embedder: ...
        def tool_specs(self, image: AgentImage) -> list[ToolSpec]: ...
        async def syscall(self, call: Any) -> Any: ...
        async def commit_step(
            self, image: AgentImage, new: list[StoredMessage], *a: Any
        ) -> None: ...

    # --- blocks and the window ------------------------------------------------------

    def context(self, name_or_id: str, owner: str = "local") -> CompiledWindow:
        """The window the agent's next step would see, with its sections' token counts."""
        image = self.image(name_or_id, owner)
        core = self.core(image.model, image.base_url)
        info = profile_of(core)
        if info.reply_protocol == "transcript":  # what a small model's step is sent
            return compile_transcript(
                image, core, [], image.max_tokens, chat_template=info.chat_template
            )
        return compile_window(image, core, self.tool_specs(image), [], image.max_tokens)

    def budget(self, name_or_id: str, owner: str = "local") -> dict[str, int] | None:
        """How the agent's window divides: `fixed` (system prompt, tools, core memory),
        the `summary`, the `reply` reserve, and what is left for `messages`. None
        when the agent's model is not available here to count with."""
        image = self.image(name_or_id, owner)
        try:
            sections = self.context(image.id, owner).sections
        except (ValueError, LLMOSError):
            return None
        fixed = sum(sections.get(k, 0) for k in ("system", "tools", "core_memory"))
        summary = sections.get("summary", 0)
        return {
            "window": image.context_window,
            "fixed": fixed,
            "summary": summary,
            "reply": image.max_tokens,
            "messages": image.context_window - image.max_tokens - fixed - summary,
        }

    async def update_block(
        self, name_or_id: str, label: str, value: str, owner: str = "local"
    ) -> None:
        """A user's edit of a block: the agent learns of it as an event in its window."""
        proc, image = self.process(name_or_id, owner)
        async with self.waker.hold(proc):
            image = self.image(image.id, owner)
            image.memory.set(label, value)
            note = self.waker.event(
                image,
                "user",
                f"[system event] The user set core memory block '{label}' to:\n{value}",
            )
            await self.commit_step(image, [note], StepWrites(blocks={label}))

    # --- recall -----------------------------------------------------------------------

    def messages(
        self, name_or_id: str, owner: str = "local", *, before: int | None = None, limit: int = 50
    ) -> list[StoredMessage]:
        image = self.image(name_or_id, owner)
        with self.db.connect() as conn:
            return self.recall.page(conn, image.id, before=before, limit=limit)

    async def search_recall(
        self,
        name_or_id: str,
        query: str,
        page: int = 0,
        owner: str = "local",
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> tuple[list[StoredMessage], int]:
        """A page of the agent's messages matching `query`, best first; within
        `start`..`end` (inclusive) when given."""
        image = self.image(name_or_id, owner)
        return await fn.search_recall(self, image, query, page, start, end)  # type: ignore[arg-type]

    async def search_recall_date(
        self, name_or_id: str, start: datetime, end: datetime, page: int = 0, owner: str = "local"
    ) -> tuple[list[StoredMessage], int]:
        """A page of what the user and the agent said from `start` to `end`, oldest first."""
        image = self.image(name_or_id, owner)
        return await self.syscall(
            MemorySyscall(
                agent_id=image.id,
                op="recall_search_date",
                args={"start": start, "end": end, "page": page},
            )
        )

    def forget_last_turn(
        self, image: AgentImage, not_undone: list[str] | None = None
    ) -> list[StoredMessage]:
        """Undo the last turn for a retry; return its user message anew.

        The last user message and what followed leave recall and the window, and
        the turn's effects are undone (`kernel/undo.py`): blocks, archival
        inserts and files go back to what they were. What cannot be undone is
        added to `not_undone`. Raises ValueError without a user message in the window.
        """
        index = next(
            (
                i
                for i in range(len(image.window) - 1, -1, -1)
                if image.window[i].role == "user"
                # notes of block edits are user-role events, not user messages
                and not (image.window[i].content or "").startswith("[system event]")
            ),
            None,
        )
        if index is None:
            raise ValueError("there is no user message in the window to retry")
        old = image.window[index]
        dropped = image.window[index:]
        start = self.journal.start_of(image, index)
        with self.db.begin() as conn:
            plan = undo.plan_undo(conn, image, dropped, start, self.files)
            for label, value in plan.blocks.items():
                self.store.set_block(conn, image.id, label, value)
            for pid in plan.passages:
                self.archival.delete(conn, image.id, pid)
            self.recall.truncate(conn, image.id, old.id)
        for label, value in plan.blocks.items():
            image.memory.blocks[label].value = value
        image.archival_count = max(0, image.archival_count - len(plan.passages))
        undo.undo_files(plan, image.owner, self.files)
        if not_undone is not None:
            not_undone.extend(plan.not_undone)
        # The window is the tail of recall, so every dropped row was in it.
        image.window = image.window[:index]
        image.recall_count -= len(dropped)
        event = type(old)("user", old.content)
        event.tokens = old.tokens
        return [event]

    async def rethink(self, name_or_id: str, thought: str, owner: str = "local") -> None:
        """Rewrite the inner thoughts (`content`) of the agent's last assistant message."""
        proc, image = self.process(name_or_id, owner)
        async with self.waker.hold(proc):
            image = self.image(image.id, owner)
            msg = next((m for m in reversed(image.window) if m.role == "assistant"), None)
            if msg is None:
                raise ValueError("there is no assistant message in the window to rethink")
            msg.content = thought
            msg._message = None  # the cached chat message is stale now
            msg.tokens = self.waker.tokens(image, msg)
            self.store.rewrite_message(msg)

    # --- archival ---------------------------------------------------------------------

    async def search_archival(
        self,
        name_or_id: str,
        query: str,
        page: int = 0,
        owner: str = "local",
        page_size: int = fn.PAGE_SIZE,
    ) -> tuple[list[Passage], int]:
        image = self.image(name_or_id, owner)
        return await fn.search_archival(self, image, query, page, page_size)  # type: ignore[arg-type]

    async def insert_archival(
        self, name_or_id: str, texts: list[str], owner: str = "local", source: str | None = None
    ) -> list[int]:
        image = self.image(name_or_id, owner)
        vectors = await fn.embed(self, image, texts)  # type: ignore[arg-type]
        with self.db.begin() as conn:
            ids = self.archival.insert(
                conn, image.id, self.embedder(image.embedder), texts, source, vectors
            )
        image.archival_count += len(ids)
        return ids

    def list_archival(
        self, name_or_id: str, owner: str = "local", *, offset: int = 0, limit: int = 50
    ) -> tuple[list[Passage], int]:
        """(passages, total): a page of the agent's archival passages, oldest first."""
        image = self.image(name_or_id, owner)
        with self.db.connect() as conn:
            return self.archival.list(conn, image.id, offset, limit), self.archival.count(
                conn, image.id
            )

    def delete_archival(self, name_or_id: str, passage_id: int, owner: str = "local") -> None:
        """Delete one of the agent's passages. Raises PassageNotFound (also for
        another agent's passage)."""
        image = self.image(name_or_id, owner)
        with self.db.begin() as conn:
            gone = self.archival.delete(conn, image.id, passage_id)
        if not gone:
            raise PassageNotFound(f"the agent has no passage {passage_id}")
        image.archival_count = max(0, image.archival_count - 1)

    async def load_documents(
        self,
        name_or_id: str,
        paths: list[str | Path],
        owner: str = "local",
        *,
        progress: Callable[[Any], None] | None = None,
        chunk_size: int | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
    ) -> Any:
        """Load documents (text, Markdown, HTML, PDF; directories recursively) into
        the agent's archival memory: chunked, embedded in batches, resumable and
        idempotent (see `memory/loader.py`). `progress` gets a `LoadProgress`
        after each committed batch. Returns a `LoadReport`; a file that cannot be
        read is reported as failed, an embedder failure raises (rerun to resume)."""
        from llmos.memory import loader

        image = self.image(name_or_id, owner)
        return await loader.DocumentLoader(
            self.db,
            self.archival,
            image,
            embedder=self.embedder(image.embedder),
            embed=lambda texts: fn.embed(self, image, texts),  # type: ignore[arg-type]
            chunk_size=chunk_size or loader.CHUNK_SIZE,
            overlap=loader.CHUNK_OVERLAP if overlap is None else overlap,
            batch_size=batch_size or loader.BATCH_SIZE,
            progress=progress,
        ).load(paths)

    async def set_embedder(
        self,
        name_or_id: str,
        spec: str,
        owner: str = "local",
        *,
        progress: Callable[[int, int], None] | None = None,
        batch_size: int = 64,
    ) -> dict[str, Any]:
        """Switch the agent's embedder to `spec`, re-embedding its archival passages.

        Passages are embedded in batches of `batch_size` (calling
        `progress(done, total)` after each), then one transaction drops the
        agent's old vectors (of any dimension), stores the new ones (in the
        vector table for the new dimension) and records the new embedder: a
        failure or crash before it leaves the agent on its old embedder,
        untouched. The agent's turns wait meanwhile. Raises ValueError for an
        unknown spec and the embedder's own errors (e.g. `EmbeddingError`).
        """
        import numpy as np

        proc, image = self.process(name_or_id, owner)
        new = self.embedder(spec)  # an unknown spec fails before anything happens
        async with self.waker.hold(proc):
            image = self.image(image.id, owner)
            previous = image.embedder
            with self.db.connect() as conn:
                total = self.archival.count(conn, image.id)
            ids: list[int] = []
            parts: list[np.ndarray] = []
            if progress is not None:
                progress(0, total)
            while True:  # until no passage is left, including any added meanwhile
                with self.db.connect() as conn:
                    rows = self.archival.texts_after(
                        conn, image.id, ids[-1] if ids else 0, batch_size
                    )
                if not rows:
                    break
                vectors = await asyncio.to_thread(new.embed, [t for _, t in rows])
                if vectors.shape != (len(rows), new.dim):
                    raise ValueError(
                        f"embedder {spec} returned vectors of shape {vectors.shape} for "
                        f"{len(rows)} texts; expected {new.dim}-d"
                    )
                ids.extend(pid for pid, _ in rows)
                parts.append(vectors)
                if progress is not None:
                    progress(len(ids), max(total, len(ids)))
            with self.db.begin() as conn:
                all_vectors = np.concatenate(parts) if parts else np.zeros((0, new.dim))
                self.archival.replace_vectors(conn, image.id, new.dim, ids, all_vectors)
                self.store.update(conn, image.id, embedder=spec)
            image.embedder = spec
        return {
            "agent": image.name,
            "embedder": spec,
            "previous": previous,
            "dim": new.dim,
            "passages": len(ids),
        }
