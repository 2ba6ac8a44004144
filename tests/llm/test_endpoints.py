"""`llmos models` probes where the agents' requests go, with the key meant for that endpoint.

A real fake OpenAI server on loopback stands for the user's local server
(`OPENAI_BASE_URL`); every HTTP request the probe makes is recorded, so a
request to api.openai.com (or anywhere but the fake) fails the test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmos import Kernel
from llmos.llm.endpoints import check, configured
from tests.fakes.openai_server import FakeOpenAIServer

KEY = "sk-local-only-key-4321"


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[httpx.Request]:
    for name in ("OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OLLAMA_BASE_URL",
                 "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_PROFILE", "AWS_ACCESS_KEY_ID"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLMOS_MODELS", str(tmp_path / "models.json"))
    requests: list[httpx.Request] = []
    real_send = httpx.AsyncClient.send

    async def record(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> Any:
        requests.append(request)
        return await real_send(self, request, **kw)

    monkeypatch.setattr(httpx.AsyncClient, "send", record)
    return requests


async def test_probe_goes_to_the_configured_base_url_only(
    monkeypatch: pytest.MonkeyPatch, kernel: Kernel, sent: list[httpx.Request]
) -> None:
    with FakeOpenAIServer(api_key=KEY) as oa:
        monkeypatch.setenv("OPENAI_BASE_URL", oa.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        await kernel.create_agent(
            "ada", model="openai/fake-model", context_window=3072, embedder="test/hash"
        )
        sent.clear()  # creating the agent may ask the server for its window
        endpoints = configured(kernel.agent_models())
        reach = await check(endpoints)
    rows = {e.model: e.as_dict(r) for e, r in zip(endpoints, reach, strict=True)}
    agent = rows["openai/fake-model"]
    assert agent["agents"] == ["ada"] and agent["endpoint"] == oa.base_url
    assert agent["reachable"] is True, agent["detail"]
    assert agent["info"]["context_window"] == 3072 and agent["info"]["source"] == "agent"
    assert rows["openai/*"]["reachable"] is True
    assert sent, "the probe sent nothing"
    for request in sent:
        assert request.url.host == "127.0.0.1" and oa.base_url.startswith(
            f"http://127.0.0.1:{request.url.port}/"
        ), request.url
        assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert KEY not in json.dumps(list(rows.values()))


async def test_key_never_goes_to_the_public_api_when_a_base_url_is_set(
    monkeypatch: pytest.MonkeyPatch, kernel: Kernel, sent: list[httpx.Request]
) -> None:
    # The local server is down: the probe says so, and does not fall back to OpenAI.
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    endpoints = [e for e in configured() if e.provider == "openai"]
    (reach,) = await check(endpoints)
    assert reach.ok is False and "connect" in reach.detail
    assert [r.url.host for r in sent] == ["127.0.0.1"]


def test_models_command_shows_the_agents_window(
    monkeypatch: pytest.MonkeyPatch, home: Path, sent: list[httpx.Request]
) -> None:
    from typer.testing import CliRunner

    from llmos.cli.main import app

    with FakeOpenAIServer(api_key=KEY) as oa:
        monkeypatch.setenv("OPENAI_BASE_URL", oa.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        runner = CliRunner()
        # The CLI creates agents through the API, which accepts only real embedders:
        # the fake server embeds too.
        made = runner.invoke(
            app,
            ["--home", str(home), "agent", "create", "ada", "--model", "openai/fake-model",
             "--context-window", "3072", "--embedder", "openai/text-embedding-3-small"],
        )  # fmt: skip
        assert made.exit_code == 0, made.output
        result = runner.invoke(app, ["--home", str(home), "models", "--json"])
        monkeypatch.setenv("COLUMNS", "250")
        table = runner.invoke(app, ["--home", str(home), "models"])
    assert result.exit_code == 0, result.output
    (row,) = [r for r in json.loads(result.stdout) if r["model"] == "openai/fake-model"]
    assert row["reachable"] is True and row["info"]["context_window"] == 3072
    line = next(ln for ln in table.output.splitlines() if "fake-model" in ln)
    assert "3,072 (agent)" in line and "8,192" not in line, table.output
    assert all(r.url.host == "127.0.0.1" for r in sent)
