"""BedrockCore and the Bedrock embedders through real boto3 against a loopback endpoint.

boto3 reaches `tests/fakes/bedrock_server.py` through
AWS_ENDPOINT_URL_BEDROCK_RUNTIME with dummy credentials, and decodes its
ConverseStream answers from the binary event-stream encoding the fake writes.
botocore's Stubber checks the Converse requests against the service model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmos import Kernel
from llmos.llm.bedrock import BedrockCore
from llmos.llm.core import (
    AuthenticationFailed,
    BadRequest,
    ChatRequest,
    ContextLengthExceeded,
    CoreUnavailable,
    Message,
    RateLimited,
    ToolCall,
    ToolSpec,
)
from llmos.llm.registry import make_core
from llmos.memory.embedders import (
    BedrockEmbedder,
    EmbeddingAuthError,
    make_embedder,
)
from tests.fakes.bedrock_server import (
    AwsError,
    FakeBedrockServer,
    Hang,
    StreamError,
    encode_frame,
    event_frame,
)
from tests.fakes.policies import SUMMARY, memgpt_policy

MODEL = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
KEY_ID = "AKIDLLMOSTEST0001"
SECRET = "llmos-test-secret-access-key-0123456789"

SEND = ToolSpec(
    "send_message",
    "Send a message to the user.",
    {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    # Never look for instance credentials or the user's own AWS files.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("LLMOS_MODELS", str(tmp_path / "no-models.json"))


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBedrockServer]:
    with FakeBedrockServer(memgpt_policy, access_key=KEY_ID) as s:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", s.endpoint_url)
        yield s


@pytest.fixture
async def core(server: FakeBedrockServer) -> AsyncIterator[BedrockCore]:
    c = BedrockCore(MODEL, timeout=10)
    yield c
    await c.aclose()


def history() -> ChatRequest:
    return ChatRequest(
        [
            Message("system", "BASE\n\nCORE"),
            Message("user", "hello"),
            Message(
                "assistant",
                "noting it",
                [
                    ToolCall("call_1", "core_memory_append", '{"label": "human", "content": "x"}'),
                    ToolCall("call_2", "send_message", '{"message": "hi"}'),
                ],
            ),
            Message("tool", '{"status": "OK"}', tool_call_id="call_1", name="core_memory_append"),
            Message("tool", '{"status": "OK"}', tool_call_id="call_2", name="send_message"),
            Message("user", "and now?"),
            Message("user", "[system alert] Memory pressure: 80%"),
        ],
        tools=[SEND],
        system_parts=["BASE", "CORE"],
        volatile_messages=1,
    )


# --- the wire format -------------------------------------------------------------------


def test_event_stream_frames_decode_with_botocore() -> None:
    from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

    frame = event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hé"}})
    buffer = EventStreamBuffer()
    buffer.add_data(frame + encode_frame({":message-type": "event"}, b""))
    first, second = list(buffer)
    assert first.headers[":event-type"] == "contentBlockDelta"
    assert json.loads(first.payload)["delta"]["text"] == "hé"
    assert second.payload == b""
    broken = bytearray(frame)
    broken[-6] ^= 0xFF  # one payload byte: the message CRC must catch it
    buffer = EventStreamBuffer()
    buffer.add_data(bytes(broken))
    with pytest.raises(ChecksumMismatch):
        list(buffer)


ANSWER = {
    "output": {"message": {"role": "assistant", "content": [
        {"text": "ok"},
        {"toolUse": {"toolUseId": "tu1", "name": "send_message", "input": {"message": "hi"}}},
    ]}},
    "stopReason": "tool_use",
    "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 115,
              "cacheReadInputTokens": 90, "cacheWriteInputTokens": 10},
    "metrics": {"latencyMs": 3},
}  # fmt: skip


def _stubbed_client() -> Any:
    import boto3

    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="stub",
        aws_secret_access_key="stub",
    )


async def test_converse_request_matches_the_service_model() -> None:
    """Stubber validates our Converse arguments (system, toolConfig, cachePoint) against
    botocore's Bedrock model, and its response shape against the output model."""
    from botocore.stub import Stubber

    client = _stubbed_client()
    core = BedrockCore(MODEL, client=client)
    kwargs = core.request_kwargs(history())
    assert kwargs["system"] == [
        {"text": "BASE"},
        {"cachePoint": {"type": "default"}},
        {"text": "CORE"},
        {"cachePoint": {"type": "default"}},
    ]
    last = kwargs["messages"][-1]["content"]
    assert [next(iter(b)) for b in last] == [
        "toolResult", "toolResult", "text", "cachePoint", "text",
    ]  # fmt: skip
    assert kwargs["toolConfig"]["toolChoice"] == {"any": {}}
    with Stubber(client) as stub:
        stub.add_response("converse", ANSWER, expected_params=kwargs)
        response = await core.chat(history())
        stub.assert_no_pending_responses()
    assert response.tool_calls[0].arguments == '{"message": "hi"}'
    assert response.usage.prompt_tokens == 110 and response.usage.cached_prompt_tokens == 90
    await core.aclose()


def test_the_stubber_does_reject_a_misnamed_block() -> None:
    from botocore.exceptions import ParamValidationError
    from botocore.stub import Stubber

    client = _stubbed_client()
    kwargs = BedrockCore(MODEL, client=client).request_kwargs(history())
    kwargs["system"].append({"cache_point": {"type": "default"}})
    with Stubber(client) as stub, pytest.raises(ParamValidationError, match="cache_point"):
        stub.add_response("converse", ANSWER)
        client.converse(**kwargs)


# --- over HTTP ------------------------------------------------------------------------


async def test_tool_call_and_usage(core: BedrockCore, server: FakeBedrockServer) -> None:
    response = await core.chat(history())
    assert response.tool_calls[0].name == "send_message"
    assert json.loads(response.tool_calls[0].arguments)["message"] == "echo 8"
    assert response.usage.prompt_tokens == server.usages[-1].total
    op, model_id, body = server.requests[-1]
    assert (op, model_id) == ("converse", MODEL)
    assert body["inferenceConfig"]["maxTokens"] == 512


async def test_cache_reads_are_reported(server: FakeBedrockServer) -> None:
    server.prompt_cache = True
    core = BedrockCore(MODEL)
    req = history()
    req.messages[0] = Message("system", "B" * 6000 + "\n\nCORE")
    req.system_parts = ["B" * 6000, "CORE"]
    await core.chat(req)
    second = await core.chat(req)
    await core.aclose()
    assert second.usage.cached_prompt_tokens == server.usages[1].cache_read > 1024
    assert second.usage.prompt_tokens == server.usages[1].total


async def test_stream_and_chat_stream(core: BedrockCore, server: FakeBedrockServer) -> None:
    server.script({"content": "Hello from the event stream."})
    pieces = [p async for p in core.stream(history())]
    assert len(pieces) > 2 and "".join(pieces) == "Hello from the event stream."
    args = {"message": "split across several toolUse input deltas, please"}
    server.script({"content": "hm", "tool_calls": [{"name": "send_message", "arguments": args}]})
    seen: list[str] = []
    response = await core.chat_stream(history(), seen.append)
    assert seen == ["hm"] and json.loads(response.tool_calls[0].arguments) == args
    assert response.finish_reason == "tool_calls" and response.usage.prompt_tokens > 0
    assert server.requests[-1][0] == "converse-stream"


async def test_exception_frame_mid_stream(core: BedrockCore, server: FakeBedrockServer) -> None:
    server.script(StreamError("throttlingException", "Too many tokens, slow down."))
    with pytest.raises(RateLimited, match="slow down"):
        await core.chat_stream(history())
    server.script(StreamError("modelStreamErrorException", "model crashed"))
    with pytest.raises(CoreUnavailable, match="model crashed"):
        await core.chat_stream(history())


@pytest.mark.parametrize(
    ("error", "kind", "text"),
    [
        (AwsError(429, "ThrottlingException", "Too many requests"), RateLimited, "Too many"),
        (
            AwsError(400, "ValidationException", "Input is too long for requested model."),
            ContextLengthExceeded,
            "too long",
        ),
        (AwsError(403, "AccessDeniedException", "You don't have access to the model."),
         AuthenticationFailed, rf"access denied to model {MODEL} in region us-west-2"),
        (AwsError(429, "ModelNotReadyException", "Model is not ready"), CoreUnavailable, "ready"),
        (AwsError(503, "ServiceUnavailableException", "Unavailable"), CoreUnavailable, "503"),
        (AwsError(500, "InternalServerException", "oops"), CoreUnavailable, "InternalServer"),
        (AwsError(400, "ValidationException", "messages: bad role"), BadRequest, "bad role"),
    ],
)  # fmt: skip
async def test_error_mapping(
    core: BedrockCore, server: FakeBedrockServer, error: AwsError, kind: type, text: str
) -> None:
    server.script(error)
    with pytest.raises(kind, match=text) as info:
        await core.chat(history())
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None  # botocore's error carries the signed request


async def test_wrong_credentials_and_timeouts(server: FakeBedrockServer) -> None:
    server.access_key = "AKIDSOMEONEELSE"
    core = BedrockCore(MODEL, timeout=0.5)
    with pytest.raises(AuthenticationFailed, match="UnrecognizedClient") as info:
        await core.chat(history())
    assert SECRET not in str(info.value)
    server.access_key = KEY_ID
    server.script(Hang(2))
    with pytest.raises(CoreUnavailable, match="did not answer"):
        await core.chat(history())
    await core.aclose()


async def test_missing_region_and_credentials(
    server: FakeBedrockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    core = BedrockCore(MODEL)
    with pytest.raises(AuthenticationFailed, match="no AWS credentials"):
        await core.chat(history())
    await core.aclose()


async def test_model_without_caching_stops_sending_cache_points(server: FakeBedrockServer) -> None:
    server.caching = False
    core = BedrockCore(MODEL)
    assert (await core.chat(history())).tool_calls
    assert (await core.chat(history())).tool_calls
    bodies = server.chat_requests()
    assert len(bodies) == 3  # rejected once, then never sent again
    assert "cachePoint" in json.dumps(bodies[0])
    assert "cachePoint" not in json.dumps(bodies[1:])
    await core.aclose()


async def test_model_without_tool_use_gets_tools_in_the_prompt(server: FakeBedrockServer) -> None:
    answer = '{"function": "send_message", "arguments": {"message": "from text"}}'
    server.script(
        AwsError(400, "ValidationException", "This model doesn't support tool use."),
        {"content": answer},
        {"content": answer},
    )
    core = BedrockCore("acme.unknown-model-v1:0")  # not in the table: tools assumed
    response = await core.chat(history())
    assert response.tool_calls[0].name == "send_message"
    assert json.loads(response.tool_calls[0].arguments)["message"] == "from text"
    table_says_no = BedrockCore("meta.llama3-8b-instruct-v1:0")
    assert not table_says_no.native_tools
    assert (await table_says_no.chat(history())).tool_calls[0].name == "send_message"
    for body in server.chat_requests()[1:]:
        assert "toolConfig" not in body and "send_message" in json.dumps(body["system"])
    await core.aclose()
    await table_says_no.aclose()


def test_registry_and_model_table() -> None:
    core = make_core(f"bedrock/{MODEL}")
    assert isinstance(core, BedrockCore)
    assert core.context_window == 200_000 and core.cache and core.native_tools
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.amazon.nova-micro-v1:0"
    nova = make_core(f"bedrock/{arn}", base_url="http://127.0.0.1:1")
    assert nova.context_window == 128_000
    assert isinstance(nova, BedrockCore) and nova.endpoint_url == "http://127.0.0.1:1"


# --- through the kernel ------------------------------------------------------------


async def test_memgpt_conversation_on_bedrock(kernel: Kernel, server: FakeBedrockServer) -> None:
    await kernel.create_agent(
        "nova", model=f"bedrock/{MODEL}", context_window=4096, embedder="test/hash"
    )
    turn = await kernel.send("nova", "Please remember that my sister is called Ada.")
    assert [c.name for c in turn.function_calls] == ["core_memory_append", "send_message"]
    turn = await kernel.send("nova", "archive: The lighthouse on Vlieland is painted red.")
    assert turn.function_calls[0].ok
    turn = await kernel.send("nova", "search archive for lighthouse")
    assert "painted red" in turn.reply
    flushes = 0
    for i in range(24):
        turn = await kernel.send("nova", f"Turn {i}: " + "a long sentence about rivers. " * 18)
        assert turn.stop_reason == "end_turn", turn.error
        flushes += turn.flushes
    assert flushes >= 1 and SUMMARY in kernel.get_agent("nova")["summary"]
    turn = await kernel.send("nova", "What is my sister called?")
    assert turn.reply == "Your sister is called Ada."


async def test_throttling_then_success_through_the_kernel(
    kernel: Kernel, server: FakeBedrockServer
) -> None:
    await kernel.create_agent("nova", model=f"bedrock/{MODEL}", embedder="test/hash")
    kernel.queue(kernel.core(f"bedrock/{MODEL}")).max_backoff = 0.05
    server.script(AwsError(429, "ThrottlingException", "Rate exceeded"))
    turn = await kernel.send("nova", "hi")
    assert turn.stop_reason == "end_turn" and turn.reply == "echo 2"
    assert kernel.kernel_stats()["cores"][0]["retried"] == 1
    assert len(server.chat_requests()) == 2


# --- embedders ------------------------------------------------------------------------


def test_titan_and_cohere_embedders(server: FakeBedrockServer) -> None:
    titan = make_embedder("bedrock/amazon.titan-embed-text-v2:0")
    assert isinstance(titan, BedrockEmbedder) and titan.dim == 1024
    vectors = titan.embed(["red lighthouse", "a red lighthouse on the coast", ""])
    assert vectors.shape == (3, 1024) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) > 0.5
    sent = [b for op, _, b in server.requests if op == "invoke"]  # from 4 threads: any order
    assert {"inputText": "red lighthouse", "dimensions": 1024, "normalize": True} in sent
    assert {"inputText": " ", "dimensions": 1024, "normalize": True} in sent  # "" is rejected

    cohere = BedrockEmbedder("cohere.embed-multilingual-v3")
    server.requests.clear()
    out = cohere.embed([f"text number {i}" for i in range(100)])
    assert out.shape == (100, 1024)
    batches = [len(b["texts"]) for _, _, b in server.requests]
    assert batches == [96, 4] and server.requests[0][2]["input_type"] == "search_document"


def test_embedder_errors_never_show_the_secret(server: FakeBedrockServer) -> None:
    server.script(AwsError(403, "AccessDeniedException", "no access to this model"))
    with pytest.raises(EmbeddingAuthError, match="access denied") as info:
        BedrockEmbedder("amazon.titan-embed-text-v2:0").embed(["x"])
    assert SECRET not in str(info.value)
    with pytest.raises(ValueError, match="not a known embedding model"):
        BedrockEmbedder("anthropic.claude-3-haiku")


async def test_set_embedder_reembeds_archival(kernel: Kernel, server: FakeBedrockServer) -> None:
    await kernel.create_agent(
        "ann", model=f"bedrock/{MODEL}", embedder="test/hash", context_window=8192
    )
    texts = [f"note {i}: the weather on day {i} was mild" for i in range(69)]
    texts.append("the lighthouse keeper's cat is named Pixel")
    await kernel.insert_archival("ann", texts)
    seen: list[tuple[int, int]] = []
    result = await kernel.set_embedder(
        "ann",
        "bedrock/amazon.titan-embed-text-v2:0",
        progress=lambda done, total: seen.append((done, total)),
        batch_size=32,
    )
    assert result == {
        "agent": "ann",
        "embedder": "bedrock/amazon.titan-embed-text-v2:0",
        "previous": "test/hash",
        "dim": 1024,
        "passages": 70,
    }
    assert seen == [(0, 70), (32, 70), (64, 70), (70, 70)]
    agent_id = kernel.get_agent("ann")["id"]
    with kernel.db.connect() as conn:
        old = conn.exec_driver_sql(
            "SELECT count(*) FROM passages_vec_64 WHERE agent_id = ?", (agent_id,)
        ).scalar_one()
        new = conn.exec_driver_sql(
            "SELECT count(*) FROM passages_vec_1024 WHERE agent_id = ?", (agent_id,)
        ).scalar_one()
    assert (old, new) == (0, 70)
    found, _ = await kernel.search_archival("ann", "what is the cat called")
    assert found[0].text.endswith("named Pixel")
    assert kernel.get_agent("ann")["embedder"] == "bedrock/amazon.titan-embed-text-v2:0"


async def test_failed_reembedding_keeps_the_old_embedder(
    kernel: Kernel, server: FakeBedrockServer
) -> None:
    await kernel.create_agent("bob", model=f"bedrock/{MODEL}", embedder="test/hash")
    await kernel.insert_archival("bob", ["one passage", "another passage"])
    server.script(AwsError(400, "ValidationException", "bad input"))
    with pytest.raises(Exception, match="bad input"):
        await kernel.set_embedder("bob", "bedrock/cohere.embed-english-v3")
    assert kernel.get_agent("bob")["embedder"] == "test/hash"
    found, _ = await kernel.search_archival("bob", "another passage")
    assert found[0].text == "another passage"
    with pytest.raises(ValueError, match="unknown embedder"):
        await kernel.set_embedder("bob", "nope/x")


def test_cli_set_embedder_with_progress(
    server: FakeBedrockServer, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from llmos.cli.main import app

    async def setup() -> None:
        async with Kernel.open(home) as k:
            await k.create_agent(
                "cli", model=f"bedrock/{MODEL}", embedder="bedrock/amazon.titan-embed-text-v2:0"
            )
            await k.insert_archival("cli", [f"passage {i}" for i in range(5)])

    asyncio.run(setup())
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["--home", str(home), "agent", "set-embedder", "cli", "bedrock/cohere.embed-english-v3"],
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps at the console width
    assert "5 passages re-embedded" in text and "re-embedding archival memory" in text
    assert "5/5" in text  # the progress bar's last state
    shown = runner.invoke(app, ["--home", str(home), "agent", "show", "cli", "--json"])
    assert json.loads(shown.stdout)["embedder"] == "bedrock/cohere.embed-english-v3"
    bad = runner.invoke(app, ["--home", str(home), "agent", "set-embedder", "cli", "bogus"])
    assert bad.exit_code == 1 and "unknown embedder" in bad.output
