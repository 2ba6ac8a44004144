"""Authentication and isolation on every route: no key or a wrong key is a 401, another
user's agent is a 404, and nothing bob does reaches alice's agent."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.server.conftest import LiveServer, unique

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
    ("GET", "/v1/agents/{agent}/context", None),
    ("GET", "/v1/kernel", None),
    ("GET", "/v1/me", None),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "{agent}", "messages": [{"role": "user", "content": "hi"}]},
    ),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/{model}", None),
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
        return {
            "name": name,
            "passage_id": pid["ids"][0],
            "export": export,
            "snapshot": _snapshot(alice, name),
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
    or (isinstance(r[2], dict) and r[2].get("model") == "{agent}")
]


@pytest.mark.parametrize(
    ("method", "path", "body"), AGENT_ROUTES, ids=[f"{m} {p}" for m, p, _ in AGENT_ROUTES]
)
def test_another_users_agent_is_404(
    live: LiveServer, bob: httpx.Client, target: dict[str, Any], method: str, path: str, body: Any
) -> None:
    path, body = _fill(path, body, target)
    r = bob.request(method, path, json=body)
    assert r.status_code == 404, r.text
    assert (
        target["name"] in r.json()["error"]["message"] or "passage" in r.text or ("model" in r.text)
    )
    # and alice's agent is untouched
    with live.client("alice") as alice:
        assert _snapshot(alice, target["name"]) == target["snapshot"]


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
