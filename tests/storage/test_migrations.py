"""Schema revisions on both engines: fresh databases, databases made before migrations
existed (with data in them), and revisions this llmos does not know."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.llm.replay import ScriptedCore, call
from llmos.storage import schema
from llmos.storage.db import Database, open_database
from llmos.storage.migrations.env import include_object
from llmos.storage.models import metadata
from tests.conftest import HashEmbedder, both_engines

engine = both_engines()


def test_head_names_the_newest_revision() -> None:
    script = ScriptDirectory.from_config(schema.alembic_config())
    assert script.get_current_head() == schema.HEAD


def _bare(home: Path) -> Database:
    """The database of `home` without anything done to it (no schema yet)."""
    import os

    from llmos.storage.db import _sqlite_engine

    url = os.environ.get("LLMOS_DATABASE_URL")
    if url:
        return Database(create_engine(url.replace("postgresql://", "postgresql+psycopg://")))
    return Database(_sqlite_engine(home / "llmos.db"))


def _shape(db: Database) -> dict[str, object]:
    """Tables, their columns and indexes, and (SQLite) triggers: what must agree."""
    with db.connect() as conn:
        insp = inspect(conn)
        tables = sorted(insp.get_table_names())
        shape: dict[str, object] = {
            t: (
                sorted(c["name"] for c in insp.get_columns(t)),
                sorted(str(i["name"]) for i in insp.get_indexes(t)),
            )
            for t in tables
        }
        if db.dialect == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type='trigger'"
            shape["triggers"] = sorted(r[0] for r in conn.exec_driver_sql(sql))
    return shape


def test_migrations_build_what_a_fresh_open_builds(home: Path, tmp_path: Path) -> None:
    """A fresh open takes a shortcut (create_all, stamp); the migrations from an
    empty database must build the same schema, and match models.py."""
    migrated = _bare(home)
    assert schema.upgrade(migrated.engine) == "upgraded"
    with migrated.connect() as conn:
        assert schema.current_revision(conn) == schema.HEAD
        mc = MigrationContext.configure(conn, opts={"include_object": include_object})
        diff = compare_metadata(mc, metadata)
    assert diff == [], f"models.py and the migrations differ (add a revision): {diff}"
    migrated_shape = _shape(migrated)
    migrated.close()

    if migrated.is_postgres:
        with migrated.engine.connect() as conn:  # a second schema for the fresh build
            conn.exec_driver_sql("DROP TABLE alembic_version")
            for t in reversed(metadata.sorted_tables):
                conn.exec_driver_sql(f"DROP TABLE {t.name} CASCADE")
            conn.commit()
        fresh = open_database(home)
    else:
        fresh = Database.open(tmp_path / "fresh" / "llmos.db")
    assert _shape(fresh) == migrated_shape
    fresh.close()


def replies(req: ChatRequest) -> ChatResponse:
    return call("send_message", message="Noted.")


#: Tables later revisions added: a database from before migrations lacks them.
ADDED_AFTER_BASELINE = ("pending_messages", "tool_versions", "nodes")


def _as_before_migrations(home: Path) -> None:
    """Make the database at `home` what the previous llmos left: no revision
    table, and none of the tables added since."""
    old = _bare(home)
    with old.begin() as conn:
        for table in ("alembic_version", *ADDED_AFTER_BASELINE):
            conn.exec_driver_sql(f"DROP TABLE {table}")
    old.close()


async def test_a_database_from_before_migrations_is_stamped_and_keeps_its_data(
    home: Path,
) -> None:
    """Made by the previous schema (create_all, no revision table), with data in it:
    the next open stamps it 0001, upgrades it to HEAD, and loses nothing."""
    async with Kernel.open(home, embedders={"test/hash": HashEmbedder()}) as k:
        k.add_core(ScriptedCore(replies), model="scripted/r")
        await k.create_agent("ann", model="scripted/r", embedder="test/hash")
        await k.send("ann", "the zebra migration crosses the river in July")
        await k.insert_archival("ann", ["lunar greenhouse launch code 7731", "cooking notes"])
        before = [m.content for m in k.messages("ann")]
    _as_before_migrations(home)

    async with Kernel.open(home, embedders={"test/hash": HashEmbedder()}) as k:
        with k.db.connect() as conn:
            assert schema.current_revision(conn) == schema.HEAD
        assert [m.content for m in k.messages("ann")] == before
        found, _ = await k.search_recall("ann", "zebra")
        assert [m.content for m in found] == ["the zebra migration crosses the river in July"]
        passages, _ = await k.search_archival("ann", "launch code 7731")
        assert passages[0].text == "lunar greenhouse launch code 7731"


def test_without_auto_migration_an_old_database_is_refused_clearly(home: Path) -> None:
    open_database(home).close()
    _as_before_migrations(home)
    with pytest.raises(schema.SchemaMismatch, match="llmos db upgrade"):
        open_database(home, migrate=False)
    db = open_database(home)  # an upgrade (what `llmos db upgrade` runs) then opens it
    db.close()


def test_a_revision_from_a_newer_llmos_is_refused(home: Path) -> None:
    open_database(home).close()
    db = _bare(home)
    with db.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    db.close()
    with pytest.raises(schema.SchemaMismatch, match="does not know"):
        open_database(home)


def test_a_0002_database_with_a_pending_message_upgrades_and_keeps_it(home: Path) -> None:
    """0004 adds the nodes table and four columns of pending_messages, 0006 one more: a
    message pending when the old llmos stopped is still there, waiting, after the upgrade."""
    open_database(home).close()
    old = _bare(home)
    with old.begin() as conn:
        conn.exec_driver_sql("DROP TABLE nodes")
        for column in ("approval_id", "waiter", "result", "done_at", "caller_id"):
            conn.exec_driver_sql(f"ALTER TABLE pending_messages DROP COLUMN {column}")
        conn.execute(text("UPDATE alembic_version SET version_num = '0002'"))
        conn.execute(
            text(
                "INSERT INTO pending_messages (id, agent_id, owner, content, hops, created_at) "
                "VALUES ('p1', 'agent-x', 'local', 'hello from before', 1, 1.0)"
            )
        )
    old.close()
    db = open_database(home)
    try:
        with db.connect() as conn:
            assert schema.current_revision(conn) == schema.HEAD
            row = conn.execute(text("SELECT * FROM pending_messages")).mappings().one()
            assert conn.execute(text("SELECT count(*) FROM nodes")).scalar_one() == 0
        assert row["content"] == "hello from before" and row["hops"] == 1
        assert row["waiter"] is None and row["result"] is None and row["approval_id"] is None
        assert row["caller_id"] is None
    finally:
        db.close()
