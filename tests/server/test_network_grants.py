"""`net` grants through the HTTP API reach the agent's tools: the granted host
answers, the llmos server's own port does not, and a revoked grant closes it."""

from __future__ import annotations

import asyncio

import httpx

from tests.server.conftest import LiveServer
from tests.tools.test_network import FETCH, needs_sandbox, private_net, web

__all__ = ["private_net", "web"]  # fixtures, used by name


@needs_sandbox
def test_grants_made_through_the_api_open_that_host_to_the_agents_tools(
    live: LiveServer, alice: httpx.Client, web: int
) -> None:
    assert alice.post("/v1/tools", json={"source": FETCH}).status_code == 201
    made = alice.post("/v1/agents", json={"name": "netter", "model": "scripted/echo"})
    agent_id = made.json()["id"]
    for name in ("fetch", "direct"):
        assert alice.put(f"/v1/agents/netter/tools/{name}").is_success
    bad = alice.post("/v1/agents/netter/grants", json={"kind": "net", "target": "no host!"})
    assert bad.status_code == 400, bad.text
    r = alice.post("/v1/agents/netter/grants", json={"kind": "net", "target": f"127.0.0.1:{web}"})
    assert r.status_code == 201, r.text
    assert {"kind": "net", "target": f"127.0.0.1:{web}", "mode": "rw"} in r.json()["grants"]

    tool = live.kernel.tools.get("alice", "fetch")
    assert tool is not None
    server_port = int(live.url.rsplit(":", 1)[1])

    def fetch(url: str) -> str:
        ran = asyncio.run(live.kernel.tools.run(tool, {"url": url}, agent_id))
        assert ran.ok, ran
        return str(ran.result)

    assert fetch(f"http://127.0.0.1:{web}/").startswith("200 hello")
    # the llmos server's own port, even granted (the server runs in this process)
    alice.post(
        "/v1/agents/netter/grants", json={"kind": "net", "target": f"127.0.0.1:{server_port}"}
    )
    own = fetch(f"http://127.0.0.1:{server_port}/health")
    assert own.startswith("403 ") and "llmos's own" in own, own
    assert alice.delete(f"/v1/agents/netter/grants/net/127.0.0.1:{web}").status_code == 204
    after = fetch(f"http://127.0.0.1:{web}/")
    assert "not granted" in after, after
