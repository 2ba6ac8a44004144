"""Grants: what an agent may do beyond its own memory and its own files.

A grant is (agent, kind, target, mode):

| kind    | target                     | mode      | allows                          |
|---------|----------------------------|-----------|---------------------------------|
| `agent` | another agent's name, `*`  | —         | `send_message_to_agent` to it   |
| `files` | a shared area's name, `*`  | `r`, `rw` | reading / writing that area     |

Tools are granted by attaching them (`agent_tools`, see `tools/registry.py`):
an agent may call the built-ins and its attached tools, nothing else. An
agent's own file area needs no grant. Everything else is denied by default.

Left out: grants to users (sharing an agent), expiry, and deny rules.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from llmos.storage.models import grants

if TYPE_CHECKING:
    from llmos.storage.db import Database

KINDS = ("agent", "files")
MODES = ("r", "rw")


class Grants:
    def __init__(self, db: Database) -> None:
        self.db = db

    def grant(self, agent_id: str, kind: str, target: str, mode: str = "rw") -> None:
        if kind not in KINDS:
            raise ValueError(f"grant kind must be one of {', '.join(KINDS)}")
        if mode not in MODES:
            raise ValueError("grant mode must be 'r' or 'rw'")
        if not target:
            raise ValueError("a grant needs a target (a name, or '*')")
        with self.db.begin() as conn:
            conn.execute(
                delete(grants).where(
                    grants.c.agent_id == agent_id, grants.c.kind == kind, grants.c.target == target
                )
            )
            conn.execute(
                grants.insert().values(
                    agent_id=agent_id, kind=kind, target=target, mode=mode, created_at=time.time()
                )
            )

    def revoke(self, agent_id: str, kind: str, target: str) -> bool:
        with self.db.begin() as conn:
            return bool(
                conn.execute(
                    delete(grants).where(
                        grants.c.agent_id == agent_id,
                        grants.c.kind == kind,
                        grants.c.target == target,
                    )
                ).rowcount
            )

    def list(self, agent_id: str) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            rows = conn.execute(
                select(grants).where(grants.c.agent_id == agent_id).order_by(grants.c.kind)
            ).fetchall()
        return [{"kind": r.kind, "target": r.target, "mode": r.mode} for r in rows]

    def allows(self, agent_id: str, kind: str, target: str, mode: str = "r") -> bool:
        """Whether the agent holds a grant of `kind` on `target` (or `*`) covering `mode`."""
        with self.db.connect() as conn:
            rows = conn.execute(
                select(grants.c.mode).where(
                    grants.c.agent_id == agent_id,
                    grants.c.kind == kind,
                    grants.c.target.in_([target, "*"]),
                )
            ).fetchall()
        return any(mode == "r" or r.mode == "rw" for r in rows)
