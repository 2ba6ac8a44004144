"""Prompt caching across providers: where breakpoints go, what the fakes cache, what is shown.

Covers `llm/caching.py` (turns and breakpoints), the caching rules the fake
servers emulate, prompt-cache hit rates through the kernel on all three
SDK-backed cores (OpenAI, Anthropic, Bedrock) for both layouts, the per-agent
totals `llmos agent show` prints, and `llm/models.py` with `llmos models`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from llmos import Kernel
from llmos.llm.anthropic import AnthropicCore
from llmos.llm.bedrock import BedrockCore
from llmos.llm.caching import OPENING_TEXT, Block, mark_last_stable, system_blocks, to_turns
from llmos.llm.core import ChatRequest, ChatResponse, Message, ToolCall
from llmos.llm.endpoints import Endpoint, check, configured
from llmos.llm.models import bedrock_base_id, lookup
from llmos.llm.registry import make_core
from llmos.llm.replay import ScriptedCore, call
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.bedrock_server import FakeBedrockServer
from tests.fakes.caching import BreakpointCache
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policies import memgpt_policy


@pytest.fixture(autouse=True)
def provider_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION",
                 "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OLLAMA_BASE_URL",
                 "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-secret-1234")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-secret-5678")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDLLMOSCACHE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "cache-test-secret-abcdefgh")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("LLMOS_MODELS", str(tmp_path / "models.json"))


# --- turns and breakpoints ----------------------------------------------------------


def test_turns_merge_pair_and_repair() -> None:
    turns = to_turns(
        [
            Message("system", "S"),
            Message("assistant", "I start after a flush"),
            Message("assistant", None, [ToolCall("a", "f", "{not json")]),
            Message("user", "an event before the result"),  # the call's result never came
            Message("tool", "late", tool_call_id="zzz", name="g"),  # its call left the window
            Message("user", "   "),
        ]
    )
    assert [t.role for t in turns] == ["user", "assistant", "user"]
    assert turns[0].blocks[0].text == OPENING_TEXT
    assistant = turns[1].blocks
    assert [b.kind for b in assistant] == ["text", "tool_use"]
    assert assistant[1].input == {"raw_arguments": "{not json"}
    user = turns[2].blocks
    assert [b.kind for b in user] == ["tool_result", "text", "text"]  # results first
    assert user[0].id == "a" and "no result" in user[0].text
    assert user[2].text == "[function result: g] late"


def test_breakpoint_skips_volatile_alerts() -> None:
    messages = [Message("user", "hi"), Message("user", "[system alert] a"), Message("user", "b")]
    turns = to_turns(messages, volatile=2)
    marked = mark_last_stable(turns)
    assert isinstance(marked, Block) and marked.text == "hi"
    assert [b.cache_after for b in turns[0].blocks] == [True, False, False]


def test_system_blocks_need_matching_parts() -> None:
    req = ChatRequest([Message("system", "A\n\nB\n\nC")], system_parts=["A", "B", "C"])
    assert system_blocks(req) == [("A", True), ("B\n\nC", True)]
    req.system_parts = ["A", "X"]  # does not match the message: one block
    assert system_blocks(req) == [("A\n\nB\n\nC", True)]


def test_fake_cache_rules() -> None:
    cache = BreakpointCache()
    big = "x" * 5000  # 1,250 tokens
    first = cache.account([(big, True), ("tail", False)])
    assert (first.cache_read, first.cache_write) == (0, 1251)
    again = cache.account([(big, False), ("more", True), ("volatile", False)])
    # "more" is new: written; "volatile", after the last breakpoint, is plain input
    assert (again.cache_read, again.cache_write, again.input_tokens) == (1251, 1, 2)
    short = cache.account([("y" * 400, True)])  # 101 tokens: under the minimum
    assert short.cache_write == 0 and short.input_tokens == short.total
    # A breakpoint more than 20 segments past the written one finds nothing.
    far = cache.account([(big, False), *[(f"s{i}", False) for i in range(25)], ("end", True)])
    assert far.cache_read == 0


async def test_window_breakpoints_land_on_stable_boundaries(kernel: Kernel) -> None:
    """The real window of an agent: breakpoints after the base prompt, after core memory,
    and on the newest message that is not an alert."""
    seen: list[ChatRequest] = []

    def policy(req: ChatRequest) -> ChatResponse:
        seen.append(req)
        return call("send_message", message="ok")

    kernel.add_core(ScriptedCore(policy, context_window=8192), model="scripted/x")
    await kernel.create_agent("w", model="scripted/x", embedder="test/hash")
    await kernel.send("w", "first message")
    req = seen[-1]
    req.messages.append(Message("user", "[system alert] pressure"))
    req.volatile_messages = 1
    base, core_part = req.system_parts[0], "\n\n".join(req.system_parts[1:])

    body = AnthropicCore("claude-x").request_body(req)
    assert [(b["text"], "cache_control" in b) for b in body["system"]] == [
        (base, True),
        (core_part, True),
    ]
    last = body["messages"][-1]["content"]
    assert last[0]["text"] == "first message" and "cache_control" in last[0]
    assert "cache_control" not in last[1]

    kwargs = BedrockCore("anthropic.claude-3-7-sonnet-20250219-v1:0").request_kwargs(req)
    assert kwargs["system"] == [
        {"text": base},
        {"cachePoint": {"type": "default"}},
        {"text": core_part},
        {"cachePoint": {"type": "default"}},
    ]
    blocks = kwargs["messages"][-1]["content"]
    assert [next(iter(b)) for b in blocks] == ["text", "cachePoint", "text"]


# --- hit rates through the kernel, on every core ---------------------------------------


@contextmanager
def serving(provider: str) -> Iterator[tuple[str, str | None, Any]]:
    """(model string, base_url, server) for one provider's caching fake."""
    if provider == "openai":
        with FakeOpenAIServer(memgpt_policy, prompt_cache=True) as s:
            yield "openai/fake", s.base_url, s
    elif provider == "anthropic":
        with FakeAnthropicServer(memgpt_policy, prompt_cache=True) as s:
            yield "anthropic/claude-fake", s.base_url, s
    else:
        with FakeBedrockServer(memgpt_policy, prompt_cache=True) as s:
            yield "bedrock/anthropic.claude-sonnet-4-5-20250929-v1:0", s.endpoint_url, s


@pytest.mark.parametrize("provider", ["openai", "anthropic", "bedrock"])
async def test_stable_layout_is_served_from_cache(provider: str, home: Path) -> None:
    from tests.conftest import HashEmbedder

    # enough turns that most prompts are past the providers' 1,024-token caching minimum
    messages = [f"Message {i}: tell me about rivers and lakes, " * 3 for i in range(16)]
    messages[3] = "Please remember that my sister is called Ada."
    rates: dict[str, float] = {}
    for layout in ("stable", "classic"):
        # A server (and cache) per layout: all agents share their prompt's
        # head, so the second agent would start with the first one's prefix.
        with serving(provider) as (model, base_url, _server):
            async with Kernel.open(home / layout, embedders={"test/hash": HashEmbedder()}) as k:
                await k.create_agent(
                    layout, model=model, base_url=base_url, layout=layout, embedder="test/hash"
                )
                for text in messages:
                    turn = await k.send(layout, text)
                    assert turn.stop_reason == "end_turn", turn.error
                usage = k.get_agent(layout)["usage"]
                rates[layout] = usage["cache_hit_rate"]
                stats = k.kernel_stats()
                assert stats["cores"][0]["cache_hit_rate"] == pytest.approx(rates[layout], 0.01)
                agent_id = k.get_agent(layout)["id"]
                assert stats["agents"][agent_id]["cache_hit_rate"] == pytest.approx(
                    rates[layout], 0.01
                )
    assert rates["stable"] > 0.8, rates
    assert rates["classic"] < rates["stable"] - 0.2, rates


def test_usage_totals_persist_and_show(home: Path) -> None:
    from typer.testing import CliRunner

    from llmos.cli.main import app
    from tests.conftest import HashEmbedder

    async def converse(model: str, base_url: str | None) -> tuple[dict, dict]:
        async with Kernel.open(home, embedders={"test/hash": HashEmbedder()}) as k:
            await k.create_agent("u", model=model, base_url=base_url, embedder="test/hash")
            for i in range(3):
                await k.send("u", f"hello number {i}")
            before = k.get_agent("u")["usage"]
        async with Kernel.open(home) as k:  # a new process: totals come from the database
            after = k.get_agent("u")["usage"]
        return before, after

    with serving("anthropic") as (model, base_url, server):
        before, after = asyncio.run(converse(model, base_url))
        assert after == before and after["requests"] == len(server.requests) == 3
    shown = CliRunner().invoke(app, ["--home", str(home), "agent", "show", "u"])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "prompt cache" in text and "over 3 requests" in text and "% hit rate" in text


# --- model settings ----------------------------------------------------------------


def test_model_table_and_profiles() -> None:
    assert bedrock_base_id("us.anthropic.claude-3-5-haiku-20241022-v1:0") == (
        "anthropic.claude-3-5-haiku-20241022-v1:0"
    )
    arn = "arn:aws:bedrock:eu-west-1:1:inference-profile/eu.amazon.nova-pro-v1:0"
    assert bedrock_base_id(arn) == "amazon.nova-pro-v1:0"
    nova = lookup(f"bedrock/{arn}")
    assert nova.context_window == 300_000 and nova.caching and nova.source == "table"
    old = lookup("bedrock/anthropic.claude-3-haiku-20240307-v1:0")
    assert old.native_tools and not old.caching
    assert not lookup("bedrock/meta.llama3-8b-instruct-v1:0").native_tools
    assert lookup("anthropic/claude-opus-4-1").json_schema
    assert lookup("openai/gpt-4o-mini").context_window == 128_000
    assert lookup("bedrock/acme.new-model").source == "default"


def test_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    path.write_text(
        json.dumps(
            {
                "bedrock/us.anthropic.claude-sonnet-4*": {"context_window": 1_000_000},
                "bedrock/us.anthropic.claude-sonnet-4-5-x": {"caching": False},
                "openai/my-vllm-model": {"context_window": 32_768, "native_tools": False},
            }
        )
    )
    wide = lookup("bedrock/us.anthropic.claude-sonnet-4-20250514-v1:0")
    assert wide.context_window == 1_000_000 and wide.source == "override"
    exact = lookup("bedrock/us.anthropic.claude-sonnet-4-5-x")
    assert not exact.caching and exact.context_window == 200_000
    core = make_core("openai/my-vllm-model", base_url="http://127.0.0.1:1/v1")
    assert core.context_window == 32_768
    assert make_core("bedrock/us.anthropic.claude-sonnet-4-5-x").cache is False  # type: ignore[attr-defined]
    time.sleep(0.01)
    path.write_text('{"openai/x": {"context_windw": 5}}')
    with pytest.raises(ValueError, match="unknown settings"):
        lookup("openai/x")


async def test_configured_endpoints_and_reachability(
    monkeypatch: pytest.MonkeyPatch, kernel: Kernel
) -> None:
    with (
        FakeAnthropicServer(memgpt_policy, api_key="sk-ant-test-secret-5678") as anth,
        FakeBedrockServer(memgpt_policy) as bed,
        FakeOpenAIServer(memgpt_policy) as oa,
    ):
        monkeypatch.setenv("ANTHROPIC_BASE_URL", anth.base_url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", bed.endpoint_url)
        monkeypatch.setenv("OPENAI_BASE_URL", oa.base_url)
        await kernel.create_agent(
            "a", model="anthropic/claude-fake", base_url=anth.base_url, embedder="test/hash"
        )
        endpoints = configured(kernel.agent_models())
        models = [e.model for e in endpoints]
        assert models[0] == "anthropic/claude-fake" and endpoints[0].agents == ["a"]
        assert {"openai/*", "anthropic/*", "bedrock/*", "local/gemma-3-270m"} <= set(models)
        reach = await check(endpoints)
        by_model = {e.model: r for e, r in zip(endpoints, reach, strict=True)}
        assert by_model["anthropic/claude-fake"].ok and by_model["anthropic/*"].ok
        assert by_model["bedrock/*"].ok and by_model["openai/*"].ok
        text = json.dumps([e.as_dict(r) for e, r in zip(endpoints, reach, strict=True)])
        for secret in ("sk-ant-test-secret-5678", "sk-test-openai-secret-1234"):
            assert secret not in text
        anth.api_key = "another-key"
        (bad,) = await check([Endpoint("anthropic/claude-fake", anth.base_url)])
        assert bad.ok is False and "credentials were rejected" in bad.detail


async def test_check_never_hangs() -> None:
    # A listener that accepts connections and never answers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        reach = await check(
            [
                Endpoint("openai/x", "http://127.0.0.1:9/v1"),
                Endpoint("openai/y", f"http://127.0.0.1:{port}/v1"),
            ],
            deadline=0.5,
        )
        assert time.monotonic() - t0 < 2
    assert reach[0].ok is False and "connect" in reach[0].detail
    assert reach[1].ok is False and "no answer within 0.5s" in reach[1].detail


def test_models_command(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    from typer.testing import CliRunner

    from llmos.cli.main import app

    with FakeBedrockServer() as bed:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", bed.endpoint_url)
        monkeypatch.delenv("OPENAI_API_KEY")
        monkeypatch.delenv("ANTHROPIC_API_KEY")
        result = CliRunner().invoke(app, ["--home", str(home), "models", "--json"])
        assert result.exit_code == 0, result.output
        rows = {r["model"]: r for r in json.loads(result.stdout)}
        assert rows["bedrock/*"]["reachable"] is True
        assert "openai/*" not in rows
        table = CliRunner().invoke(app, ["--home", str(home), "models", "--no-check"])
        assert table.exit_code == 0 and "bedrock/*" in table.output
