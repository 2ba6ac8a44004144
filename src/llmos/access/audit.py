"""The audit log: who (user, agent) asked for what (syscall, target), and what was decided.

`AuditLog.record()` writes one row in its own transaction, so a record stays
even when the step that caused it fails; `query()` is what `Kernel.audit()`
and `llmos audit` show an owner (newest first).

What is recorded: every call of a user tool (allowed, denied, approval
requested), every approval decision, file-area and agent-message checks.
Left out: the built-in memory functions (an agent's own memory needs no
grant; recording every step would double the writes of a turn) and log
rotation.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from llmos.storage.models import audit_log

if TYPE_CHECKING:
    from llmos.storage.db import Database


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self,
        owner: str,
        syscall: str,
        decision: str,
        *,
        agent_id: str | None = None,
        agent_name: str | None = None,
        target: str | None = None,
        detail: str | None = None,
    ) -> None:
        with self.db.begin() as conn:
            conn.execute(
                audit_log.insert().values(
                    owner=owner,
                    agent_id=agent_id,
                    agent_name=agent_name,
                    syscall=syscall,
                    target=target,
                    decision=decision,
                    detail=(detail or "")[:2000] or None,
                    created_at=time.time(),
                )
            )

    def query(
        self,
        owner: str,
        *,
        agent: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; `before` (an entry id) pages back through older entries."""
        q = select(audit_log).where(audit_log.c.owner == owner)
        if before is not None:
            q = q.where(audit_log.c.id < before)
        if agent:
            q = q.where((audit_log.c.agent_name == agent) | (audit_log.c.agent_id == agent))
        with self.db.connect() as conn:
            rows = conn.execute(q.order_by(audit_log.c.id.desc()).limit(limit)).fetchall()
        return [
            {
                "id": r.id,
                "time": r.created_at,
                "user": r.owner,
                "agent": r.agent_name,
                "agent_id": r.agent_id,
                "syscall": r.syscall,
                "target": r.target,
                "decision": r.decision,
                "detail": r.detail,
            }
            for r in rows
        ]
