"""The agent store: every SQL statement on agent rows, and the row-to-image mapping.

Agents are rows (`agents`, `blocks`); a loaded agent is an `AgentImage`
(`memory/image.py`). This module writes and reads those rows for the kernel:
create, find by name or id within an owner, list, load an image, change
fields, delete; and the two edits of recall history the kernel offers (cut
it back for a retry, rewrite a thought). Names are scoped by owner: another
owner's agent is not found.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, select, update

from llmos.errors import Conflict, InvalidRequest, NotFound
from llmos.memory.blocks import Block, CoreMemory
from llmos.memory.image import AgentImage
from llmos.storage.files import agent_area, delete_area
from llmos.storage.models import agents, blocks, messages, passages

if TYPE_CHECKING:
    from sqlalchemy import Connection, Row

    from llmos.memory.archival import ArchivalStorage
    from llmos.memory.recall import RecallStorage, StoredMessage
    from llmos.storage.db import Database


# On every step that edits a block: built once (building a statement costs
# more than running it on SQLite).
_BLOCK_SET = (
    update(blocks)
    .where(blocks.c.agent_id == bindparam("aid"), blocks.c.label == bindparam("lbl"))
    .values(value=bindparam("val"))
)


def default_embedder() -> str:
    """The embedder of a new agent that names none: `LLMOS_EMBEDDER`, else llmos's default."""
    from llmos.memory.embedders import DEFAULT_EMBEDDER

    return os.environ.get("LLMOS_EMBEDDER", DEFAULT_EMBEDDER)


class AgentNotFound(NotFound):
    """No agent of that name (or id) for this owner."""

    code = "agent_not_found"


class AgentExists(Conflict):
    """An agent of that name already exists for this owner."""

    code = "agent_exists"


class MessageTooLong(InvalidRequest):
    """A message that could never fit the agent's window; nothing was stored."""

    code = "message_too_long"


class AgentStore:
    """Agent rows on one database, read into images with their recall and archival counts."""

    def __init__(self, db: Database, recall: RecallStorage, archival: ArchivalStorage) -> None:
        self.db = db
        self.recall = recall
        self.archival = archival

    def find(self, conn: Connection, name_or_id: str, owner: str) -> Row[Any] | None:
        return conn.execute(
            select(agents).where(
                agents.c.owner == owner,
                (agents.c.name == name_or_id) | (agents.c.id == name_or_id),
            )
        ).first()

    def check_new(self, name: str, owner: str, layout: str) -> str:
        """The name to create an agent under (stripped); raises AgentExists, InvalidRequest."""
        name = name.strip()
        if not name or len(name) > 128:
            raise InvalidRequest("an agent name must be 1 to 128 characters")
        if layout not in ("stable", "classic"):
            raise InvalidRequest("layout must be 'stable' or 'classic'")
        with self.db.connect() as conn:
            if self.find(conn, name, owner) is not None:
                raise AgentExists(f"an agent named {name!r} already exists")
        return name

    def insert(
        self,
        conn: Connection,
        *,
        owner: str,
        name: str,
        memory: CoreMemory,
        **fields: Any,
    ) -> str:
        """Store a new agent with its core memory blocks (inside `conn`'s transaction);
        returns its id. `fields` are the agent row's other columns."""
        agent_id = f"agent-{uuid.uuid4().hex[:16]}"
        now = time.time()
        row = {
            "summary": "",
            "window_start": 0,
            "core_snapshot": memory.render(),
            "created_at": now,
        } | fields
        conn.execute(
            agents.insert().values(id=agent_id, owner=owner, name=name, updated_at=now, **row)
        )
        for pos, b in enumerate(memory.blocks.values()):
            conn.execute(
                blocks.insert().values(
                    agent_id=agent_id,
                    label=b.label,
                    value=b.value,
                    char_limit=b.limit,
                    position=pos,
                )
            )
        return agent_id

    def dump(
        self, agent_id: str
    ) -> tuple[Row[Any], list[Row[Any]], list[Row[Any]], list[Row[Any]]]:
        """(agent row, block rows, message rows, passage rows) in one read, for an export."""
        with self.db.connect() as conn:
            row = conn.execute(select(agents).where(agents.c.id == agent_id)).one()
            block_rows = conn.execute(
                select(blocks).where(blocks.c.agent_id == agent_id).order_by(blocks.c.position)
            ).fetchall()
            msg_rows = conn.execute(
                select(messages).where(messages.c.agent_id == agent_id).order_by(messages.c.id)
            ).fetchall()
            passage_rows = conn.execute(
                select(passages.c.text, passages.c.source, passages.c.created_at)
                .where(passages.c.agent_id == agent_id)
                .order_by(passages.c.id)
            ).fetchall()
        return row, list(block_rows), list(msg_rows), list(passage_rows)

    def list(self, owner: str) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            rows = conn.execute(
                select(agents.c.id, agents.c.name, agents.c.model, agents.c.created_at)
                .where(agents.c.owner == owner)
                .order_by(agents.c.created_at)
            ).fetchall()
        return [dict(r._mapping) for r in rows]

    def models(self) -> list[dict[str, Any]]:
        """(name, model, base_url, context_window) of every agent of every owner."""
        with self.db.connect() as conn:
            rows = conn.execute(
                select(
                    agents.c.name, agents.c.model, agents.c.base_url, agents.c.context_window
                ).order_by(agents.c.name)
            ).fetchall()
        return [dict(r._mapping) for r in rows]

    def load(self, conn: Connection, row: Row[Any]) -> AgentImage:
        """The image of the agent in `row`: its blocks, window and counts read on `conn`."""
        block_rows = conn.execute(
            select(blocks).where(blocks.c.agent_id == row.id).order_by(blocks.c.position)
        ).fetchall()
        return AgentImage(
            id=row.id,
            owner=row.owner,
            name=row.name,
            model=row.model,
            base_url=row.base_url,
            context_window=row.context_window,
            layout=row.layout,
            embedder=row.embedder,
            system_prompt=row.system_prompt,
            settings=dict(row.settings or {}),
            summary=row.summary,
            window_start=row.window_start,
            core_snapshot=row.core_snapshot,
            memory=CoreMemory([Block(b.label, b.value, b.char_limit) for b in block_rows]),
            window=self.recall.load(conn, row.id, row.window_start),
            created_at=row.created_at,
            recall_count=self.recall.count(conn, row.id),
            archival_count=self.archival.count(conn, row.id),
        )

    def update(self, conn: Connection, agent_id: str, **fields: Any) -> None:
        """Change the agent row's fields (inside `conn`'s transaction)."""
        fields["updated_at"] = time.time()
        conn.execute(update(agents).where(agents.c.id == agent_id).values(**fields))

    def set_block(self, conn: Connection, agent_id: str, label: str, value: str) -> None:
        conn.execute(_BLOCK_SET, {"aid": agent_id, "lbl": label, "val": value})

    def delete(self, agent_id: str) -> None:
        """The agent and everything of it (blocks, messages, passages and their vectors,
        its files with their versions)."""
        with self.db.begin() as conn:
            self.archival.delete_agent(conn, agent_id)
            delete_area(conn, agent_area(agent_id))
            conn.execute(delete(agents).where(agents.c.id == agent_id))

    def truncate_recall(self, agent_id: str, first_id: int) -> None:
        """Delete the agent's messages from `first_id` on (a retry forgets a turn)."""
        with self.db.begin() as conn:
            conn.execute(
                delete(messages).where(messages.c.agent_id == agent_id, messages.c.id >= first_id)
            )

    def rewrite_message(self, msg: StoredMessage) -> None:
        """Store `msg`'s new content, search text and token count."""
        with self.db.begin() as conn:
            conn.execute(
                update(messages)
                .where(messages.c.id == msg.id)
                .values(content=msg.content, text=msg.searchable_text(), tokens=msg.tokens)
            )
