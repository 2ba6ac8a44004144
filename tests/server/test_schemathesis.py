"""Schemathesis against /openapi.json: no generated request, valid or not, gets a 5xx,
and every error is JSON with a message.

One test per operation and generation mode (positive: inputs the schema allows;
negative: inputs it forbids), each a bounded Hypothesis run. Operations on an
agent run half their cases against a real agent of the caller's, so valid
inputs reach the kernel instead of stopping at a 404.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from llmos.server.app import create_app
from tests.server.conftest import TEST_CONFIG, LiveServer

# The schema is the app's own; building it needs no kernel, so the test list
# is known at collection time.
SCHEMA = schemathesis.openapi.from_dict(create_app(config=TEST_CONFIG).openapi())
OPERATIONS = [r.ok() for r in SCHEMA.get_all_operations()]
REAL_AGENT = "fuzz-target"
# Per operation and mode: ~50 operation-modes x 10 cases take ~20 s here.
EXAMPLES = 10


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("fuzz"))
    with server.client("alice") as c:
        c.post("/v1/agents", json={"name": REAL_AGENT, "model": "scripted/think"})
        c.post(f"/v1/agents/{REAL_AGENT}/messages", json={"text": "a first fact"})
    yield server
    server.stop()


def _strategy(operation: Any, mode: GenerationMode) -> st.SearchStrategy[Any]:
    strategy = operation.as_strategy(mode)
    params = {p.name for p in operation.iter_parameters() if p.location == "path"}
    # Deleting the shared agent would turn every later case into a 404.
    deletes_agent = operation.method.upper() == "DELETE" and params == {"agent"}
    if "agent" in params and not deletes_agent:
        fixed = {"agent": REAL_AGENT}
        if "label" in params:
            fixed["label"] = "human"
        strategy = st.one_of(strategy, operation.as_strategy(mode, path_parameters=fixed))
    return strategy


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_no_server_errors(fuzzed: LiveServer, operation: Any, mode: GenerationMode) -> None:
    headers = {"Authorization": f"Bearer {fuzzed.users['alice']}"}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, mode))
    def run(case: Any) -> None:
        # Generated headers may try their own Authorization; ours wins.
        case.headers = {**(case.headers or {}), **headers}
        try:
            response = case.call(base_url=fuzzed.url, timeout=30)
        except requests.ConnectionError:
            # uvicorn's HTTP parser refuses a request head over 16 KiB by
            # closing the connection; while the client still writes, that
            # reads as a reset. Refusing such a request is right; only that.
            if len(case.formatted_path) + len(str(case.query or "")) < 16 * 1024:
                raise
            return
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
        )
        if response.status_code >= 400:
            content_type = response.headers.get("content-type", [""])
            assert content_type[0].startswith("application/json")
            assert response.json()["error"]["message"]

    try:
        run()
    except Unsatisfiable:
        # e.g. negative data for an operation that takes no input at all
        pytest.skip("the schema leaves no invalid input to generate")
