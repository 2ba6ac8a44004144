"""`GET /v1/kernel` lists the nodes on the database: this server, other live kernels and
stale ones (stopped without closing), each with the caller's own agents it holds by name
and only a count of everyone's: no other user's agent name leaks."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import update

from llmos.kernel.nodes import NodeRegistry
from llmos.storage.models import nodes
from tests.server.conftest import LiveServer


def test_the_kernel_route_lists_nodes_scoped_to_the_caller(tmp_path: Path) -> None:
    server = LiveServer(tmp_path)
    try:
        with server.client("alice") as alice, server.client("bob") as bob:
            r = alice.post("/v1/agents", json={"name": "alice-secret", "model": "scripted/echo"})
            assert r.status_code == 201, r.text
            alices = r.json()["id"]
            r = bob.post("/v1/agents", json={"name": "bob-secret", "model": "scripted/echo"})
            assert r.status_code == 201, r.text
            bobs = r.json()["id"]
            other, gone = NodeRegistry("kernel-other", 1.0), NodeRegistry("kernel-gone", 1.0)
            with server.kernel.db.begin() as conn:
                other.beat(conn, [alices, bobs], images=2)
                gone.beat(conn, [bobs], images=1)
                conn.execute(  # its last beat was a minute ago
                    update(nodes)
                    .where(nodes.c.id == "kernel-gone")
                    .values(last_seen=time.time() - 60)
                )
            r = alice.get("/v1/kernel")
            assert r.status_code == 200, r.text
            listed = {n["id"]: n for n in r.json()["nodes"]}
            this = [n for n in listed.values() if n["this"]]
            assert len(this) == 1 and this[0]["status"] == "live"
            assert listed["kernel-other"]["status"] == "live"
            assert listed["kernel-other"]["agents"] == ["alice-secret"]
            assert listed["kernel-other"]["agents_held"] == 2
            assert listed["kernel-gone"]["status"] == "stale"
            assert (
                listed["kernel-gone"]["agents"] == [] and listed["kernel-gone"]["agents_held"] == 1
            )
            assert listed["kernel-gone"]["seconds_since_seen"] >= 59
            for key in ("host", "pid", "version", "started_at", "last_seen"):
                assert key in listed["kernel-other"]
            assert "bob-secret" not in r.text and bobs not in r.text
            theirs = bob.get("/v1/kernel")
            assert theirs.status_code == 200
            assert "alice-secret" not in theirs.text and alices not in theirs.text
            assert {n["id"]: n["agents"] for n in theirs.json()["nodes"]}["kernel-gone"] == [
                "bob-secret"
            ]
            assert alice.get("/v1/kernel", headers={"Authorization": ""}).status_code == 401
    finally:
        server.stop()
