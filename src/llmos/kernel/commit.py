"""Step commits: a step's messages and effects written atomically, then applied to the image.

Everything a step changes — its messages (into recall), edited core memory
blocks, archival inserts, changed settings or agent fields, and the LLM usage
it incurred — is written in one transaction. The write joins the kernel's
group commit (`storage/group_commit.py`): steps of agents that finish together
share one transaction. Only once it is durable does the in-memory image
change, so an image never shows what the database does not hold.

A message from another agent that was pending (`kernel/messaging.py`) is
marked stored in the same transaction that puts it in recall, so it is
delivered exactly once even if the process ends right after.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.kernel.pending import PendingMessages

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from llmos.agent.syscalls import StepWrites
    from llmos.kernel.accounting import Accounting, UsageTotals
    from llmos.kernel.agents import AgentStore
    from llmos.kernel.cores import CoreTable
    from llmos.memory.archival import ArchivalStorage
    from llmos.memory.image import AgentImage
    from llmos.memory.recall import RecallStorage, StoredMessage
    from llmos.storage.group_commit import GroupCommit


class StepCommitter:
    """Commits agents' steps through the group commit."""

    def __init__(
        self,
        group_commit: GroupCommit,
        recall: RecallStorage,
        archival: ArchivalStorage,
        accounting: Accounting,
        store: AgentStore,
        cores: CoreTable,
    ) -> None:
        self.group_commit = group_commit
        self.recall = recall
        self.archival = archival
        self.accounting = accounting
        self.store = store
        self.cores = cores
        self.pending = PendingMessages(group_commit)
        # id(message) -> (message, pending message id) for events that store one
        self._marks: dict[int, tuple[StoredMessage, str]] = {}

    def mark_pending(self, message: StoredMessage, pid: str) -> None:
        """Storing `message` stores pending agent message `pid` (marked in the same write)."""
        self._marks[id(message)] = (message, pid)

    async def commit(
        self,
        image: AgentImage,
        new_messages: list[StoredMessage],
        writes: StepWrites | None = None,
        agent_fields: dict[str, Any] | None = None,
    ) -> None:
        emb = self.cores.embedder(image.embedder) if writes and writes.passages else None

        # Runs again alone if its batch rolls back: it changes only the database,
        # and returns the usage it stored for `committed`.
        marks = [
            (m, mark[1])
            for m in new_messages
            if (mark := self._marks.get(id(m))) is not None and mark[0] is m
        ]

        def write(conn: Connection) -> UsageTotals | None:
            self.recall.append(conn, image.id, new_messages)
            for m, pid in marks:
                PendingMessages.mark_stored(conn, pid, m.id)
            usage = self.accounting.write(conn, image.id)
            fields = dict(agent_fields or {})
            if writes:
                for label in writes.blocks:
                    self.store.set_block(conn, image.id, label, image.memory.blocks[label].value)
                if writes.passages and emb is not None:
                    texts = [t for t, _ in writes.passages]
                    vectors = [v for _, v in writes.passages]
                    self.archival.insert(conn, image.id, emb, texts, vectors=vectors)
                if writes.settings:
                    fields["settings"] = image.settings
            if fields:
                self.store.update(conn, image.id, **fields)
            return usage

        def committed(usage: UsageTotals | None) -> None:
            self.accounting.committed(image.id, usage)
            image.window.extend(new_messages)
            image.recall_count += len(new_messages)
            if writes:
                image.archival_count += len(writes.passages)

        try:
            await self.group_commit.submit(write, committed)
        finally:
            for m, _ in marks:
                self._marks.pop(id(m), None)
