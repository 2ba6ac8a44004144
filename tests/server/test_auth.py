"""Authentication and isolation on every route: no key or a wrong key is a 401, another
user's agent is a 404, and nothing bob does reaches alice's agent."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.server.conftest import LiveServer, unique

PLANTED_TOOL = 'def planted() -> str:\n    """Plant."""\n    return "x"\n'

# Every route under /v1: (method, path, json body). `test_table_is_complete`
# fails when a route is added without a row here.
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/v1/agents", None),
    ("POST", "/v1/agents", {"name": "newcomer"}),
    ("GET", "/v1/agents/{agent}", None),
    ("PATCH", "/v1/agents/{agent}", {"human": "changed by someone"}),
    ("DELETE", "/v1/agents/{agent}", None),
    ("GET", "/v1/agents/{agent}/export", None),
    ("POST", "/v1/agents/import", "EXPORT"),
    ("POST", "/v1/agents/{agent}/messages", {"text": "hi"}),
    ("GET", "/v1/agents/{agent}/messages", None),
    ("POST", "/v1/agents/{agent}/messages/retry", None),
    ("POST", "/v1/agents/{agent}/cancel", None),
    ("GET", "/v1/agents/{agent}/blocks", None),
    ("GET", "/v1/agents/{agent}/blocks/{label}", None),
    ("PUT", "/v1/agents/{agent}/blocks/{label}", {"value": "overwritten"}),
    ("PATCH", "/v1/agents/{agent}/blocks/{label}", {"append": "more"}),
    ("POST", "/v1/agents/{agent}/archival", {"texts": ["planted"]}),
    ("GET", "/v1/agents/{agent}/archival", None),
    ("GET", "/v1/agents/{agent}/archival/search?query=secret", None),
    ("DELETE", "/v1/agents/{agent}/archival/{passage_id}", None),
    ("GET", "/v1/agents/{agent}/recall/search?query=secret", None),
    ("POST", "/v1/agents/{agent}/rethink", {"thought": "x"}),
    ("GET", "/v1/agents/{agent}/recall/date?start=2000-01-01", None),
    ("GET", "/v1/agents/{agent}/context", None),
    # long operations (routes/bulk.py)
    ("POST", "/v1/agents/{agent}/embedder", {"embedder": "test/hash"}),
    ("POST", "/v1/agents/{agent}/documents", {"paths": ["/tmp"]}),
    ("GET", "/v1/kernel", None),
    ("GET", "/v1/me", None),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "{agent}", "messages": [{"role": "user", "content": "hi"}]},
    ),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/{model}", None),
    # tools, grants, approvals, audit (routes/tools.py)
    ("POST", "/v1/tools", {"source": PLANTED_TOOL}),
    ("GET", "/v1/tools", None),
    ("GET", "/v1/tools/{tool}", None),
    ("GET", "/v1/tools/{tool}/versions", None),
    ("POST", "/v1/tools/{tool}/rollback", {"version": 1}),
    ("DELETE", "/v1/tools/{tool}", None),
    ("GET", "/v1/agents/{agent}/tools", None),
    ("PUT", "/v1/agents/{agent}/tools/{tool}", None),
    ("DELETE", "/v1/agents/{agent}/tools/{tool}", None),
    ("GET", "/v1/agents/{agent}/grants", None),
    ("POST", "/v1/agents/{agent}/grants", {"kind": "files", "target": "*"}),
    ("DELETE", "/v1/agents/{agent}/grants/{kind}/{target}", None),
    ("GET", "/v1/approvals", None),
    ("GET", "/v1/approvals/{approval_id}", None),
    ("POST", "/v1/approvals/{approval_id}", {"approve": True}),
    ("GET", "/v1/audit", None),
    # MCP servers (routes/mcp.py): per user, like tools
    ("GET", "/v1/mcp", None),
    ("POST", "/v1/mcp", {"name": "planted", "url": "http://127.0.0.1:9/mcp"}),
    ("DELETE", "/v1/mcp/{name}", None),
    # files (routes/files.py): an agent's area and a shared area
    ("GET", "/v1/agents/{agent}/files", None),
    ("GET", "/v1/agents/{agent}/files/{path}", None),
    ("PUT", "/v1/agents/{agent}/files/{path}", {"content": "overwritten"}),
    ("DELETE", "/v1/agents/{agent}/files/{path}", None),
    ("GET", "/v1/agents/{agent}/file-versions/{path}", None),
    ("POST", "/v1/agents/{agent}/file-rollback/{path}", {"version": 1}),
    ("GET", "/v1/agents/{agent}/file-search?query=42", None),
    ("GET", "/v1/shared/{area}/files", None),
    ("GET", "/v1/shared/{area}/files/{path}", None),
    ("PUT", "/v1/shared/{area}/files/{path}", {"content": "overwritten"}),
    ("DELETE", "/v1/shared/{area}/files/{path}", None),
    ("GET", "/v1/shared/{area}/file-versions/{path}", None),
    ("POST", "/v1/shared/{area}/file-rollback/{path}", {"version": 1}),
    ("GET", "/v1/shared/{area}/file-search?query=42", None),
    # AIOS's kernel API (server/aios/), keyed here; keyless only on `serve --aios-user`
    ("POST", "/v1/aios/query", {"agent_name": "x", "query_type": "llm", "query_data": {}}),
    ("GET", "/v1/aios/core/status", None),
    ("GET", "/v1/aios/status", None),
    ("GET", "/v1/aios/core/llms/list", None),
    ("POST", "/v1/aios/core/llm/setup", {"llm_name": "scripted/echo"}),
    ("POST", "/v1/aios/core/storage/setup", {}),
    ("POST", "/v1/aios/core/memory/setup", {}),
    ("POST", "/v1/aios/core/tool/setup", {}),
    ("POST", "/v1/aios/core/scheduler/setup", {}),
    ("POST", "/v1/aios/core/factory/setup", {}),
    ("POST", "/v1/aios/core/cleanup", {}),
    ("POST", "/v1/aios/agents/submit", {"agent_id": "x", "agent_config": {"task": "t"}}),
    ("GET", "/v1/aios/agents/{execution_id}/status", None),
]
IDS = [f"{m} {p}" for m, p, _ in ROUTES]


@pytest.fixture(scope="module")
def target(live: LiveServer) -> dict[str, Any]:
    """Alice's agent that bob keeps trying to reach, with a message and a passage."""
    with live.client("alice") as alice:
        name = unique("private")
        assert alice.post("/v1/agents", json={"name": name}).status_code == 201
        alice.post(f"/v1/agents/{name}/messages", json={"text": "the secret is 42"})
        pid = alice.post(f"/v1/agents/{name}/archival", json={"texts": ["secret 42"]}).json()
        export = alice.get(f"/v1/agents/{name}/export").json()
        # her tool (attached), a pending approval, her agent's file, a shared file
        tool = unique("secret_tool").replace("-", "_")
        source = f'def {tool}(x: int) -> int:\n    """Echo x."""\n    return x\n'
        assert alice.post("/v1/tools", json={"source": source}).status_code == 201
        assert alice.put(f"/v1/agents/{name}/tools/{tool}").status_code == 200
        agent_id = alice.get(f"/v1/agents/{name}").json()["id"]
        approval_id = live.kernel.approval_store.create("alice", agent_id, tool, "{}", "call_1")
        area = unique("vault")
        path = "notes/secret.txt"
        assert alice.put(f"/v1/agents/{name}/files/{path}", json={"content": "42"}).is_success
        assert alice.put(f"/v1/shared/{area}/files/{path}", json={"content": "42"}).is_success
        r = alice.post(f"/v1/agents/{name}/grants", json={"kind": "files", "target": area})
        assert r.status_code == 201
        return {
            "name": name,
            "passage_id": pid["ids"][0],
            "export": export,
            "snapshot": _snapshot(alice, name),
            "tool": tool,
            "approval_id": approval_id,
            "area": area,
            "path": path,
        }


def _snapshot(alice: httpx.Client, name: str) -> dict[str, Any]:
    desc = alice.get(f"/v1/agents/{name}").json()
    return {
        "blocks": desc["blocks"],
        "recall_count": desc["recall_count"],
        "archival_count": desc["archival_count"],
    }


def _fill(path: str, body: Any, target: dict[str, Any]) -> tuple[str, Any]:
    path = (
        path.replace("{agent}", target["name"])
        .replace("{model}", target["name"])
        .replace("{label}", "human")
        .replace("{passage_id}", str(target["passage_id"]))
        .replace("{tool}", target["tool"])
        .replace("{approval_id}", target["approval_id"])
        .replace("{kind}", "files")
        .replace("{target}", target["area"])
        .replace("{area}", target["area"])
        .replace("{path}", target["path"])
    )
    if body == "EXPORT":
        body = target["export"]
    elif isinstance(body, dict) and body.get("model") == "{agent}":
        body = {**body, "model": target["name"]}
    return path, body


def test_table_is_complete(live: LiveServer) -> None:
    spec = httpx.get(f"{live.url}/openapi.json").json()
    served = {
        (method.upper(), path)
        for path, ops in spec["paths"].items()
        if path.startswith("/v1")
        for method in ops
    }
    listed = {(m, p.split("?")[0]) for m, p, _ in ROUTES}
    assert served == listed


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=IDS)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer llmos-not-a-real-key-0000000000000000000000000000",
        "Bearer",
        "Basic YWxpY2U6cGFzc3dvcmQ=",
        "llmos-only-the-key",
    ],
    ids=["no-key", "wrong-key", "empty-key", "basic-auth", "no-scheme"],
)
def test_401_without_a_valid_key(
    live: LiveServer,
    target: dict[str, Any],
    method: str,
    path: str,
    body: Any,
    authorization: str | None,
) -> None:
    path, body = _fill(path, body, target)
    headers = {"Authorization": authorization} if authorization else {}
    r = httpx.request(method, live.url + path, json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "authentication_error"


def test_401_also_for_a_broken_body(live: LiveServer) -> None:
    # Authentication comes before parsing: no key + bad JSON is still a 401.
    r = httpx.post(
        f"{live.url}/v1/agents", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert r.status_code == 401


def test_revoked_key_is_401(live: LiveServer) -> None:
    user, key = live.access.create_user(unique("carol"))
    assert (
        httpx.get(f"{live.url}/v1/me", headers={"Authorization": f"Bearer {key}"}).json()["name"]
        == user.name
    )
    live.access.revoke_keys(user.name)
    r = httpx.get(f"{live.url}/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401


AGENT_ROUTES = [
    r
    for r in ROUTES
    if "{agent}" in r[1]
    or "{model}" in r[1]
    or "{tool}" in r[1]
    or "{approval_id}" in r[1]
    # a shared area's name is per user: bob writing or listing "his" area of
    # that name is his own (checked in test_shared_areas_are_per_user)
    or ("{area}" in r[1] and "{path}" in r[1] and r[0] != "PUT")
    or (isinstance(r[2], dict) and r[2].get("model") == "{agent}")
]


def _owned(alice: httpx.Client, target: dict[str, Any]) -> dict[str, Any]:
    """Alice's tool, approval and files, as bob must leave them."""
    path, area = target["path"], target["area"]
    return {
        "tool": alice.get(f"/v1/tools/{target['tool']}").json(),
        "attached": alice.get(f"/v1/agents/{target['name']}/tools").json(),
        "approval": alice.get(f"/v1/approvals/{target['approval_id']}").json()["status"],
        "grants": alice.get(f"/v1/agents/{target['name']}/grants").json(),
        "file": alice.get(f"/v1/agents/{target['name']}/file-versions/{path}").json(),
        "shared": alice.get(f"/v1/shared/{area}/file-versions/{path}").json(),
    }


def _not_found(path: str, target: dict[str, Any]) -> dict[str, Any]:
    """The error bob gets for each kind of alice's thing: the same as for one that
    does not exist (OpenAI's shape and wording on the OpenAI-compatible routes)."""
    if path.startswith(("/v1/chat/completions", "/v1/models/")):
        return {
            "type": "invalid_request_error",
            "message": f"The model {target['name']!r} does not exist: name one of your agents "
            "(GET /v1/models)",
            "code": "model_not_found",
        }
    if path.startswith("/v1/tools/"):
        kind, message = "tool", f"no tool named {target['tool']!r}"
    elif path.startswith("/v1/approvals/"):
        kind, message = "approval", f"no approval {target['approval_id']!r}"
    elif path.startswith("/v1/shared/"):
        kind, message = "file", f"no file {target['path']!r}"
    else:
        kind, message = "agent", f"no agent named {target['name']!r}"
    return {"type": "not_found_error", "message": message, "code": f"{kind}_not_found"}


@pytest.mark.parametrize(
    ("method", "path", "body"), AGENT_ROUTES, ids=[f"{m} {p}" for m, p, _ in AGENT_ROUTES]
)
def test_another_users_agent_is_404(
    live: LiveServer, bob: httpx.Client, target: dict[str, Any], method: str, path: str, body: Any
) -> None:
    with live.client("alice") as alice:
        before = _owned(alice, target)
    path, body = _fill(path, body, target)
    r = bob.request(method, path, json=body)
    assert r.status_code == 404, r.text
    assert r.json() == {"error": _not_found(path, target)}
    # and alice's agent, tool, approval and files are untouched
    with live.client("alice") as alice:
        assert _snapshot(alice, target["name"]) == target["snapshot"]
        assert _owned(alice, target) == before
        assert before["approval"] == "pending"


def test_shared_areas_are_per_user(
    live: LiveServer, bob: httpx.Client, target: dict[str, Any]
) -> None:
    area, path = target["area"], target["path"]
    assert bob.get(f"/v1/shared/{area}/files").json()["files"] == []
    assert bob.put(f"/v1/shared/{area}/files/{path}", json={"content": "bob's"}).is_success
    assert bob.get(f"/v1/shared/{area}/files/{path}").json()["content"] == "bob's"
    with live.client("alice") as alice:
        assert alice.get(f"/v1/shared/{area}/files/{path}").json()["content"] == "42"
    # bob's own lists show none of alice's tools, approvals or audit entries
    assert target["tool"] not in str(bob.get("/v1/tools").json())
    assert target["approval_id"] not in str(bob.get("/v1/approvals?status=all").json())
    assert target["name"] not in str(bob.get("/v1/audit").json())


def test_agent_routes_reach_only_the_callers_agents(
    live: LiveServer, bob: httpx.Client, target: dict[str, Any]
) -> None:
    name = target["name"]
    assert name not in [a["name"] for a in bob.get("/v1/agents").json()["agents"]]
    assert name not in [m["id"] for m in bob.get("/v1/models").json()["data"]]
    assert bob.get("/v1/me").json()["name"] == "bob"
    kernel = bob.get("/v1/kernel").json()
    assert name not in kernel["usage"]
    # names are per user: bob may have an agent of the same name, and it is his
    r = bob.post("/v1/agents", json={"name": name})
    assert r.status_code == 201 and r.json()["owner"] == "bob"
    r = bob.post(f"/v1/agents/{name}/messages", json={"text": "hello mine"})
    assert r.json()["reply"] == "echo: hello mine"
    # importing alice's export makes a copy of bob's own
    r = bob.post("/v1/agents/import", params={"name": unique()}, json=target["export"])
    assert r.status_code == 201 and r.json()["owner"] == "bob"
    with live.client("alice") as alice:
        assert _snapshot(alice, name) == target["snapshot"]
        history = alice.get(f"/v1/agents/{name}/messages").json()["messages"]
        assert "hello mine" not in str(history)
