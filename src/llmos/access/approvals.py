"""Approvals: calls of irreversible tools wait, in the database, for their owner's decision.

When an agent calls a tool marked irreversible, the executor stores the call
here (`create`), answers the model "waiting for approval", and the turn ends
with stop reason `waiting_approval`. The owner lists pending calls with their
arguments and decides (`decide`: approve or deny, with an optional reason).
`Kernel.decide` then runs the tool if approved and delivers the outcome to
the agent as a new event that runs a turn. Because the pending call is a row,
it survives a restart: a new kernel can decide it just the same.

Status: `pending` → `approved` | `denied` (decided_at; then delivered_at once
the agent has the event). A decision is taken at most once (a conditional
update), so two deciders racing cannot both run the tool.

Left out: expiry of old pending calls and approval by anyone but the owner.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from llmos.errors import Conflict, NotFound
from llmos.storage.models import agents, approvals

if TYPE_CHECKING:
    from llmos.storage.db import Database


class ApprovalNotFound(NotFound):
    """No approval of that id for this owner."""

    code = "approval_not_found"


class AlreadyDecided(Conflict):
    """The approval was decided before."""

    code = "already_decided"


def _row(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "agent_id": r.agent_id,
        "agent": getattr(r, "agent_name", None),
        "tool": r.tool_name,
        "arguments": r.arguments,
        "call_id": r.call_id,
        "status": r.status,
        "reason": r.reason,
        "result": r.result,
        "created_at": r.created_at,
        "decided_at": r.decided_at,
        "delivered_at": r.delivered_at,
    }


class Approvals:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, owner: str, agent_id: str, tool: str, arguments: str, call_id: str) -> str:
        approval_id = f"appr-{uuid.uuid4().hex[:12]}"
        with self.db.begin() as conn:
            conn.execute(
                approvals.insert().values(
                    id=approval_id,
                    owner=owner,
                    agent_id=agent_id,
                    tool_name=tool,
                    arguments=arguments,
                    call_id=call_id,
                    status="pending",
                    created_at=time.time(),
                )
            )
        return approval_id

    def list(self, owner: str, status: str | None = "pending") -> list[dict[str, Any]]:
        q = (
            select(approvals, agents.c.name.label("agent_name"))
            .select_from(approvals.join(agents, agents.c.id == approvals.c.agent_id))
            .where(approvals.c.owner == owner)
        )
        if status:
            q = q.where(approvals.c.status == status)
        with self.db.connect() as conn:
            return [_row(r) for r in conn.execute(q.order_by(approvals.c.created_at)).fetchall()]

    def get(self, approval_id: str, owner: str) -> dict[str, Any]:
        with self.db.connect() as conn:
            r = conn.execute(
                select(approvals, agents.c.name.label("agent_name"))
                .select_from(approvals.join(agents, agents.c.id == approvals.c.agent_id))
                .where(approvals.c.id == approval_id, approvals.c.owner == owner)
            ).first()
        if r is None:
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        return _row(r)

    def pending_count(self, agent_id: str) -> int:
        with self.db.connect() as conn:
            return len(
                conn.execute(
                    select(approvals.c.id).where(
                        approvals.c.agent_id == agent_id, approvals.c.status == "pending"
                    )
                ).fetchall()
            )

    def decide(
        self, approval_id: str, owner: str, approve: bool, reason: str | None
    ) -> dict[str, Any]:
        """Record the decision once; raises ApprovalNotFound or AlreadyDecided."""
        record = self.get(approval_id, owner)
        with self.db.begin() as conn:
            done = conn.execute(
                update(approvals)
                .where(approvals.c.id == approval_id, approvals.c.status == "pending")
                .values(
                    status="approved" if approve else "denied",
                    reason=reason,
                    decided_at=time.time(),
                )
            ).rowcount
        if not done:
            raise AlreadyDecided(f"approval {approval_id} was already {record['status']}")
        return self.get(approval_id, owner)

    def finish(self, approval_id: str, result: str, delivered: bool) -> None:
        values: dict[str, Any] = {"result": result}
        if delivered:
            values["delivered_at"] = time.time()
        with self.db.begin() as conn:
            conn.execute(update(approvals).where(approvals.c.id == approval_id).values(**values))
