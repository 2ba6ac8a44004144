"""Pending messages: agent messages and owners' decisions accepted and not yet delivered.

A row of `pending_messages` is written (one committed write) before anyone is
told a message was delivered, marked stored (`mark_stored`) in the transaction
that puts the event in the target's recall, and ended (`done_now`) when the
target's turn has: deleted, or, for a kernel that handed the event to another
node and waits for the turn, left holding the turn as JSON until that kernel
`collect`s it (a `RemoteTurn`). A row carrying an owner's decision marks its
approval delivered in the write that ends it. A row of a waiting agent call
names the calling agent (`caller_id`) while it waits: those rows are the
wait-for graph of every node on the database, and `add_wait` refuses the row
that would close a cycle in it. `kernel/messaging.py` decides
who delivers what; this module is the table.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, insert, select, text, update

from llmos.agent.loop import Turn
from llmos.errors import Busy, Conflict
from llmos.storage.models import approvals, pending_messages

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmos.memory.image import AgentImage
    from llmos.storage.group_commit import GroupCommit


#: the PostgreSQL advisory lock that serialises changes to the wait-for graph
_WAITS_LOCK = 0x6C6C6D6F7377  # "llmosw"


class AlreadyDelivered(Conflict):
    """The pending message was delivered by another kernel (or answered) meanwhile."""


class HandoverTimeout(Busy):
    """The node that runs the agent did not finish the handed-over turn in time."""

    code = "handover_timeout"


@dataclass
class RemoteTurn(Turn):
    """A turn another node ran for this kernel: its `as_dict()` as that node sent it."""

    body: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> RemoteTurn:
        return cls(
            agent=str(body.get("agent", "")),
            replies=list(body.get("replies") or []),
            steps=int(body.get("steps") or 0),
            stop_reason=str(body.get("stop_reason") or ""),
            error=body.get("error"),
            body=body,
        )

    def as_dict(self) -> dict[str, Any]:
        return dict(self.body)


class PendingMessages:
    """The `pending_messages` rows: agent messages accepted and not yet answered."""

    def __init__(self, group_commit: GroupCommit) -> None:
        self.group_commit = group_commit
        self.db = group_commit.db

    async def add(
        self,
        target: AgentImage,
        content: str,
        hops: int,
        approval_id: str | None = None,
        waiter: str | None = None,
    ) -> str:
        """Store a message for `target`; returns its id once the row is committed."""
        row = _row(target, content, hops, approval_id=approval_id, waiter=waiter)
        await self.group_commit.submit(lambda conn: conn.execute(insert(pending_messages), row))
        return row["id"]

    async def add_wait(
        self, target: AgentImage, content: str, hops: int, caller_id: str, waiter: str,
        live: Callable[[Connection], set[str]],
    ) -> str | None:  # fmt: skip
        """Store a waiting call's message (`caller_id` waits on node `waiter` for the
        target's reply): an edge of the wait-for graph all nodes share. None, and
        nothing stored, if the edge would close a cycle of waits whose nodes are
        live (`live(conn)`, read in the same transaction: a deadlock, every agent
        on it holds its turn while it waits)."""
        row = _row(target, content, hops, waiter=waiter, caller_id=caller_id)
        pid = row["id"]

        def write(conn: Connection) -> str | None:
            if conn.dialect.name == "postgresql":  # one change to the graph at a time
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _WAITS_LOCK})
            # inserted first: on SQLite that takes the write lock, so no other
            # process changes the graph between this check and the commit
            conn.execute(insert(pending_messages), row)
            edges = dict(
                conn.execute(
                    select(pending_messages.c.caller_id, pending_messages.c.agent_id).where(
                        pending_messages.c.caller_id.is_not(None),
                        pending_messages.c.result.is_(None),
                        pending_messages.c.waiter.in_(live(conn) | {waiter}),
                    )
                ).all()
            )
            seen: set[str] = set()
            node: str | None = target.id
            while node is not None and node not in seen:
                if node == caller_id:
                    conn.execute(delete(pending_messages).where(pending_messages.c.id == pid))
                    return None
                seen.add(node)
                node = edges.get(node)
            return pid

        return await self.group_commit.submit(write)

    def end_wait(self, pid: str) -> asyncio.Future[None]:
        """The caller stopped waiting (answered, timed out, failed): drop its edge of
        the wait-for graph, and the row with it if it holds the answer already. A
        group-commit write: it happens even if the caller is cancelled meanwhile."""

        def write(conn: Connection) -> None:
            conn.execute(
                delete(pending_messages).where(
                    pending_messages.c.id == pid, pending_messages.c.result.is_not(None)
                )
            )
            conn.execute(
                update(pending_messages)
                .where(pending_messages.c.id == pid)
                .values(caller_id=None, waiter=None)
            )

        return self.group_commit.submit(write)

    def get(self, pid: str) -> Any:
        with self.db.connect() as conn:
            return conn.execute(
                select(pending_messages).where(pending_messages.c.id == pid)
            ).first()

    def all(self) -> list[Any]:
        """The rows still to deliver (not those holding a finished turn for a waiter)."""
        with self.db.connect() as conn:
            rows = conn.execute(
                select(pending_messages)
                .where(pending_messages.c.result.is_(None))
                .order_by(pending_messages.c.created_at)
            )
            return list(rows)

    @staticmethod
    def mark_stored(conn: Connection, pid: str, message_id: int) -> None:
        """In the transaction that stores the message in recall: mark its row, or
        fail the write if another kernel has already stored it (never twice)."""
        done = conn.execute(
            update(pending_messages)
            .where(pending_messages.c.id == pid, pending_messages.c.message_id.is_(None))
            .values(message_id=message_id)
        )
        if done.rowcount != 1:
            raise AlreadyDelivered(f"agent message {pid} was already delivered")

    def done_now(self, pid: str, turn: Turn | None) -> None:
        """The message's turn has ended (None: it had ended elsewhere): forget the
        row, or leave the turn in it for a kernel waiting for it; mark an
        approval it carried delivered. One write, right now."""
        now = time.time()
        with self.db.begin() as conn:
            row = conn.execute(
                select(pending_messages.c.approval_id, pending_messages.c.waiter).where(
                    pending_messages.c.id == pid
                )
            ).first()
            if row is None:
                return
            if row.approval_id is not None:
                conn.execute(
                    update(approvals)
                    .where(approvals.c.id == row.approval_id, approvals.c.delivered_at.is_(None))
                    .values(delivered_at=now)
                )
            if row.waiter is None:
                conn.execute(delete(pending_messages).where(pending_messages.c.id == pid))
                return
            body = turn.as_dict() if turn is not None else {"stop_reason": "", "replies": []}
            conn.execute(
                update(pending_messages)
                .where(pending_messages.c.id == pid, pending_messages.c.result.is_(None))
                .values(result=json.dumps(body, default=str), done_at=now)
            )

    async def collect(self, pid: str) -> dict[str, Any] | None:
        """A handed-over turn's result, once its node has left it (the row goes).
        Off the event loop: the read in a reader thread, the delete group-committed."""
        query = select(pending_messages.c.result).where(pending_messages.c.id == pid)
        row = await self.db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise AlreadyDelivered(f"pending event {pid} is gone")
        if row.result is None:
            return None
        await self.group_commit.submit(
            lambda conn: conn.execute(delete(pending_messages).where(pending_messages.c.id == pid))
        )
        return dict(json.loads(row.result))


def _row(target: AgentImage, content: str, hops: int, **more: str | None) -> dict[str, Any]:
    """A new pending message for `target` (a fresh id), with the columns in `more`."""
    return {
        "id": secrets.token_hex(8),
        "agent_id": target.id,
        "owner": target.owner,
        "content": content,
        "hops": hops,
        "created_at": time.time(),
        **more,
    }
