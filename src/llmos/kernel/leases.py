"""Agent leases: several kernel processes on one database, one agent runs in one of them.

A kernel keeps each agent's image in memory and runs one step at a time per
agent with an in-process lock. When several kernels share a database (more
CPU for the kernel's own work, e.g. `benchmarks/concurrency.py --processes 2`),
that lock is not enough: a kernel must also hold the agent's lease, a row of
`agent_leases` naming it as holder until an expiry time, before it runs a
turn or edits the agent. Acquiring is one UPSERT that succeeds only if the
row is free, expired or already this kernel's; a kernel that finds another
holder polls until the lease is released or expires. A kernel that acquires a
lease that another kernel held since it last did (the row's epoch changed)
reloads the agent's image, since the agent may have changed meanwhile.
A lease is given up `grace` (0.5 s) after the turn ends unless the same
kernel takes the agent again first, which then costs no database write; so
another kernel waits at most about that long, not a lease's lifetime. A
kernel's leases are released when it closes; a kernel that dies leaves them
to expire.

Acquiring and releasing go through the group commit, so with many agents in
flight they cost a statement each, not a commit each. A single kernel (the
default) takes no leases at all.

Left out: renewing a lease during a turn longer than its lifetime (it is
generous: 300 s by default), clock skew between machines (expiry times come
from each kernel's clock), and fairness between kernels waiting for one agent.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy import Connection, text

from llmos.errors import Busy
from llmos.storage.group_commit import GroupCommit

_ACQUIRE = text(
    "INSERT INTO agent_leases (agent_id, holder, expires, epoch) VALUES (:aid, :me, :until, 1) "
    "ON CONFLICT (agent_id) DO UPDATE SET "
    "epoch = CASE WHEN agent_leases.holder = excluded.holder "
    "THEN agent_leases.epoch ELSE agent_leases.epoch + 1 END, "
    "holder = excluded.holder, expires = excluded.expires "
    "WHERE agent_leases.holder = excluded.holder OR agent_leases.expires < :now"
)
_EPOCH = text("SELECT epoch FROM agent_leases WHERE agent_id = :aid")
# Released, not deleted: the holder stays, so taking it back is no change of hands.
_RELEASE = text("UPDATE agent_leases SET expires = 0 WHERE agent_id = :aid AND holder = :me")
_RELEASE_ALL = text("UPDATE agent_leases SET expires = 0 WHERE holder = :me")


class LeaseTimeout(Busy):
    """Another kernel held the agent for longer than we were willing to wait."""

    code = "agent_busy"


class AgentLeases:
    def __init__(
        self,
        writes: GroupCommit,
        *,
        ttl: float = 300.0,
        grace: float = 0.5,
        poll: float = 0.02,
        wait: float | None = None,
    ) -> None:
        self.writes = writes
        self.holder = f"kernel-{uuid.uuid4().hex[:12]}"
        self.ttl = ttl
        self.grace = grace
        self.poll = poll
        self.wait = ttl if wait is None else wait  # the longest a lease can be held
        self._epochs: dict[str, int] = {}  # the epoch of each lease when we last took it
        self._held: dict[str, float] = {}  # agent id -> expiry of the lease we hold
        self._releases: dict[str, asyncio.TimerHandle] = {}
        self.acquired = 0  # leases taken in the database
        self.kept = 0  # acquisitions served by a lease still held (no database write)
        self.waited = 0  # acquisitions that found another holder first

    async def acquire(self, agent_id: str) -> bool:
        """Hold `agent_id`'s lease; True if another kernel held it since we last
        did (reload the agent then). Raises LeaseTimeout."""
        pending = self._releases.pop(agent_id, None)
        if pending is not None:
            pending.cancel()
        if self._held.get(agent_id, 0.0) > time.time() + self.ttl / 2:
            self.kept += 1  # still ours: nobody else can have changed the agent
            return False
        deadline = time.monotonic() + self.wait
        contended = False
        while True:
            now = time.time()

            def take(conn: Connection, now: float = now) -> int | None:
                params = {"aid": agent_id, "me": self.holder, "until": now + self.ttl, "now": now}
                if conn.execute(_ACQUIRE, params).rowcount != 1:
                    return None
                return int(conn.execute(_EPOCH, {"aid": agent_id}).scalar_one())

            epoch = await self.writes.submit(take)
            if epoch is not None:
                self._held[agent_id] = now + self.ttl
                self.acquired += 1
                self.waited += contended
                # Epoch 1 after taking it: no other kernel has ever held it,
                # so whatever this kernel has loaded is current.
                changed_hands = self._epochs.get(agent_id, 1) != epoch
                self._epochs[agent_id] = epoch
                return changed_hands
            contended = True
            if time.monotonic() > deadline:
                raise LeaseTimeout(
                    f"agent {agent_id} is held by another kernel process (waited {self.wait:g}s)"
                )
            await asyncio.sleep(self.poll)

    def release(self, agent_id: str) -> None:
        """Give the lease up `grace` seconds from now, unless this kernel takes the
        agent again first (an agent's next turn usually follows at once)."""
        if agent_id not in self._held:
            return
        old = self._releases.pop(agent_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._releases[agent_id] = loop.call_later(self.grace, self._release_now, agent_id)

    def _release_now(self, agent_id: str) -> None:
        self._releases.pop(agent_id, None)
        if self._held.pop(agent_id, None) is None:
            return

        def drop(conn: Connection) -> None:
            conn.execute(_RELEASE, {"aid": agent_id, "me": self.holder})

        # Nobody waits for it; a failure leaves the lease to expire.
        self.writes.submit(drop).add_done_callback(_ignore_outcome)

    def release_all(self, conn: Connection) -> None:
        """At close: give every lease up now (in `conn`'s transaction)."""
        for handle in self._releases.values():
            handle.cancel()
        self._releases.clear()
        self._held.clear()
        conn.execute(_RELEASE_ALL, {"me": self.holder})


def _ignore_outcome(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it as never retrieved
