"""The routes the local service's commands run through (issue 13), on a real server over
TCP: a new embedder with its progress streamed, a file search, and what a server
whose users are not its operator refuses — files of its disk and MCP servers it
would run or reach (403, nothing stored)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.server.deps import ServerConfig
from tests.conftest import HashEmbedder
from tests.server.conftest import TEST_CONFIG, LiveServer
from tests.server.test_stream_tokens import sse_events


class WideHash(HashEmbedder):
    name = "test/wide"
    dim = 96


@pytest.fixture
def served(tmp_path: Path) -> Iterator[LiveServer]:
    config: ServerConfig = dataclasses.replace(TEST_CONFIG, embedders=("test/*",))
    live = LiveServer(tmp_path / "home", config)
    live.kernel.cores.embedders["test/wide"] = WideHash()
    with live.client("alice") as alice:
        assert alice.post("/v1/agents", json={"name": "ann", "model": "scripted/echo"}).is_success
        texts = [f"passage {i} about otters" for i in range(5)]
        assert alice.post("/v1/agents/ann/archival", json={"texts": texts}).is_success
    try:
        yield live
    finally:
        live.stop()


def test_a_new_embedder_streams_its_progress_then_the_result(served: LiveServer) -> None:
    with served.client("alice") as alice:
        body = {"embedder": "test/wide", "stream": True}
        with alice.stream("POST", "/v1/agents/ann/embedder", json=body) as r:
            assert r.status_code == 200
            events = list(sse_events(r.iter_lines()))
        kinds = [k for k, _ in events]
        assert kinds[0] == "progress" and kinds[-1] == "done"
        assert events[-2][1]["done"] == events[-2][1]["total"] == 5
        assert events[-1][1]["result"]["dim"] == 96
        assert alice.get("/v1/agents/ann").json()["embedder"] == "test/wide"
        hits = alice.get("/v1/agents/ann/archival/search", params={"query": "otters"}).json()
        assert hits["results"]  # searched with the new vectors
        # refused before anything runs: a real status, not an event
        assert alice.post("/v1/agents/ann/embedder", json={"embedder": "nope/x"}).status_code == 403
        r = alice.post("/v1/agents/ann/embedder", json={"embedder": "test/unknown"})
        assert r.status_code == 400 and "test/unknown" in r.json()["error"]["message"]
        assert (
            alice.post("/v1/agents/bob/embedder", json={"embedder": "test/hash"}).status_code == 404
        )
    with served.client("bob") as bob:
        r = bob.post("/v1/agents/ann/embedder", json={"embedder": "test/hash"})
        assert r.status_code == 404
    with served.client("alice") as alice:
        assert alice.get("/v1/agents/ann").json()["embedder"] == "test/wide"


def test_a_server_loads_no_files_of_its_disk_and_runs_no_mcp_server(
    served: LiveServer, tmp_path: Path
) -> None:
    secret = tmp_path / "server-only.txt"
    secret.write_text("the operator's file")
    with served.client("alice") as alice:
        r = alice.post("/v1/agents/ann/documents", json={"paths": [str(secret)]})
        assert r.status_code == 403 and "own disk" in r.json()["error"]["message"]
        assert alice.get("/v1/agents/ann").json()["archival_count"] == 5
        marker = tmp_path / "ran"
        r = alice.post("/v1/mcp", json={"name": "evil", "command": "touch", "args": [str(marker)]})
        assert r.status_code == 403
        r = alice.post("/v1/mcp", json={"name": "web", "url": "http://127.0.0.1:9/mcp"})
        assert r.status_code == 403
        assert not marker.exists()
        assert alice.get("/v1/mcp").json() == {"servers": []}
        assert alice.delete("/v1/mcp/evil").status_code == 404


def test_file_search_is_per_area(served: LiveServer) -> None:
    with served.client("alice") as alice:
        alice.put("/v1/agents/ann/files/a.txt", json={"content": "otters float"})
        alice.put("/v1/shared/team/files/b.txt", json={"content": "otters swim"})
        found = alice.get("/v1/agents/ann/file-search", params={"query": "OTTERS"}).json()
        assert [r["path"] for r in found["results"]] == ["a.txt"]
        found = alice.get("/v1/shared/team/file-search", params={"query": "swim"}).json()
        assert [r["path"] for r in found["results"]] == ["b.txt"]
        assert alice.get("/v1/shared/team/file-search", params={"query": ""}).status_code == 422
    with served.client("bob") as bob:  # bob's "team" is his own, empty
        found = bob.get("/v1/shared/team/file-search", params={"query": "swim"}).json()
        assert found["results"] == []
