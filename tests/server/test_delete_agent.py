"""Deleting an agent deletes its files: every version in its own area, and
nothing in another agent's area or a shared area (issue 11: the rows stayed,
and an agent re-created under the same id space could not see them but the
database kept them and counted them)."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from llmos.storage.files import agent_area
from llmos.storage.models import file_versions, files
from tests.server.conftest import LiveServer


def _rows(live: LiveServer, area: str) -> tuple[int, int]:
    with live.kernel.db.connect() as conn:
        n_files = conn.execute(
            select(func.count()).select_from(files).where(files.c.area == area)
        ).scalar_one()
        n_versions = conn.execute(
            select(func.count())
            .select_from(file_versions.join(files, files.c.id == file_versions.c.file_id))
            .where(files.c.area == area)
        ).scalar_one()
    return n_files, n_versions


def test_deleting_an_agent_deletes_its_files_and_only_its_files(
    live: LiveServer, alice: httpx.Client
) -> None:
    ids = {}
    for name in ("doomed", "kept"):
        r = alice.post("/v1/agents", json={"name": name, "model": "scripted/echo"})
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
        for content in ("one", "two"):  # two versions each
            w = alice.put(f"/v1/agents/{name}/files/notes.txt", json={"content": content})
            assert w.is_success, w.text
    assert alice.put("/v1/shared/team/files/s.txt", json={"content": "s"}).is_success
    assert _rows(live, agent_area(ids["doomed"])) == (1, 2)

    assert alice.delete("/v1/agents/doomed").status_code == 204
    assert _rows(live, agent_area(ids["doomed"])) == (0, 0)
    assert _rows(live, agent_area(ids["kept"])) == (1, 2)
    assert _rows(live, "shared:team") == (1, 1)
    assert alice.get("/v1/agents/kept/files/notes.txt").json()["content"] == "two"
