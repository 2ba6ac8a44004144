"""Copy a whole installation from one database to another (`llmos db copy`).

Every table of `models.py`, in foreign-key order and with ids kept, then every
agent's vectors, all in one transaction on the target, so a failure leaves the
target as it was. The target must hold no agents, users or files yet (it is
brought to the schema's HEAD first). On PostgreSQL the id sequences are moved
past the copied ids. Afterwards the counts of every table and of every vector
table are compared, and a sample of vectors is read back from the target and
compared with the source's.

Left out: copying while kernels write to the source (stop them first), and
merging into a target that already has data.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Integer, Table, func, select, text

from llmos.errors import Conflict
from llmos.storage.db import Database
from llmos.storage.models import metadata
from llmos.storage.vectors import _PREFIX

BATCH = 1000
SAMPLE = 32
#: progress(label, done, total): called as rows are copied
Progress = Callable[[str, int, int], None]


class TargetNotEmpty(Conflict):
    code = "target_not_empty"


class CopyMismatch(Conflict):
    """The target's contents do not match the source's after copying."""

    code = "copy_mismatch"


@dataclass(slots=True)
class CopyReport:
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows copied
    vectors: dict[int, int] = field(default_factory=dict)  # dimension -> vectors copied
    sampled: int = 0  # vectors read back and compared


def _count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _batches(conn: Connection, table: Table) -> Iterator[list[dict[str, Any]]]:
    order = list(table.primary_key.columns) or list(table.columns)
    result = conn.execution_options(stream_results=True).execute(select(table).order_by(*order))
    while rows := result.fetchmany(BATCH):
        yield [dict(r._mapping) for r in rows]


def _vectors(db: Database, conn: Connection, dim: int) -> Iterator[tuple[int, str, Any]]:
    import numpy as np

    table = db.vectors.table(dim, conn)
    if db.is_postgres:
        sql = select(table.c.passage_id, table.c.agent_id, table.c.embedding)
        for pid, agent, vec in conn.execute(sql.order_by(table.c.passage_id)):
            yield pid, agent, np.asarray(vec, dtype=np.float32)
        return
    rows = conn.exec_driver_sql(
        f"SELECT rowid, agent_id, embedding FROM {table.name} ORDER BY rowid"
    )
    for pid, agent, blob in rows:
        yield pid, agent, np.frombuffer(blob, dtype=np.float32)


def _dims(db: Database, conn: Connection) -> list[int]:
    return sorted(int(n[len(_PREFIX) :]) for n in db.vectors.tables(conn))


def copy_database(
    source: Database, target: Database, progress: Progress | None = None
) -> CopyReport:
    """Copy everything from `source` into the empty `target`; verify; return what was copied."""
    report = CopyReport()
    tell = progress or (lambda _label, _done, _total: None)
    # A transaction on the source too: streaming its rows needs one on PostgreSQL.
    with source.engine.connect() as src, target.begin() as dst:
        for table in ("agents", "users", "files", "tools"):
            if _count(dst, metadata.tables[table]):
                raise TargetNotEmpty(
                    f"the target database already has {table}: copy into an empty database"
                )
        for table in metadata.sorted_tables:
            total = _count(src, table)
            done = 0
            tell(table.name, 0, total)
            for batch in _batches(src, table):
                dst.execute(table.insert(), batch)
                done += len(batch)
                tell(table.name, done, total)
            report.rows[table.name] = done
        for dim in _dims(source, src):
            total = source.vectors.count(src, dim)
            done = 0
            tell(f"vectors ({dim} dims)", 0, total)
            by_agent: dict[str, tuple[list[int], list[Any]]] = {}
            for pid, agent, vec in _vectors(source, src, dim):
                ids, vecs = by_agent.setdefault(agent, ([], []))
                ids.append(pid)
                vecs.append(vec)
                if len(ids) >= BATCH:
                    target.vectors.insert(dst, agent, dim, ids, vecs)
                    done += len(ids)
                    by_agent[agent] = ([], [])
                    tell(f"vectors ({dim} dims)", done, total)
            for agent, (ids, vecs) in by_agent.items():
                target.vectors.insert(dst, agent, dim, ids, vecs)
                done += len(ids)
            tell(f"vectors ({dim} dims)", done, total)
            report.vectors[dim] = done
        if target.is_postgres:
            _advance_sequences(dst)
        _verify(source, src, target, dst, report)
    return report


def _advance_sequences(conn: Connection) -> None:
    for table in metadata.sorted_tables:
        cols = list(table.primary_key.columns)
        if len(cols) != 1 or not isinstance(cols[0].type, Integer):
            continue
        # NULL (no change) for a column without a sequence
        name, col = table.name, cols[0].name
        conn.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{name}', '{col}'), "
                f"coalesce((SELECT max({col}) FROM {name}), 0) + 1, false)"
            )
        )


def _vectors_of(db: Database, conn: Connection, dim: int, ids: list[int]) -> dict[int, Any]:
    import numpy as np

    table = db.vectors.table(dim, conn)
    if db.is_postgres:
        rows = conn.execute(
            select(table.c.passage_id, table.c.embedding).where(table.c.passage_id.in_(ids))
        )
        return {pid: np.asarray(vec, dtype=np.float32) for pid, vec in rows}
    marks = ", ".join("?" for _ in ids)
    rows = conn.exec_driver_sql(
        f"SELECT rowid, embedding FROM {table.name} WHERE rowid IN ({marks})", tuple(ids)
    )
    return {pid: np.frombuffer(blob, dtype=np.float32) for pid, blob in rows}


def _verify(
    source: Database, src: Connection, target: Database, dst: Connection, report: CopyReport
) -> None:
    import numpy as np

    for table in metadata.sorted_tables:
        a, b = _count(src, table), _count(dst, table)
        if a != b:
            raise CopyMismatch(f"{table.name}: {a} rows in the source, {b} in the target")
    for dim in _dims(source, src):
        a, b = source.vectors.count(src, dim), target.vectors.count(dst, dim)
        if a != b:
            raise CopyMismatch(f"vectors of {dim} dims: {a} in the source, {b} in the target")
        pick = random.Random(dim)
        sample: list[tuple[int, Any]] = []  # reservoir sampling over the source's vectors
        for seen, (pid, _agent, vec) in enumerate(_vectors(source, src, dim)):
            if len(sample) < SAMPLE:
                sample.append((pid, vec))
            elif (j := pick.randrange(seen + 1)) < SAMPLE:
                sample[j] = (pid, vec)
        if not sample:
            continue
        theirs = _vectors_of(target, dst, dim, [pid for pid, _ in sample])
        for pid, vec in sample:
            if pid not in theirs or not np.allclose(theirs[pid], vec, atol=1e-6):
                raise CopyMismatch(f"the vector of passage {pid} differs in the target")
            report.sampled += 1
