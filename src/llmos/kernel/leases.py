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
another kernel waits at most about that long, not a lease's lifetime. A turn
whose end its messages do not show (it stopped on its step limit, an error
or a cancel, after a step that asked to go on) gives its lease up at once
instead (`release_now`, before the turn returns): a lease released, unlike
one left to lapse, says the turn ended, and it is never run on elsewhere. A
kernel's leases are released when it closes; a kernel that dies leaves them
to expire.

A lease lives `ttl` seconds (60 by default; `LLMOS_LEASE_TTL` sets it), and
while a kernel holds any, it renews them every third of that: a long turn
keeps its agent, and a kernel that dies (SIGKILL, a lost machine) frees its
agents within one lifetime. A kernel waits for another kernel's turn on an
agent at most 300 s (then LeaseTimeout, a 503 over HTTP). A lease taken over
from a holder that neither released it nor renewed it in time marks the
agent *interrupted*: a turn may have been left half done there, and the
waker finishes it first (`kernel/wake.py`).

Acquiring, renewing and releasing go through the group commit, so with many
agents in flight they cost a statement each, not a commit each. A single
kernel (the default) takes no leases at all.

Left out: clock skew between machines (expiry times come from each kernel's
clock; keep them in sync, or the TTL well above the skew), a kernel whose
event loop stalls for longer than a lifetime (its leases may be taken over
meanwhile), and fairness between kernels waiting for one agent.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, NamedTuple

from sqlalchemy import Connection, text

from llmos.environ import seconds_from_env
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
_PRIOR = text("SELECT holder, expires FROM agent_leases WHERE agent_id = :aid")
_RENEW = text("UPDATE agent_leases SET expires = :until WHERE holder = :me AND expires > :now")
# Released, not deleted: the holder stays, so taking it back is no change of hands.
_RELEASE = text("UPDATE agent_leases SET expires = 0 WHERE agent_id = :aid AND holder = :me")
_RELEASE_ALL = text("UPDATE agent_leases SET expires = 0 WHERE holder = :me")


log = logging.getLogger(__name__)

#: the lease lifetime unless LLMOS_LEASE_TTL says otherwise (renewed every third of it)
DEFAULT_TTL = 60.0
TTL_ENV = "LLMOS_LEASE_TTL"
#: how long a kernel waits for an agent another kernel holds (then LeaseTimeout)
DEFAULT_WAIT = 300.0


def lease_ttl() -> float:
    """The lease lifetime in seconds: $LLMOS_LEASE_TTL, else 60. Raises ValueError."""
    return seconds_from_env(TTL_ENV, DEFAULT_TTL, 0.5, 86400)


class Acquired(NamedTuple):
    """What taking a lease found."""

    #: another kernel held the agent since this one last did: reload its image
    changed_hands: bool
    #: that kernel's lease ran out instead of being released: it may have died mid-turn
    interrupted: bool


class LeaseTimeout(Busy):
    """Another kernel held the agent for longer than we were willing to wait."""

    code = "agent_busy"


class AgentLeases:
    def __init__(
        self,
        writes: GroupCommit,
        *,
        ttl: float | None = None,
        grace: float = 0.5,
        poll: float = 0.02,
        wait: float | None = None,
    ) -> None:
        self.writes = writes
        self.holder = f"kernel-{uuid.uuid4().hex[:12]}"
        self.ttl = ttl = lease_ttl() if ttl is None else ttl
        self.grace = grace
        self.poll = poll
        # how long to wait for another kernel's turn: a held lease is renewed,
        # so this bounds the other turn, not the lease's lifetime
        self.wait = max(ttl, DEFAULT_WAIT) if wait is None else wait
        self._epochs: dict[str, int] = {}  # the epoch of each lease when we last took it
        self._held: dict[str, float] = {}  # agent id -> expiry of the lease we hold
        self._releases: dict[str, asyncio.TimerHandle] = {}
        self.acquired = 0  # leases taken in the database
        self.kept = 0  # acquisitions served by a lease still held (no database write)
        self.waited = 0  # acquisitions that found another holder first
        self.renewed = 0  # renewals of the held leases
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self, agent_id: str) -> Acquired:
        """Hold `agent_id`'s lease; says whether it changed hands since this kernel
        last held it (reload the agent then) and whether its last holder left
        it to expire. Raises LeaseTimeout."""
        pending = self._releases.pop(agent_id, None)
        if pending is not None:
            pending.cancel()
        if self._held.get(agent_id, 0.0) > time.time() + self.ttl / 2:
            self.kept += 1  # still ours: nobody else can have changed the agent
            return Acquired(False, False)
        deadline = time.monotonic() + self.wait
        contended = False
        while True:
            now = time.time()

            def take(conn: Connection, now: float = now) -> tuple[int, bool] | None:
                params = {"aid": agent_id, "me": self.holder, "until": now + self.ttl, "now": now}
                prior = conn.execute(_PRIOR, {"aid": agent_id}).first()
                if conn.execute(_ACQUIRE, params).rowcount != 1:
                    return None
                # Taken from another holder, so its lease had run out; it was not
                # released (expires 0) either: that holder stopped while holding it.
                lapsed = prior is not None and prior.holder != self.holder and prior.expires > 0
                return int(conn.execute(_EPOCH, {"aid": agent_id}).scalar_one()), lapsed

            taken = await self.writes.submit(take)
            if taken is not None:
                epoch, lapsed = taken
                self._held[agent_id] = now + self.ttl
                self.acquired += 1
                self.waited += contended
                # Epoch 1 after taking it: no other kernel has ever held it,
                # so whatever this kernel has loaded is current.
                changed_hands = self._epochs.get(agent_id, 1) != epoch
                self._epochs[agent_id] = epoch
                if self._renewer is None or self._renewer.done():
                    self._renewer = asyncio.create_task(self._renew_while_held())
                return Acquired(changed_hands, lapsed)
            contended = True
            if time.monotonic() > deadline:
                raise LeaseTimeout(
                    f"agent {agent_id} is held by another kernel process (waited {self.wait:g}s)"
                )
            await asyncio.sleep(self.poll)

    async def _renew_while_held(self) -> None:
        """Every third of a lifetime, extend every lease this kernel holds (one
        statement for all), until it holds none."""
        while self._held:
            await asyncio.sleep(self.ttl / 3)
            if not self._held:
                return
            now = time.time()
            until = now + self.ttl

            def renew(conn: Connection, until: float = until, now: float = now) -> None:
                conn.execute(_RENEW, {"until": until, "me": self.holder, "now": now})

            try:
                await self.writes.submit(renew)
            except Exception as err:  # e.g. the database is briefly away: try again
                log.warning("renewing agent leases failed: %r", err)
                continue
            self.renewed += 1
            for agent_id, expires in self._held.items():
                if expires > now:  # one that had lapsed meanwhile was not renewed
                    self._held[agent_id] = until

    def held(self) -> list[str]:
        """Ids of the agents whose lease this kernel holds now."""
        return list(self._held)

    def release(self, agent_id: str) -> None:
        """Give the lease up `grace` seconds from now, unless this kernel takes the
        agent again first (an agent's next turn usually follows at once)."""
        if agent_id not in self._held:
            return
        old = self._releases.pop(agent_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._releases[agent_id] = loop.call_later(self.grace, self._grace_over, agent_id)

    async def release_now(self, agent_id: str) -> None:
        """Give the lease up now and wait until that is committed: whoever takes
        the agent next sees it released, not lapsed (`Acquired.interrupted`)."""
        dropped = self._give_up(agent_id)
        if dropped is not None:
            await dropped

    def _grace_over(self, agent_id: str) -> None:
        dropped = self._give_up(agent_id)
        if dropped is not None:  # nobody waits for it; a failure leaves the lease to expire
            dropped.add_done_callback(_ignore_outcome)

    def _give_up(self, agent_id: str) -> asyncio.Future[Any] | None:
        """Stop holding the lease (and any release timer); the write that drops its
        row, or None if this kernel did not hold it."""
        timer = self._releases.pop(agent_id, None)
        if timer is not None:
            timer.cancel()
        if self._held.pop(agent_id, None) is None:
            return None

        def drop(conn: Connection) -> None:
            conn.execute(_RELEASE, {"aid": agent_id, "me": self.holder})

        return self.writes.submit(drop)

    def release_all(self, conn: Connection) -> None:
        """At close: give every lease up now (in `conn`'s transaction)."""
        for handle in self._releases.values():
            handle.cancel()
        self._releases.clear()
        renewer, self._renewer = self._renewer, None
        if renewer is not None and not renewer.done() and not renewer.get_loop().is_closed():
            renewer.cancel()
        self._held.clear()
        conn.execute(_RELEASE_ALL, {"me": self.holder})


def _ignore_outcome(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it as never retrieved
