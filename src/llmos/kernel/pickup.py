"""Picking up work: a running kernel beats in the nodes registry and finishes work
that other kernels on its database left or handed to it.

Every kernel that serves runs one `Pickup` loop. Each pass beats in the nodes
registry (`kernel/nodes.py`, at most once an interval). A kernel that shares
its database (`kernel/leases.py`: server nodes on one PostgreSQL, or several
processes on one SQLite file) also looks at two tables in each pass
(`sweep`):

- `agent_leases`: a lease that ran out without being released belongs to a
  kernel that stopped while holding the agent (SIGKILL, a lost machine). The
  pass recovers the agent (`Waker.recover`): takes the lease over and
  finishes the turn left open there, if any;
- `pending_messages`: agent messages and owners' decisions accepted and not
  yet delivered. The pass delivers those that are this kernel's (it last ran
  the agent) and those nobody will (the agent's last node is not live, or it
  never ran; after a moment, since the kernel that accepted one starts
  delivering it at once).

Work for an agent goes to the node that runs it (`elsewhere` names it): the
kernel that accepts an agent message or a decision stores it, then wakes that
node (`notify`). On PostgreSQL the wake-up is a NOTIFY on channel
`llmos_work` whose payload is the node's id; each kernel LISTENs on its own
connection and runs a pass when named. A NOTIFY is lost if nobody listens
(the node was reconnecting), so passes also run every `interval` seconds
(`LLMOS_PICKUP_INTERVAL`, default 2), which is all SQLite has: several
processes on one machine find their work by polling.

Exactly once holds whatever the timing: the agent's lease lets one kernel
run it at a time, and storing a pending message is a conditional write
(`kernel/messaging.py`); a kernel that arrives second finds nothing to do.

The work a dead node left is spread over the live ones: a pass takes only
the lapsed agents, and the messages nobody will deliver, that `assign`
(`kernel/nodes.py`) gives to this node, so the first node to look does not
take them all; each node computes the same split from the registry. What has
stayed unclaimed for `stale_after` (three intervals) past its due time is
anybody's: the node it fell to may have died too before it looked stale, or
cannot run the agent. A node alone takes everything in its first pass.

Left out: weighing the split by the nodes' load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from llmos.environ import seconds_from_env
from llmos.kernel.nodes import NodeRegistry, assign

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from llmos.kernel.leases import AgentLeases
    from llmos.kernel.messaging import AgentMessenger
    from llmos.kernel.process import ProcessTable
    from llmos.kernel.wake import Waker
    from llmos.storage.db import Database

log = logging.getLogger(__name__)

INTERVAL_ENV = "LLMOS_PICKUP_INTERVAL"
CHANNEL = "llmos_work"
#: how old a pending message must be before a kernel that did not accept it delivers it
MIN_AGE = 1.0
#: a handed-over turn's result nobody collected is dropped after this long
RESULT_TTL = 600.0

_LAPSED = text(
    "SELECT l.agent_id, a.owner, l.holder, l.expires "
    "FROM agent_leases l JOIN agents a ON a.id = l.agent_id "
    "WHERE l.expires > 0 AND l.expires < :now AND l.holder <> :me"
)
_PENDING = text(
    "SELECT p.id, p.agent_id, p.created_at, p.result, p.done_at, l.holder, l.expires "
    "FROM pending_messages p LEFT JOIN agent_leases l ON l.agent_id = p.agent_id "
    "ORDER BY p.created_at"
)
_PURGE = text("DELETE FROM pending_messages WHERE result IS NOT NULL AND done_at < :cut")


def pickup_interval() -> float:
    """Seconds between passes: $LLMOS_PICKUP_INTERVAL, else 2. Raises ValueError."""
    return seconds_from_env(INTERVAL_ENV, 2.0, 0.05, 3600)


class Pickup:
    """One kernel's loop: registry beats, wake-ups, and work other kernels left."""

    def __init__(
        self,
        db: Database,
        node_id: str,
        procs: ProcessTable,
        waker: Waker,
        messenger: Callable[[], AgentMessenger],
        leases: AgentLeases | None,
        interval: float | None = None,
    ) -> None:
        self.db = db
        self.procs = procs
        self.waker = waker
        self.messenger = messenger
        self.leases = leases
        self.interval = pickup_interval() if interval is None else interval
        self.nodes = NodeRegistry(node_id, self.interval)
        self.me = node_id
        self.passes = 0
        self.notified = 0  # wake-ups received for this node
        self.recovering: set[str] = set()  # agent ids with a recovery task here
        self._retry_at: dict[str, float] = {}  # agent id -> when to try a failed recovery again
        self._last_beat = 0.0
        self._poked = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None

    # --- the loop ---------------------------------------------------------------------

    def start(self) -> None:
        """A first sweep now (messages of any age: an earlier process's are due),
        then the loop and, on PostgreSQL with shared leases, the listener."""
        if self._loop is not None:
            return
        if self.leases is not None:
            try:
                self.sweep(min_age=0.0)
            except Exception as err:
                log.warning("picking up work failed: %r", err)
        self._loop = asyncio.create_task(self._run())
        if self.leases is not None and self.db.is_postgres:
            self._spawn(self._listen())

    def poke(self) -> None:
        """Run a pass now (something may be waiting for this kernel)."""
        self._poked.set()

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: no inner task for a cancel to miss
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._poked.wait()
            self._poked.clear()
            try:
                if time.monotonic() - self._last_beat >= self.interval * 0.9:
                    self.beat()
                if self.leases is not None:
                    self.sweep()
            except Exception as err:  # the database away for a moment: next pass
                log.warning("picking up work failed: %r", err)

    def beat(self) -> None:
        """Write this node's row of the registry now."""
        held = {p.agent_id for p in self.procs.running()}
        if self.leases is not None:
            held |= set(self.leases.held())
        with self.db.begin() as conn:
            self.nodes.beat(conn, sorted(held), self.procs.loaded_images)
        self._last_beat = time.monotonic()

    async def _listen(self) -> None:
        """LISTEN for wake-ups naming this node; reconnect after a failure."""
        import psycopg

        engine = self.db.engine
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(*args, **kwargs, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.poke()  # whatever was sent while nobody here listened
                    async for note in conn.notifies():
                        if note.payload == self.me:
                            self.notified += 1
                            self.poke()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("listening for work failed (polling meanwhile): %r", err)
                await asyncio.sleep(self.interval)

    def list_nodes(self) -> list[dict[str, Any]]:
        """Every node of the registry (this one too, before its first beat)."""
        with self.db.connect() as conn:
            listed = self.nodes.list(conn)
        if not any(n["this"] for n in listed):
            now = time.time()
            listed.append(
                {
                    "id": self.me,
                    "host": self.nodes.host,
                    "pid": self.nodes.pid,
                    "version": self.nodes.version,
                    "started_at": self.nodes.started_at,
                    "last_seen": now,
                    "seconds_since_seen": 0.0,
                    "status": "live",
                    "this": True,
                    "agents": sorted(p.agent_id for p in self.procs.running()),
                    "images": self.procs.loaded_images,
                }
            )
        return listed

    # --- handing work over ---------------------------------------------------------------

    def elsewhere(self, agent_id: str) -> str | None:
        """The live node other than this one that runs the agent, if any."""
        with self.db.connect() as conn:
            runner = self.nodes.runner(conn, agent_id)
        return runner if runner != self.me else None

    def live(self, conn: Connection) -> set[str]:
        """Ids of the live nodes, this one included."""
        return self.nodes.live(conn) | {self.me}

    def notify(self, node_id: str) -> None:
        """Wake `node_id` (PostgreSQL; on SQLite it finds the work in its next pass)."""
        if not self.db.is_postgres:
            return
        with self.db.begin() as conn:
            conn.execute(text("SELECT pg_notify(:ch, :node)"), {"ch": CHANNEL, "node": node_id})

    # --- a pass ------------------------------------------------------------------------

    def sweep(self, min_age: float = MIN_AGE) -> int:
        """One pass; returns how many recoveries and deliveries it started."""
        assert self.leases is not None
        self.passes += 1
        now = time.time()
        with self.db.connect() as conn:
            lapsed = conn.execute(_LAPSED, {"now": now, "me": self.me}).fetchall()
            pending = conn.execute(_PENDING).fetchall()
            live = self.live(conn) if lapsed or pending else set()
            gone = ({r.holder for r in lapsed} | {p.holder for p in pending}) - live - {None}
            listed = self.nodes.listed(conn, gone)
        ranked = sorted(live)
        # unclaimed this long after it fell due: the node it fell to is not taking it
        overdue = now - self.nodes.stale_after

        def mine(agent_id: str, holder: str | None) -> bool:
            return assign(agent_id, holder, listed.get(holder or "", []), ranked) == self.me

        started = 0
        for row in lapsed:
            if self._retry_at.get(row.agent_id, 0.0) > time.monotonic():
                continue
            if row.agent_id in self.recovering:
                continue
            if row.expires < overdue or mine(row.agent_id, row.holder):
                self._recover(row.agent_id, row.owner)
                started += 1
        messenger = self.messenger()
        due = now - min_age  # the accepting kernel has had its moment to deliver it

        def nobodys(p: Any) -> bool:
            return p.created_at <= due and (
                p.created_at < due - self.nodes.stale_after or mine(p.agent_id, p.holder)
            )

        ids = [
            p.id
            for p in pending
            if p.result is None
            and p.id not in messenger.delivering
            and (
                p.holder == self.me
                or (p.holder is None and nobodys(p))
                or (p.holder not in live and p.expires < now and nobodys(p))
            )
        ]
        if ids:
            started += messenger.resume_pending(ids)
        if any(p.result is not None and p.done_at < now - RESULT_TTL for p in pending):
            with self.db.begin() as conn:
                conn.execute(_PURGE, {"cut": now - RESULT_TTL})
        return started

    def _recover(self, agent_id: str, owner: str) -> None:
        self.recovering.add(agent_id)

        async def recover() -> None:
            try:
                await self.waker.recover(agent_id, owner)
            except Exception as err:  # its model not configured here, ...: later
                log.warning("recovering agent %s failed: %r", agent_id, err)
                self._retry_at[agent_id] = time.monotonic() + 30 * self.interval
            finally:
                self.recovering.discard(agent_id)

        self._spawn(recover())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop the loop and leave the registry."""
        here = asyncio.get_running_loop()
        # A server may have run them on its own loop, now ended (its tasks with it).
        tasks = [t for t in (self._loop, *self._tasks) if t is not None and t.get_loop() is here]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._loop = None
        if self.nodes.registered:
            with contextlib.suppress(Exception), self.db.begin() as conn:
                self.nodes.remove(conn)
