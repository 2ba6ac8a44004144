"""The nodes registry: which kernels run on this database, and which of them runs an agent.

Every kernel that serves (a `llmos serve` node, the local kernel service, a
kernel used with `async with`) writes a row of `nodes` every few seconds
(`beat`, from its pickup loop, `kernel/pickup.py`): its id (the name it holds
agent leases under), host, pid, llmos version, start time, last beat, the
agents it holds now (a turn running or its lease still held) and how many
agent images it keeps in memory. It deletes its row when it closes. A row
not written for `stale_after` seconds (three beats) is a kernel that stopped
without closing: it is listed as stale, and its agents are free for others
once their leases lapse. Rows stale for an hour are dropped.

The node that *runs* an agent is the last holder of its lease, if that node
is live (`runner`): work for the agent (an agent message, an owner's
decision) is handed to it, so an agent keeps running where its image is.

When a node dies, its agents' leases lapse and the live nodes' pickup passes
take them over (`kernel/pickup.py`); `assign` says which live node takes
which, so they spread instead of all going to the first node that looks.
Every node computes the same answer from the registry alone: the agents the
dead node listed at its last beat are dealt out by rank (the split is even to
one agent), and anything else (an agent it took after its last beat, a
message for an agent that never ran) goes by rendezvous hashing, stable
however many of the others have been claimed meanwhile.

Left out: electing a node for an agent that has never run (the first one to
take its lease runs it), weighing nodes by their load, and draining a node on
purpose.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from importlib import metadata
from typing import Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from llmos.storage.models import agent_leases, nodes

#: a stale row is dropped this long after its last beat
FORGET_AFTER = 3600.0


def _version() -> str:
    try:
        return metadata.version("llmos")
    except metadata.PackageNotFoundError:
        return "unknown"


def _weight(*parts: str) -> bytes:
    return hashlib.blake2b("/".join(parts).encode(), digest_size=8).digest()


def assign(agent_id: str, holder: str | None, listed: list[str], live: list[str]) -> str:
    """The node of `live` that takes over `agent_id` from `holder` (a node that
    stopped, or None: nobody ran it). `listed` is what `holder` held at its last
    beat: dealt out by rank, starting at a node the holder's name picks; other
    agents go to the node of the highest hash of (node, agent). `holder` takes
    nothing back unless it is all there is; `live` must not be empty."""
    nodes = sorted(set(live) - {holder}) or sorted(live)
    if agent_id in listed:
        ranked = sorted(listed)
        start = int.from_bytes(_weight(holder or ""), "big")
        return nodes[(start + ranked.index(agent_id)) % len(nodes)]
    return max(nodes, key=lambda node: _weight(node, agent_id))


class NodeRegistry:
    """This kernel's row of `nodes`, and queries over everyone's."""

    def __init__(self, node_id: str, interval: float) -> None:
        self.id = node_id
        self.interval = interval  # seconds between beats
        self.stale_after = 3 * interval
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.version = _version()
        self.started_at = time.time()
        self.registered = False  # a row of ours exists
        self.beats = 0

    def beat(self, conn: Connection, agents: list[str], images: int) -> None:
        """Write this kernel's row (insert or refresh), and drop long-dead rows."""
        now = time.time()
        row = {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "started_at": self.started_at,
            "last_seen": now,
            "agents": sorted(agents),
            "images": images,
        }
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(nodes).values(row)
        fresh = {k: stmt.excluded[k] for k in ("last_seen", "agents", "images")}
        conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=fresh))
        conn.execute(delete(nodes).where(nodes.c.last_seen < now - FORGET_AFTER))
        self.registered = True
        self.beats += 1

    def remove(self, conn: Connection) -> None:
        """At close: this kernel is gone (not merely stale)."""
        conn.execute(delete(nodes).where(nodes.c.id == self.id))
        self.registered = False

    def live(self, conn: Connection) -> set[str]:
        """Ids of the nodes that beat recently (this one counts once it has)."""
        cut = time.time() - self.stale_after
        return set(conn.scalars(select(nodes.c.id).where(nodes.c.last_seen >= cut)))

    def listed(self, conn: Connection, ids: set[str]) -> dict[str, list[str]]:
        """The agents each of the nodes `ids` held at its last beat (those with a row)."""
        if not ids:
            return {}
        rows = conn.execute(select(nodes.c.id, nodes.c.agents).where(nodes.c.id.in_(ids)))
        return {r.id: list(r.agents or []) for r in rows}

    def runner(self, conn: Connection, agent_id: str) -> str | None:
        """The live node that last held the agent's lease; None if none is (or never)."""
        cut = time.time() - self.stale_after
        return conn.scalar(
            select(agent_leases.c.holder)
            .join(nodes, nodes.c.id == agent_leases.c.holder)
            .where(agent_leases.c.agent_id == agent_id, nodes.c.last_seen >= cut)
        )

    def list(self, conn: Connection) -> list[dict[str, Any]]:
        """Every node's row, oldest first, each marked live or stale."""
        now = time.time()
        rows = conn.execute(select(nodes).order_by(nodes.c.started_at)).mappings()
        return [
            {
                "id": r["id"],
                "host": r["host"],
                "pid": r["pid"],
                "version": r["version"],
                "started_at": r["started_at"],
                "last_seen": r["last_seen"],
                "seconds_since_seen": round(max(0.0, now - r["last_seen"]), 3),
                "status": "live" if r["last_seen"] >= now - self.stale_after else "stale",
                "this": r["id"] == self.id,
                "agents": list(r["agents"] or []),
                "images": r["images"],
            }
            for r in rows
        ]
