"""Recall storage: every message an agent ever saw, searchable by text and date.

Messages are appended (never rewritten) to the `messages` table; full-text
search over their searchable text (FTS5 with BM25 on SQLite, tsvector on
PostgreSQL) is `storage/search.py`'s. The context window is the tail
of this table (ids from the agent's `window_start`), so eviction moves nothing:
it only advances `window_start`.

Left out: deletion of single messages (agents never forget; deleting an agent deletes its recall).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select

from llmos.llm.core import Message, ToolCall
from llmos.storage.models import messages
from llmos.storage.search import insert_message, keyword_count, keyword_ids

# Only what the user and the agent said: tool plumbing is noise in a search.
_SEARCHED_ROLES = ("user", "assistant")


@dataclass(slots=True)
class StoredMessage:
    """A message as kept in recall: the chat message plus its id, time and token cost."""

    role: str
    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    tokens: int = 0
    created_at: float = 0.0
    id: int = 0
    # The chat message, built once: every step's window reuses it. Whoever
    # changes content or calls after creation must reset it to None.
    _message: Message | None = field(default=None, repr=False, compare=False)

    def to_message(self) -> Message:
        if self._message is None:
            self._message = Message(
                role=self.role,  # type: ignore[arg-type]
                content=self.content,
                tool_calls=self.tool_calls,
                tool_call_id=self.tool_call_id,
                name=self.name,
            )
        return self._message

    def searchable_text(self) -> str:
        parts = [self.content or ""]
        for call in self.tool_calls:
            if call.name == "send_message":
                try:
                    parts.append(str(json.loads(call.arguments).get("message", "")))
                except (ValueError, AttributeError):
                    parts.append(call.arguments)
        return "\n".join(p for p in parts if p)

    def calls_text(self, limit: int = 160) -> str:
        """The function calls for people, e.g. `core_memory_append(label='human', ...)`."""
        shown = []
        for call in self.tool_calls:
            try:
                args = json.loads(call.arguments or "{}")
            except ValueError:
                args = None
            if isinstance(args, dict):
                inner = ", ".join(f"{k}={v!r}" for k, v in args.items() if k != "request_heartbeat")
            else:
                inner = call.arguments
            text = f"{call.name}({inner})"
            shown.append(text if len(text) <= limit else text[: limit - 2] + "…)")
        return ", ".join(shown)

    def line(self) -> str:
        """One line for a search result: `user: hi`, or `assistant called f(x=1)` for a
        message that only called functions."""
        said = self.searchable_text()
        if said or not self.tool_calls:
            return f"{self.role}: {said}"
        return f"{self.role} called {self.calls_text()}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "content": self.content,
            "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls
            ],
            "tool_call_id": self.tool_call_id,
            "name": self.name,
            "tokens": self.tokens,
            "created_at": self.created_at,
        }


def _row_to_message(row: Any) -> StoredMessage:
    raw = row.tool_calls
    if isinstance(raw, str):  # rows from raw SQL (FTS joins) skip the JSON type
        raw = json.loads(raw)
    calls = [ToolCall(c["id"], c["name"], c["arguments"]) for c in (raw or [])]
    return StoredMessage(
        id=row.id,
        role=row.role,
        content=row.content,
        tool_calls=calls,
        tool_call_id=row.tool_call_id,
        name=row.name,
        tokens=row.tokens,
        created_at=row.created_at,
    )


class RecallStorage:
    """Append, read back and search an agent's messages."""

    def append(self, conn: Connection, agent_id: str, items: list[StoredMessage]) -> None:
        now = time.time()
        for m in items:
            m.created_at = m.created_at or now
            calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls]
            m.id = insert_message(
                conn,
                (
                    agent_id,
                    m.role,
                    m.content,
                    calls or None,
                    m.tool_call_id,
                    m.name,
                    m.searchable_text(),
                    m.tokens,
                    m.created_at,
                ),
            )

    def load(self, conn: Connection, agent_id: str, start_id: int = 0) -> list[StoredMessage]:
        rows = conn.execute(
            select(messages)
            .where(messages.c.agent_id == agent_id, messages.c.id >= start_id)
            .order_by(messages.c.id)
        ).fetchall()
        return [_row_to_message(r) for r in rows]

    def page(
        self, conn: Connection, agent_id: str, *, before: int | None = None, limit: int = 50
    ) -> list[StoredMessage]:
        """Newest-first history, for listing."""
        q = select(messages).where(messages.c.agent_id == agent_id)
        if before is not None:
            q = q.where(messages.c.id < before)
        rows = conn.execute(q.order_by(messages.c.id.desc()).limit(limit)).fetchall()
        return [_row_to_message(r) for r in rows]

    def truncate(self, conn: Connection, agent_id: str, first_id: int) -> None:
        """Delete the agent's messages from `first_id` on (a retry forgets a turn)."""
        conn.execute(
            delete(messages).where(messages.c.agent_id == agent_id, messages.c.id >= first_id)
        )

    def count(self, conn: Connection, agent_id: str) -> int:
        return conn.execute(
            select(func.count()).select_from(messages).where(messages.c.agent_id == agent_id)
        ).scalar_one()

    def search(
        self,
        conn: Connection,
        agent_id: str,
        query: str,
        page: int = 0,
        page_size: int = 5,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> tuple[list[StoredMessage], int]:
        """Messages matching `query` (sent from `start` to `end` inclusive, when given),
        best rank first; returns (page, total)."""
        # Only what the user and the agent said: tool plumbing is noise here.
        since = start.timestamp() if start is not None else None
        until = end.timestamp() if end is not None else None
        total = keyword_count(conn, "messages", agent_id, query, _SEARCHED_ROLES, since, until)
        if not total:
            return [], 0
        ids = keyword_ids(
            conn,
            "messages",
            agent_id,
            query,
            roles=_SEARCHED_ROLES,
            limit=page_size,
            offset=page * page_size,
            since=since,
            until=until,
        )
        rows = {r.id: r for r in conn.execute(select(messages).where(messages.c.id.in_(ids)))}
        return [_row_to_message(rows[i]) for i in ids if i in rows], total

    def search_date(
        self,
        conn: Connection,
        agent_id: str,
        start: datetime,
        end: datetime,
        page: int = 0,
        page_size: int = 5,
    ) -> tuple[list[StoredMessage], int]:
        """Messages from `start` to `end` inclusive, oldest first; returns (page, total)."""
        cond = (
            (messages.c.agent_id == agent_id)
            & (messages.c.created_at >= start.timestamp())
            & (messages.c.created_at <= end.timestamp())
            & (messages.c.role.in_(("user", "assistant")))
        )
        total = conn.execute(select(func.count()).select_from(messages).where(cond)).scalar_one()
        rows = conn.execute(
            select(messages)
            .where(cond)
            .order_by(messages.c.id)
            .limit(page_size)
            .offset(page * page_size)
        ).fetchall()
        return [_row_to_message(r) for r in rows], total
