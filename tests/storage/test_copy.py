"""`llmos db copy`: an installation on SQLite moves to PostgreSQL whole, and keeps working."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.cli.main import app
from llmos.llm.replay import ScriptedCore, call
from llmos.storage.copy import TargetNotEmpty, copy_database
from llmos.storage.db import Database, open_database
from tests.conftest import HashEmbedder


def replies(req: ChatRequest) -> ChatResponse:
    return call("send_message", message="Noted.")


async def _fill(k: Kernel) -> None:
    k.add_core(ScriptedCore(replies), model="scripted/r")
    for name in ("ann", "bob"):
        await k.create_agent(name, model="scripted/r", embedder="test/hash")
        await k.send(name, f"{name} likes the zebra migration in July")
        await k.insert_archival(name, [f"{name} passage {i} about sailing" for i in range(30)])
    k.files.write("local", "shared:team", "notes.md", "buy milk")


async def test_copy_to_postgres_keeps_everything_and_the_copy_works(
    home: Path, postgres_schema_url: str
) -> None:
    async with Kernel.open(home, embedders={"test/hash": HashEmbedder()}) as k:
        await _fill(k)
        before = {n: [m.content for m in k.messages(n)] for n in ("ann", "bob")}
        found_before, _ = await k.search_archival("bob", "passage 7 sailing")

    result = CliRunner().invoke(
        app, ["--home", str(home), "db", "copy", "--to", postgres_schema_url]
    )
    assert result.exit_code == 0, result.output
    assert "counts match" in result.output and "32 sampled vectors match" in result.output
    assert "vectors (64 dims)" in result.output  # the progress bar's line

    async with Kernel.open(
        home, database_url=postgres_schema_url, embedders={"test/hash": HashEmbedder()}
    ) as k:
        assert k.db.is_postgres
        assert {n: [m.content for m in k.messages(n)] for n in ("ann", "bob")} == before
        found, _ = await k.search_archival("bob", "passage 7 sailing")
        # the same best match (the keyword ranks behind it differ: BM25 vs ts_rank)
        assert found[0].id == found_before[0].id
        assert found[0].text == "bob passage 7 about sailing"
        assert k.files.read("local", "shared:team", "notes.md")["content"] == "buy milk"
        # new rows get new ids (the sequences were moved past the copied ones)
        k.add_core(ScriptedCore(replies), model="scripted/r")
        await k.send("ann", "one more")
        (new,) = await k.insert_archival("ann", ["a new passage"])
        assert new > max(p.id for p in found_before)

    # a second copy into the now-full target is refused, and changes nothing
    result = CliRunner().invoke(
        app, ["--home", str(home), "db", "copy", "--to", postgres_schema_url]
    )
    assert result.exit_code == 1
    assert "already has agents" in result.output


def test_a_copy_that_fails_leaves_the_target_empty(home: Path, tmp_path: Path) -> None:
    import asyncio

    async def fill() -> None:
        async with Kernel.open(home, embedders={"test/hash": HashEmbedder()}) as k:
            await _fill(k)

    asyncio.run(fill())
    src = open_database(home)
    dst = Database.open(tmp_path / "target" / "llmos.db")
    calls = 0

    def explode(label: str, done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if label == "passages" and done:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        copy_database(src, dst, explode)
    assert calls
    with dst.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM agents").scalar_one() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM messages").scalar_one() == 0
    report = copy_database(src, dst)  # and can be copied into afterwards
    assert report.rows["agents"] == 2 and report.vectors == {64: 60}
    with pytest.raises(TargetNotEmpty):
        copy_database(src, dst)
    src.close()
    dst.close()
