"""Archival vector search (storage/vectors.py) on both engines: answers equal exact search
on small sets, agents see only their own vectors, deletes and rewrites stick, and SQLite's
blocks of binary codes stay in step with the float vectors; migration 0003 converts
databases made with sqlite-vec's `vec0` tables (data included)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pgvector import Vector
from sqlalchemy import insert, text

from llmos.storage import hnsw, schema
from llmos.storage import vectors as vec
from llmos.storage.db import Database, open_database
from llmos.storage.models import agents, passages
from tests.conftest import both_engines

engine = both_engines()
DIM = 32


@pytest.fixture
def db(home: Path) -> Iterator[Database]:
    database = open_database(home)
    yield database
    database.close()


def clustered(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    """Unit vectors around a few centres (as embeddings are), not uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, dim))
    x = centres[rng.integers(0, 8, n)] + 0.5 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def add_agent(db: Database, agent: str) -> None:
    with db.begin() as conn:
        conn.execute(
            insert(agents).values(
                id=agent, owner="o", name=agent, model="m", context_window=8192,
                embedder="e", system_prompt="", created_at=0.0, updated_at=0.0,
            )
        )  # fmt: skip


def add(db: Database, agent: str, data: np.ndarray, batch: int = 100) -> list[int]:
    """Passages with these vectors, through the ordinary path; their ids."""
    ids: list[int] = []
    for lo in range(0, len(data), batch):
        chunk = data[lo : lo + batch]
        with db.begin() as conn:
            rows = [{"agent_id": agent, "text": "p", "created_at": 0.0} for _ in chunk]
            ret = insert(passages).returning(passages.c.id, sort_by_parameter_order=True)
            new = [r[0] for r in conn.execute(ret, rows)]
            db.vectors.insert(conn, agent, data.shape[1], new, chunk)
            ids += new
    return ids


def exact(ids: list[int], data: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    sims = data @ q / (np.linalg.norm(data, axis=1) * np.linalg.norm(q))
    order = sorted(range(len(ids)), key=lambda i: (-sims[i], ids[i]))
    return [ids[i] for i in order[:k]]


def search(db: Database, agent: str, q: np.ndarray, k: int = 10, dim: int = DIM) -> list[int]:
    with db.connect() as conn:
        return [pid for pid, _ in db.vectors.search(conn, agent, dim, q, k)]


def check_blocks(db: Database, dim: int = DIM) -> None:
    """SQLite: every float vector has its code in the block its row names, once."""
    if db.is_postgres:
        return
    name = f"passages_vec_{dim}"
    with db.connect() as conn:
        floats = {
            r[0]: (r[1], r[2], np.frombuffer(r[3], dtype=np.float32))
            for r in conn.exec_driver_sql(
                f"SELECT passage_id, agent_id, block, embedding FROM {name}"
            )
        }
        seen: dict[int, tuple[str, int]] = {}
        for agent, block, id_blob, code_blob in conn.exec_driver_sql(
            f"SELECT agent_id, block, ids, codes FROM {name}_bits"
        ):
            ids = np.frombuffer(id_blob, dtype=np.int64)
            assert 0 < len(ids) <= vec.BLOCK
            codes = np.frombuffer(code_blob, dtype=np.uint64).reshape(-1, len(ids))
            for j, pid in enumerate(ids.tolist()):
                assert pid not in seen, f"passage {pid} is in two blocks"
                seen[pid] = (agent, block)
                assert (codes[:, j] == vec.binary_codes(floats[pid][2][None, :])[:, 0]).all()
    assert seen == {pid: (a, b) for pid, (a, b, _) in floats.items()}


def test_small_sets_answer_exactly(db: Database) -> None:
    add_agent(db, "a")
    data = clustered(300, 1)
    ids = add(db, "a", data)
    for q in clustered(20, 2):
        assert search(db, "a", q) == exact(ids, data, q, 10)
    check_blocks(db)


def test_the_binary_code_pass_rescoring_everything_is_exact(
    db: Database, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path of large agents (codes ranked, the best rescored) with every code a
    candidate gives exact answers; with fewer, the nearest still come first."""
    if engine == "postgresql":
        pytest.skip("SQLite's search path")
    monkeypatch.setattr(vec, "EXACT_UP_TO", 0)
    monkeypatch.setattr(vec, "BLOCK", 64)  # several blocks, the last one partly full
    add_agent(db, "a")
    data = clustered(300, 3)
    ids = add(db, "a", data, batch=50)
    check_blocks(db)
    monkeypatch.setattr(vec, "RESCORE_MIN", 300)
    for q in clustered(10, 4):
        assert search(db, "a", q) == exact(ids, data, q, 10)
    monkeypatch.setattr(vec, "RESCORE_MIN", 60)
    for i in (0, 77, 299):  # a stored vector is its own nearest
        assert search(db, "a", data[i], k=1) == [ids[i]]


def test_an_agent_finds_only_its_own_vectors(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vec, "EXACT_UP_TO", 0)
    add_agent(db, "a")
    add_agent(db, "b")
    mine = clustered(50, 5)
    theirs = clustered(200, 6)
    a_ids = add(db, "a", mine)
    b_ids = add(db, "b", theirs)
    for q in theirs[:10]:  # queries next to b's vectors
        got = search(db, "a", q, k=20)
        assert got == exact(a_ids, mine, q, 20)
        assert not set(got) & set(b_ids)
    assert search(db, "nobody", theirs[0]) == []
    with db.connect() as conn:
        assert db.vectors.count(conn, DIM, "a") == 50
        assert db.vectors.count(conn, DIM) == 250


def test_deletes_and_rewrites_stick(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vec, "BLOCK", 16)
    add_agent(db, "a")
    add_agent(db, "b")
    data = clustered(100, 7)
    ids = add(db, "a", data, batch=30)
    b_ids = add(db, "b", clustered(20, 8))
    with db.begin() as conn:
        for pid in ids[:16]:  # the whole first block
            db.vectors.delete(conn, pid)
        db.vectors.delete(conn, ids[40])
        db.vectors.delete(conn, 10**9)  # no such passage: nothing happens
        # a rewrite: the passage keeps its id, its vector moves
        db.vectors.delete(conn, ids[50])
        db.vectors.insert(conn, "a", DIM, [ids[50]], [-data[50]])
    check_blocks(db)
    left = [i for i in range(100) if i >= 16 and i != 40]
    now = data.copy()
    now[50] = -data[50]
    for q in clustered(10, 9):
        assert search(db, "a", q) == exact([ids[i] for i in left], now[left], q, 10)
    assert search(db, "a", data[40], k=1) != [ids[40]]
    assert search(db, "a", -data[50], k=1) == [ids[50]]
    with db.begin() as conn:
        db.vectors.delete_agent(conn, "a")
    check_blocks(db)
    assert search(db, "a", data[20]) == []
    assert set(search(db, "b", data[0], k=50)) == set(b_ids)


def test_bad_vectors_are_refused_and_change_nothing(db: Database) -> None:
    add_agent(db, "a")
    ids = add(db, "a", clustered(5, 10))
    with pytest.raises(ValueError), db.begin() as conn:
        db.vectors.insert(conn, "a", DIM, [ids[0]], [np.ones(DIM + 1, dtype=np.float32)])
    with db.connect() as conn:
        assert db.vectors.count(conn, DIM, "a") == 5
    check_blocks(db)


# --- migration 0003: databases made with sqlite-vec's vec0 tables ----------------------


def _as_0002_with_vec0(db: Database, dims: dict[int, dict[str, np.ndarray]]) -> dict:
    """What llmos at revision 0002 left: passages, their vectors in `vec0` tables (plus one
    vector whose passage is gone); returns {dim: {agent: ids}}."""
    made: dict[int, dict[str, list[int]]] = {}
    with db.begin() as conn:
        for name in db.vectors.tables(conn):
            conn.exec_driver_sql(f"DROP TABLE {name}_bits")
            conn.exec_driver_sql(f"DROP TABLE {name}")
        # and without what 0004 (the nodes registry) adds
        conn.exec_driver_sql("DROP TABLE nodes")
        for column in ("approval_id", "waiter", "result", "done_at"):
            conn.exec_driver_sql(f"ALTER TABLE pending_messages DROP COLUMN {column}")
        conn.execute(text("UPDATE alembic_version SET version_num = '0002'"))
        for dim, by_agent in dims.items():
            table = f"passages_vec_{dim}"
            conn.exec_driver_sql(
                f"CREATE VIRTUAL TABLE {table} USING vec0(agent_id text partition key, "
                f"embedding float[{dim}] distance_metric=cosine)"
            )
            for agent, data in by_agent.items():
                rows = [{"agent_id": agent, "text": "p", "created_at": 0.0} for _ in data]
                ret = insert(passages).returning(passages.c.id, sort_by_parameter_order=True)
                ids = [r[0] for r in conn.execute(ret, rows)]
                conn.exec_driver_sql(
                    f"INSERT INTO {table} (rowid, agent_id, embedding) VALUES (?, ?, ?)",
                    [(i, agent, v.tobytes()) for i, v in zip(ids, data, strict=True)],
                )
                made.setdefault(dim, {})[agent] = ids
            conn.exec_driver_sql(
                f"INSERT INTO {table} (rowid, agent_id, embedding) VALUES (?, ?, ?)",
                (10**6 + dim, "a", np.ones(dim, dtype=np.float32).tobytes()),  # orphan
            )
    return made


def test_migration_0003_converts_vec0_tables_with_their_data(
    home: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if engine == "postgresql":
        pytest.skip("SQLite's vec0 tables; PostgreSQL: see the next test")
    monkeypatch.setattr(vec, "BLOCK", 64)
    db = open_database(home)
    add_agent(db, "a")
    add_agent(db, "b")
    data = {
        DIM: {"a": clustered(300, 11), "b": clustered(40, 12)},
        8: {"a": clustered(10, 13, dim=8)},
    }
    made = _as_0002_with_vec0(db, data)
    db.close()

    with pytest.raises(schema.SchemaMismatch):
        open_database(home, migrate=False)
    db = open_database(home)  # upgrades
    try:
        with db.connect() as conn:
            assert schema.current_revision(conn) == schema.HEAD
            assert db.vectors.count(conn, DIM) == 340  # the orphan is gone
            assert db.vectors.count(conn, 8, "a") == 10
            virtual = conn.exec_driver_sql(
                "SELECT count(*) FROM sqlite_master WHERE sql LIKE 'CREATE VIRTUAL%vec0%'"
            ).scalar_one()
            assert virtual == 0
            left = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'passages_vec%'"
            )
            assert sorted(r[0] for r in left) == [
                "passages_vec_32",
                "passages_vec_32_bits",
                "passages_vec_8",
                "passages_vec_8_bits",
            ]  # vec0's shadow tables went with it
        check_blocks(db)
        check_blocks(db, dim=8)
        monkeypatch.setattr(vec, "EXACT_UP_TO", 0)
        monkeypatch.setattr(vec, "RESCORE_MIN", 1000)
        for agent, vectors in data[DIM].items():
            for q in clustered(5, 14):
                assert search(db, agent, q) == exact(made[DIM][agent], vectors, q, 10)
        q = clustered(1, 15, dim=8)[0]
        assert search(db, "a", q, dim=8) == exact(made[8]["a"], data[8]["a"], q, 10)
        # and the converted tables take new vectors as usual
        more = add(db, "a", clustered(5, 16))
        assert search(db, "a", clustered(5, 16)[3], k=1) == [more[3]]
        check_blocks(db)
    finally:
        db.close()


def test_migration_0003_downgrades_and_upgrades_again(home: Path, engine: str) -> None:
    db = open_database(home)
    add_agent(db, "a")
    data = clustered(50, 17)
    ids = add(db, "a", data)
    q = clustered(1, 18)[0]
    want = exact(ids, data, q, 10)
    from alembic import command

    with db.engine.connect() as conn:
        command.downgrade(schema.alembic_config(conn), "0002")
        conn.commit()
    if not db.is_postgres:
        with db.connect() as conn:
            sql = "SELECT sql FROM sqlite_master WHERE name = 'passages_vec_32'"
            assert "vec0" in conn.exec_driver_sql(sql).scalar_one()
    db.close()
    db = open_database(home)
    try:
        with db.connect() as conn:
            assert schema.current_revision(conn) == schema.HEAD
        assert search(db, "a", q) == want
        check_blocks(db)
    finally:
        db.close()


def test_a_search_before_any_vector_finds_nothing_and_creates_nothing(db: Database) -> None:
    with db.connect() as conn:
        assert db.vectors.search(conn, "a", 48, np.ones(48, dtype=np.float32), 5) == []
        assert db.vectors.tables(conn) == []


def test_hnsw_searches_a_small_table_narrower(
    home: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ef_search follows the table's size (PostgreSQL's estimate): SMALL_EF while it
    holds at most SMALL_TABLE vectors, EF_SEARCH above or when it was never analysed;
    LLMOS_HNSW_EF_SEARCH overrides both."""
    if engine != "postgresql":
        pytest.skip("HNSW's ef_search is PostgreSQL's")
    monkeypatch.delenv("LLMOS_HNSW_EF_SEARCH", raising=False)
    monkeypatch.setattr(hnsw, "SMALL_TABLE", 30)
    monkeypatch.setattr(vec, "ROWS_TTL", 0.0)
    db = open_database(home)
    try:
        add_agent(db, "a")
        data = clustered(20, 21)
        add(db, "a", data)
        table = f"passages_vec_{DIM}"

        def ef_used() -> int:
            with db.begin() as conn:
                db.vectors.search(conn, "a", DIM, data[0], 5)
                return int(conn.exec_driver_sql("SHOW hnsw.ef_search").scalar_one())

        with db.begin() as conn:  # a fresh table has no estimate yet: the wide search
            conn.exec_driver_sql(f"UPDATE pg_class SET reltuples = -1 WHERE relname = '{table}'")
        assert ef_used() == hnsw.EF_SEARCH
        with db.begin() as conn:
            conn.exec_driver_sql(f"ANALYZE {table}")
        assert ef_used() == hnsw.SMALL_EF  # 20 rows
        add(db, "a", clustered(20, 22))
        with db.begin() as conn:
            conn.exec_driver_sql(f"ANALYZE {table}")
        assert ef_used() == hnsw.EF_SEARCH  # 40 rows > 30
        monkeypatch.setenv("LLMOS_HNSW_EF_SEARCH", "123")
        assert ef_used() == 123
    finally:
        db.close()


def _hnsw_options(db: Database) -> list[str]:
    with db.connect() as conn:
        sql = f"SELECT reloptions FROM pg_class WHERE relname = 'ix_passages_vec_{DIM}_hnsw'"
        return sorted(conn.exec_driver_sql(sql).scalar_one())


def test_migration_0005_rebuilds_an_old_graph_denser(home: Path, engine: str) -> None:
    """A table indexed with pgvector's default graph (m 16, before 0005) gets
    llmos's denser one, and searches the same vectors after."""
    if engine != "postgresql":
        pytest.skip("HNSW is PostgreSQL's")
    db = open_database(home)
    add_agent(db, "a")
    data = clustered(200, 31)
    ids = add(db, "a", data)
    q = clustered(1, 32)[0]
    denser = sorted([f"m={hnsw.HNSW_M}", f"ef_construction={hnsw.HNSW_EF_CONSTRUCTION}"])
    assert _hnsw_options(db) == denser  # a new table has the new graph at once
    with db.begin() as conn:
        conn.exec_driver_sql(
            f"ALTER INDEX ix_passages_vec_{DIM}_hnsw SET (m = 16, ef_construction = 64)"
        )
        conn.exec_driver_sql(f"REINDEX INDEX ix_passages_vec_{DIM}_hnsw")
        conn.execute(text("UPDATE alembic_version SET version_num = '0004'"))
    from alembic import command

    with db.engine.connect() as conn:  # 0005 alone (0007 rebuilds the graph again)
        command.upgrade(schema.alembic_config(conn), "0005")
        conn.commit()
    assert _hnsw_options(db) == ["ef_construction=128", "m=32"]
    db.close()
    db = open_database(home)
    try:
        with db.connect() as conn:
            assert schema.current_revision(conn) == schema.HEAD
        assert _hnsw_options(db) == denser
        assert search(db, "a", q) == exact(ids, data, q, 10)
    finally:
        db.close()


def test_a_read_without_a_transaction_searches_with_llmos_settings(home: Path, engine: str) -> None:
    """Reads on PostgreSQL run in autocommit, where a setting local to a transaction
    lasts one statement. The search's iterative scan (and ef_search) must hold for
    the statement that searches: with pgvector's defaults, HNSW's 40 nearest all
    belong to another agent and this agent's search comes back empty."""
    if engine != "postgresql":
        pytest.skip("HNSW's settings are PostgreSQL's")
    db = open_database(home)
    try:
        add_agent(db, "crowd")
        add_agent(db, "few")
        rng = np.random.default_rng(43)
        q = clustered(1, 44)[0]
        near = q + 0.05 * rng.normal(size=(300, DIM))
        add(db, "crowd", (near / np.linalg.norm(near, axis=1, keepdims=True)).astype(np.float32))
        far = clustered(20, 45)
        ids = add(db, "few", far)
        with db.begin() as conn:  # the HNSW index, not the agent's, must answer
            conn.exec_driver_sql(f"DROP INDEX ix_passages_vec_{DIM}_agent")
            conn.exec_driver_sql(f"ANALYZE passages_vec_{DIM}")
        with db.connect() as conn:
            assert conn.connection.driver_connection.autocommit
            conn.exec_driver_sql("SET enable_seqscan = off")  # this session's plans only
            got = db.vectors.search(conn, "few", DIM, q, 5)
        assert [pid for pid, _ in got] == exact(ids, far, q, 5)
    finally:
        db.close()


def test_searches_send_the_query_in_binary_on_every_connection(home: Path, engine: str) -> None:
    """The query vector goes as a binary parameter (hnsw.py teaches each pooled
    connection once): a connection lost and replaced is taught again, and vectors
    written and read through SQLAlchemy on a taught connection are unchanged."""
    if engine != "postgresql":
        pytest.skip("the binary parameter is PostgreSQL's")
    db = open_database(home)
    try:
        add_agent(db, "a")
        data = clustered(31, 51)
        ids = add(db, "a", data[:30])
        q = clustered(1, 52)[0]
        with db.connect() as conn:
            first = [pid for pid, _ in db.vectors.search(conn, "a", DIM, q, 5)]
            assert conn.connection.info.get(hnsw._DUMPER)
            conn.invalidate()  # as when the server drops the connection
        with db.connect() as conn:
            assert not conn.connection.info.get(hnsw._DUMPER)
            again = db.vectors.search(conn, "a", DIM, q, 5)
            assert conn.connection.info.get(hnsw._DUMPER)
            # write and read a vector through SQLAlchemy on this taught connection
            row = {"agent_id": "a", "text": "p", "created_at": 0.0}
            new = conn.execute(insert(passages).returning(passages.c.id), [row]).scalar_one()
            db.vectors.insert(conn, "a", DIM, [new], data[30:31])
            conn.commit()
            stored = conn.exec_driver_sql(
                f"SELECT embedding::text FROM passages_vec_{DIM} WHERE passage_id = {new}"
            ).scalar_one()
        assert first == [pid for pid, _ in again] == exact(ids, data[:30], q, 5)
        want = 1 - data[:30] @ q / (np.linalg.norm(data[:30], axis=1) * np.linalg.norm(q))
        assert [d for _, d in again] == pytest.approx(sorted(want)[:5], abs=1e-5)
        assert np.fromstring(stored.strip("[]"), sep=",") == pytest.approx(data[30], abs=1e-6)
        assert search(db, "a", q, 5) == exact([*ids, new], data[:31], q, 5)
    finally:
        db.close()


def test_the_search_ranks_through_the_half_precision_hnsw_index(home: Path, engine: str) -> None:
    """The search's ORDER BY is the index's expression (embedding::halfvec), so the
    HNSW index answers it: a plain sort of every row would be just as right and
    as slow as a scan of all of an agent's vectors."""
    if engine != "postgresql":
        pytest.skip("HNSW is PostgreSQL's")
    db = open_database(home)
    try:
        add_agent(db, "a")
        add(db, "a", clustered(50, 61))
        q = clustered(1, 62)[0]
        with db.begin() as conn:  # no other index to choose
            conn.exec_driver_sql(f"DROP INDEX ix_passages_vec_{DIM}_agent")
        with db.connect() as conn:
            conn.exec_driver_sql("SET enable_seqscan = off")
            db.vectors.search(conn, "a", DIM, q, 5)  # teaches the connection the binary form
            plan = conn.exec_driver_sql(
                "EXPLAIN " + hnsw.search_sql(f"passages_vec_{DIM}", DIM),
                {"ef": "40", "query": Vector(q), "agent": "a", "k": 5},
            ).all()
        plan_text = "\n".join(r[0] for r in plan)
        assert f"Index Scan using ix_passages_vec_{DIM}_hnsw" in plan_text, plan_text
    finally:
        db.close()


def test_migration_0007_puts_the_graph_in_half_precision(home: Path, engine: str) -> None:
    """An index over the full-precision vectors (before 0007) is rebuilt over
    their halfvec cast; searches find the same passages, with exact distances."""
    if engine != "postgresql":
        pytest.skip("HNSW is PostgreSQL's")
    db = open_database(home)
    add_agent(db, "a")
    data = clustered(200, 71)
    ids = add(db, "a", data)
    q = clustered(1, 72)[0]
    index = f"ix_passages_vec_{DIM}_hnsw"
    with db.begin() as conn:
        conn.exec_driver_sql(f"DROP INDEX {index}")
        conn.exec_driver_sql(
            f"CREATE INDEX {index} ON passages_vec_{DIM} USING hnsw "
            "(embedding vector_cosine_ops) WITH (m = 32, ef_construction = 128)"
        )
        conn.execute(text("UPDATE alembic_version SET version_num = '0006'"))
    db.close()
    db = open_database(home)
    try:
        with db.connect() as conn:
            assert schema.current_revision(conn) == schema.HEAD
            definition = conn.exec_driver_sql(
                f"SELECT pg_get_indexdef('{index}'::regclass)"
            ).scalar_one()
            got = db.vectors.search(conn, "a", DIM, q, 10)
        assert "halfvec_cosine_ops" in definition and f"halfvec({DIM})" in definition
        assert _hnsw_options(db) == sorted(
            [f"m={hnsw.HNSW_M}", f"ef_construction={hnsw.HNSW_EF_CONSTRUCTION}"]
        )
        assert [pid for pid, _ in got] == exact(ids, data, q, 10)
        sims = data @ q / (np.linalg.norm(data, axis=1) * np.linalg.norm(q))
        assert [d for _, d in got] == pytest.approx(sorted(1 - sims)[:10], abs=1e-6)
    finally:
        db.close()
