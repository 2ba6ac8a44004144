"""Numbers that do not fit: integers past SQLite's 64 bits, settings of the wrong type.

Issue 11's probe: `POST /v1/agents/import` with `max_steps: "abc"` or
`priority: 2**70` made a broken agent or a 500, and 2**70 in an id, a version
or a cursor overflowed SQLite. Every integer the API takes has a maximum in
its schema (checked over the whole OpenAPI document, so a new route cannot
forget one), every integer query parameter is tried at 2**70 on a live
server, and an import is checked with the one settings validator.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from llmos.server.app import create_app
from tests.server.conftest import TEST_CONFIG, LiveServer

HUGE = 2**70
SPEC = create_app(config=TEST_CONFIG).openapi()
COMPONENTS = SPEC.get("components", {}).get("schemas", {})


def _unbounded(schema: Any, where: str, seen: frozenset[str] = frozenset()) -> list[str]:
    """Every integer under `schema` without a maximum (a const or enum is bounded)."""
    if not isinstance(schema, dict):
        return []
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return [] if name in seen else _unbounded(COMPONENTS[name], where, seen | {name})
    out = []
    if (
        schema.get("type") == "integer"
        and not {"maximum", "exclusiveMaximum", "const", "enum"} & schema.keys()
    ):
        out.append(where)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            out += _unbounded(sub, where, seen)
    for name, sub in (schema.get("properties") or {}).items():
        out += _unbounded(sub, f"{where}.{name}", seen)
    out += _unbounded(schema.get("items"), f"{where}[]", seen)
    out += _unbounded(schema.get("additionalProperties"), f"{where}{{}}", seen)
    return out


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, ops in SPEC["paths"].items() for m, op in ops.items()]


def test_every_integer_the_api_takes_has_a_maximum() -> None:
    found = []
    for method, path, op in _operations():
        for p in op.get("parameters", []):
            found += _unbounded(p.get("schema"), f"{method} {path} ?{p['name']}")
        for content in op.get("requestBody", {}).get("content", {}).values():
            found += _unbounded(content.get("schema"), f"{method} {path} body")
    assert found == []


def _is_integer(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "integer" or any(
        s.get("type") == "integer" for s in schema.get("anyOf", [])
    )


INTEGER_QUERIES = [
    (method, path, p["name"])
    for method, path, op in _operations()
    if method == "GET"
    for p in op.get("parameters", [])
    if p["in"] == "query" and _is_integer(p.get("schema", {}))
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = LiveServer(tmp_path_factory.mktemp("overflow"))
    with s.client("alice") as c:
        assert c.post("/v1/agents", json={"name": "target", "model": "scripted/echo"}).is_success
        c.put("/v1/agents/target/files/a.txt", content=b"x")
    yield s
    s.stop()


@pytest.mark.parametrize(("method", "path", "param"), INTEGER_QUERIES)
def test_an_integer_query_parameter_of_2_to_the_70_is_a_422(
    server: LiveServer, method: str, path: str, param: str
) -> None:
    url = (
        path.replace("{agent}", "target")
        .replace("{path}", "a.txt")
        .replace("{area}", "shared1")
        .replace("{label}", "human")
    )
    url = url.replace("{", "").replace("}", "")  # any other path parameter: a literal
    with server.client("alice") as c:
        r = c.request(method, url, params={param: str(HUGE)})
    assert r.status_code == 422, (url, param, r.status_code, r.text[:300])


def _export(c: httpx.Client) -> dict[str, Any]:
    r = c.get("/v1/agents/target/export")
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("settings.max_steps", "abc"),
        ("settings.priority", HUGE),
        ("settings.max_steps", 0),
        ("settings.temperature", "hot"),
        ("context_window", HUGE),
        ("window_start_index", HUGE),
        ("blocks.0.limit", HUGE),
    ],
)
def test_an_import_with_a_bad_number_is_a_422_and_makes_no_agent(
    server: LiveServer, field: str, value: Any
) -> None:
    with server.client("alice") as c:
        doc = _export(c)
        doc["agent"]["name"] = "imported"
        where: Any = doc if field.startswith("blocks") else doc["agent"]
        *parents, last = field.split(".")
        for key in parents:
            where = where[int(key)] if key.isdigit() else where.setdefault(key, {})
        where[last] = value
        r = c.post("/v1/agents/import", json=doc)
        assert r.status_code == 422, (field, r.status_code, r.text[:300])
        assert "imported" not in [a["name"] for a in c.get("/v1/agents").json()["agents"]]


def test_an_import_of_a_message_with_a_huge_token_count_is_a_422(server: LiveServer) -> None:
    with server.client("alice") as c:
        assert c.post("/v1/agents/target/messages", json={"text": "hi"}).is_success
        doc = _export(c)
        doc["agent"]["name"] = "imported-tokens"
        doc["messages"][0]["tokens"] = HUGE
        r = c.post("/v1/agents/import", json=doc)
        assert r.status_code == 422, r.text[:300]
