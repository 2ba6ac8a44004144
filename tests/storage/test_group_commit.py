"""Group commit on a real SQLite file and on PostgreSQL: batching, isolation of a failing write,
and writes whose submitter was cancelled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from llmos import Kernel
from llmos.llm.replay import ScriptedCore, call
from llmos.storage.db import Database, open_database
from llmos.storage.group_commit import GroupCommit
from tests.conftest import both_engines
from tests.fakes.ticker import ticking

engine = both_engines()


@pytest.fixture
def db(home: Path):
    database = open_database(home)
    with database.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER UNIQUE)")
    yield database
    database.close()


def rows(db: Database) -> list[int]:
    with db.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql("SELECT x FROM t ORDER BY x")]


def insert(x: int):
    def work(conn: Connection) -> int:
        conn.execute(text("INSERT INTO t (x) VALUES (:x)"), {"x": x})
        return x

    return work


async def test_writes_queued_together_share_one_transaction(db: Database) -> None:
    group = GroupCommit(db)
    done: list[int] = []
    futures = [group.submit(insert(i), done.append) for i in range(10)]
    assert await asyncio.gather(*futures) == list(range(10))
    assert (group.batches, group.writes) == (1, 10)
    assert rows(db) == list(range(10))
    assert done == list(range(10))  # callbacks after the commit, in order, with the results


async def test_a_failing_write_is_rolled_back_alone(db: Database) -> None:
    group = GroupCommit(db)
    done: list[int] = []

    def half_then_fail(conn: Connection) -> None:
        conn.exec_driver_sql("INSERT INTO t (x) VALUES (100)")
        conn.exec_driver_sql("INSERT INTO t (x) VALUES (1)")  # UNIQUE: fails

    first = group.submit(insert(1), done.append)
    bad = group.submit(half_then_fail, lambda _: done.append(-1))
    last = group.submit(insert(2), done.append)
    assert await first == 1 and await last == 2
    with pytest.raises(IntegrityError, match=r"(?i)unique"):
        await bad
    assert rows(db) == [1, 2]  # nothing of the failed write, not even its first row
    assert done == [1, 2]


async def test_a_lone_failing_write_raises_and_leaves_nothing(db: Database) -> None:
    group = GroupCommit(db)
    await group.submit(insert(5))
    with pytest.raises(IntegrityError, match=r"(?i)unique"):
        await group.submit(insert(5))
    assert rows(db) == [5]


async def test_a_cancelled_submitter_still_gets_its_write_and_callback(db: Database) -> None:
    group = GroupCommit(db)
    done: list[int] = []

    async def submitter() -> None:
        await group.submit(insert(7), done.append)

    task = asyncio.create_task(submitter())
    await asyncio.sleep(0)  # the task has submitted; the flush is scheduled
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await group.drain()
    assert rows(db) == [7] and done == [7]


def sleeper(seconds: float, log: list[str]):
    """A write that holds its transaction open for `seconds` (the database is slow)."""

    def work(conn: Connection) -> str:
        log.append("write started")
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_sleep({seconds})")
        else:
            time.sleep(seconds)
        conn.execute(text("INSERT INTO t (x) VALUES (0)"))
        log.append("write done")
        return "slept"

    return work


async def test_the_loop_runs_other_coroutines_while_a_batch_waits_on_the_database(
    db: Database,
) -> None:
    group = GroupCommit(db)
    log: list[str] = []
    async with ticking() as ticks:
        assert await group.submit(sleeper(0.5, log)) == "slept"
    assert log == ["write started", "write done"]
    # On the loop, the sleep would have left the other coroutine no tick at all.
    assert ticks.count >= 10, ticks.count
    assert rows(db) == [0]


async def test_the_same_write_on_the_loop_blocks_it(db: Database) -> None:
    """The check above can fail: unthreaded, the batch holds the loop."""
    group = GroupCommit(db, threaded=False)
    async with ticking() as ticks:
        await group.submit(sleeper(0.3, []))
    assert ticks.count <= 1


async def test_writes_submitted_during_a_batch_commit_after_it_in_order(db: Database) -> None:
    group = GroupCommit(db)
    log: list[str] = []
    committed: list[object] = []
    first = group.submit(sleeper(0.3, log), committed.append)
    while log != ["write started"]:  # the first batch is in the database now
        await asyncio.sleep(0.005)
    later = [group.submit(insert(i), committed.append) for i in range(1, 6)]
    assert not any(f.done() for f in later)
    assert await first == "slept"
    assert not any(f.done() for f in later)  # answered only once their own commit is done
    assert await asyncio.gather(*later) == [1, 2, 3, 4, 5]
    assert committed == ["slept", 1, 2, 3, 4, 5]
    assert group.batches == 2  # the five formed one batch behind the first
    assert rows(db) == [0, 1, 2, 3, 4, 5]


async def test_drain_waits_and_a_closed_group_still_commits_on_the_loop(db: Database) -> None:
    group = GroupCommit(db)
    log: list[str] = []
    pending = group.submit(sleeper(0.2, log))
    await group.drain()
    assert pending.done() and log == ["write started", "write done"]
    group.close()
    assert await group.submit(insert(3)) == 3
    assert rows(db) == [0, 3]


async def test_many_agents_commit_in_shared_batches(kernel: Kernel) -> None:
    async def instant(_request):
        return call("send_message", message="ok")

    kernel.leases = None  # their writes (on by default on PostgreSQL) would be counted too
    kernel.add_core(ScriptedCore(instant, name="scripted/instant", capacity=64))
    names = [f"a{i}" for i in range(40)]
    for name in names:
        await kernel.create_agent(name, model="scripted/instant", embedder="test/hash")
    before = (kernel.group_commit.batches, kernel.group_commit.writes)
    turns = await asyncio.gather(*(kernel.send(n, f"hello {n}") for n in names))
    assert all(t.stop_reason == "end_turn" for t in turns)
    batches = kernel.group_commit.batches - before[0]
    writes = kernel.group_commit.writes - before[1]
    assert writes == 2 * len(names)  # the user's message, then the step
    assert batches < writes / 4, (batches, writes)
    for name in names:  # every message is durable and in order
        stored = [m.role for m in reversed(kernel.messages(name))]
        assert stored[-3:] == ["user", "assistant", "tool"], stored


def test_a_flush_left_behind_by_an_ended_loop_does_not_block_the_next(db: Database) -> None:
    """The CLI runs each command in its own asyncio.run: a write queued when one
    loop ended (a turn interrupted) must not keep later loops' writes waiting."""
    group = GroupCommit(db)

    loop = asyncio.new_event_loop()

    def queue_and_leave() -> None:
        group.submit(insert(1))  # its flush is scheduled on this loop...
        loop.stop()  # ...which stops before running it

    loop.call_soon(queue_and_leave)
    loop.run_forever()
    loop.close()
    assert rows(db) == []  # the flush it scheduled never ran

    async def next_command() -> int:
        return await asyncio.wait_for(group.submit(insert(2)), 5)

    assert asyncio.run(next_command()) == 2
    assert rows(db) == [1, 2]  # the orphaned write was committed too, by the next flush


def test_a_batch_in_flight_when_its_loop_ends_still_runs_its_callbacks(db: Database) -> None:
    """A CLI command's loop can end while its batch is in the database: the batch
    commits, its callbacks run, and the next command's writes go on."""
    group = GroupCommit(db)
    log: list[str] = []
    done: list[object] = []

    async def leave_mid_batch() -> None:
        group.submit(sleeper(0.3, log), done.append)
        while log != ["write started"]:
            await asyncio.sleep(0.005)

    asyncio.run(leave_mid_batch())

    async def next_command() -> int:
        return await asyncio.wait_for(group.submit(insert(2)), 5)

    assert asyncio.run(next_command()) == 2
    assert done == ["slept"]
    assert rows(db) == [0, 2]
