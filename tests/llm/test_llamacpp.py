"""LlamaCppCore on the real Gemma 3 270M: a few short generations, about 5-15 s in all."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from llmos.llm.core import (
    ChatRequest,
    ContextLengthExceeded,
    Core,
    CoreUnavailable,
    Message,
    ToolCall,
    ToolSpec,
)
from llmos.llm.llamacpp import LlamaCppCore
from llmos.llm.toolcalls import parse_call

SEND = ToolSpec(
    name="send_message",
    description="Sends a message to the human user.",
    parameters={
        "type": "object",
        "properties": {"message": {"type": "string", "description": "Message contents."}},
        "required": ["message"],
    },
)
APPEND = ToolSpec(
    name="core_memory_append",
    description="Append to the contents of core memory.",
    parameters={
        "type": "object",
        "properties": {
            "label": {"type": "string", "description": "Section of the memory to edit."},
            "content": {"type": "string", "description": "Content to write to the memory."},
        },
        "required": ["label", "content"],
    },
)
TOOLS = [SEND, APPEND]
SYSTEM = "You are Sam, a friendly companion. You talk to the user with send_message."
FIRST = [
    Message(role="system", content=SYSTEM),
    Message(role="user", content="Hi! My name is Ada. Please greet me."),
]


def assert_matches_schema(arguments: dict[str, Any], spec: ToolSpec) -> None:
    try:
        import jsonschema
    except ImportError:
        jsonschema = None
    if jsonschema is not None:
        jsonschema.validate(arguments, spec.parameters)
        return
    props = spec.parameters["properties"]
    assert set(spec.parameters["required"]) <= set(arguments)
    assert set(arguments) <= set(props)
    for key, value in arguments.items():
        assert props[key]["type"] == "string" and isinstance(value, str), (key, value)


# --- no model needed -------------------------------------------------------------


def test_construction_does_not_load_and_satisfies_the_protocol() -> None:
    core = LlamaCppCore()
    assert isinstance(core, Core)
    assert not core.loaded
    assert (core.capacity, core.native_tools, core.name) == (1, False, "local/gemma-3-270m")


def test_render_prompt_in_gemma_turns() -> None:
    core = LlamaCppCore()
    call = ToolCall(id="call_1", name="send_message", arguments='{"message": "Hello Ada"}')
    prompt = core.render_prompt(
        [
            *FIRST,
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", content='{"status": "OK"}', tool_call_id="call_1"),
        ],
        TOOLS,
    )
    head, rest = prompt.split("\n\n" + SYSTEM + "\n\n", 1)
    assert head.startswith("<start_of_turn>user\nYou can call these functions:\n")
    assert rest == (
        "Hi! My name is Ada. Please greet me.<end_of_turn>\n"
        "<start_of_turn>model\n"
        '{"function": "send_message", "arguments": {"message": "Hello Ada"}}<end_of_turn>\n'
        "<start_of_turn>user\n"
        '[function result: send_message] {"status": "OK"}<end_of_turn>\n'
        "<start_of_turn>model\n"
    )


def test_render_prompt_gives_system_text_its_own_turn_before_an_assistant() -> None:
    core = LlamaCppCore()
    prompt = core.render_prompt(
        [Message(role="system", content="S"), Message(role="assistant", content="A")]
    )
    assert prompt == (
        "<start_of_turn>user\nS<end_of_turn>\n"
        "<start_of_turn>model\nA<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


async def test_missing_model_file_is_core_unavailable(tmp_path: Any) -> None:
    path = str(tmp_path / "nope.gguf")
    core = LlamaCppCore(model_path=path)
    with pytest.raises(CoreUnavailable, match=re.escape(path)):
        await core.chat(ChatRequest(messages=FIRST, tools=TOOLS))


# --- the real model --------------------------------------------------------------


@pytest.fixture(scope="module")
def core() -> Iterator[LlamaCppCore]:
    pytest.importorskip("llama_cpp")
    core = LlamaCppCore(context_window=4096)
    yield core
    asyncio.run(core.aclose())
    assert not core.loaded


@pytest.mark.slow
async def test_corrupt_model_file_is_core_unavailable(tmp_path: Any) -> None:
    pytest.importorskip("llama_cpp")
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(b"GGUF" + b"\x00garbage" * 100)
    core = LlamaCppCore(model_path=str(path))
    with pytest.raises(CoreUnavailable, match=re.escape(str(path))):
        await core.chat(ChatRequest(messages=FIRST, tools=TOOLS))


@pytest.mark.slow
def test_count_tokens_uses_the_model_tokenizer(core: LlamaCppCore) -> None:
    n = core.count_tokens("hello world")
    assert 1 <= n <= 3
    assert core.count_tokens("hello world") == n
    assert core.count_tokens("") == 0
    # Gemma's turn markers are single special tokens.
    assert core.count_tokens("<start_of_turn>") == 1
    assert core.count_tokens("hello world " * 100) > 100


@pytest.mark.slow
async def test_tool_call_then_extended_prompt_reuses_the_prefix(core: LlamaCppCore) -> None:
    first = await core.chat(ChatRequest(messages=FIRST, tools=TOOLS, max_tokens=96))
    assert first.content is None
    assert len(first.tool_calls) == 1
    call = first.tool_calls[0]
    assert call.name in {"send_message", "core_memory_append"}
    arguments = json.loads(call.arguments)
    assert_matches_schema(arguments, SEND if call.name == "send_message" else APPEND)
    assert first.usage.prompt_tokens > 50
    assert first.usage.completion_tokens > 0
    assert first.finish_reason in ("tool_calls", "length")

    second = await core.chat(
        ChatRequest(
            messages=[
                *FIRST,
                Message(role="assistant", tool_calls=[call]),
                Message(role="tool", content='{"status": "OK"}', tool_call_id=call.id),
                Message(role="user", content="Remember that I like tea."),
            ],
            tools=TOOLS,
            max_tokens=96,
        )
    )
    assert second.tool_calls[0].name in {"send_message", "core_memory_append"}
    # The first prompt is a prefix of the second: none of it is evaluated again.
    assert second.usage.cached_prompt_tokens >= first.usage.prompt_tokens
    assert second.usage.cached_prompt_tokens < second.usage.prompt_tokens


@pytest.mark.slow
async def test_tool_choice_none_gives_text(core: LlamaCppCore) -> None:
    resp = await core.chat(
        ChatRequest(
            messages=[Message(role="user", content="Write one sentence about the sea.")],
            tools=TOOLS,
            tool_choice="none",
            max_tokens=16,
        )
    )
    assert resp.tool_calls == []
    assert isinstance(resp.content, str)
    assert "<start_of_turn>" not in resp.content and "<end_of_turn>" not in resp.content
    assert 0 < resp.usage.completion_tokens <= 16
    assert resp.finish_reason in ("stop", "length")


@pytest.mark.slow
async def test_constrained_decoder_matches_llama_cpp_grammar_sampling(core: LlamaCppCore) -> None:
    # The core's own loop checks the grammar on the likeliest tokens first; at
    # temperature 0 it must choose exactly what llama.cpp's full-vocabulary
    # grammar sampler chooses.
    messages = [*FIRST, Message(role="user", content="Also remember that I like tea.")]
    resp = await core.chat(ChatRequest(messages=messages, tools=TOOLS, max_tokens=32))
    with core.slot.lock:
        llm = core.load()
        tokens = core._tokenize_prompt(llm, core._segments(messages, TOOLS))
        ref = llm.create_completion(
            prompt=tokens, max_tokens=32, temperature=0.0, grammar=core.grammar(TOOLS)
        )
    expected = parse_call(ref["choices"][0]["text"], TOOLS)
    got = resp.tool_calls[0]
    assert (got.name, got.arguments) == (expected.name, expected.arguments)
    assert resp.usage.completion_tokens == ref["usage"]["completion_tokens"]


@pytest.mark.slow
async def test_sampling_with_temperature_still_yields_a_call(core: LlamaCppCore) -> None:
    resp = await core.chat(ChatRequest(messages=FIRST, tools=TOOLS, max_tokens=48, temperature=1.0))
    call = resp.tool_calls[0]
    assert call.name in {"send_message", "core_memory_append"}
    assert isinstance(json.loads(call.arguments), dict)


@pytest.mark.slow
async def test_concurrent_requests_are_served_one_at_a_time(core: LlamaCppCore) -> None:
    requests = [
        ChatRequest(messages=[Message(role="user", content=f"Count to {n}.")], max_tokens=4)
        for n in (3, 5)
    ]
    responses = await asyncio.gather(*(core.chat(r) for r in requests))
    assert all(isinstance(r.content, str) for r in responses)
    assert all(r.usage.completion_tokens <= 4 for r in responses)


@pytest.mark.slow
async def test_over_long_prompt_raises_context_length_exceeded(core: LlamaCppCore) -> None:
    long = "the quick brown fox jumps " * 1000
    assert core.count_tokens(long) > 4096
    with pytest.raises(ContextLengthExceeded, match="4096"):
        await core.chat(
            ChatRequest(messages=[Message(role="user", content=long)], tool_choice="none")
        )
    # A prompt that fits but leaves no room for max_tokens is too long as well
    # (the turn markers add a few tokens to the text's own count).
    short = "the quick brown fox jumps " * 100
    n = core.count_tokens(short)
    assert n < 1000
    with pytest.raises(ContextLengthExceeded):
        await core.chat(
            ChatRequest(
                messages=[Message(role="user", content=short)],
                tool_choice="none",
                max_tokens=4096 - n,
            )
        )


@pytest.mark.slow
async def test_tool_choice_none_keeps_the_tools_in_the_prompt(core: LlamaCppCore) -> None:
    """As in OpenAI's API, tool_choice "none" forbids calls but keeps the tools in
    context: the request then shares its cached prefix with tool-calling ones."""
    plain = await core.chat(ChatRequest(messages=FIRST, tool_choice="none", max_tokens=1))
    none = await core.chat(
        ChatRequest(messages=FIRST, tools=TOOLS, tool_choice="none", max_tokens=1)
    )
    assert none.tool_calls == []
    assert none.usage.prompt_tokens > plain.usage.prompt_tokens + 50  # the tool listing
    calling = await core.chat(ChatRequest(messages=FIRST, tools=TOOLS, max_tokens=8))
    # The same prompt: all of it reused but the token that yields fresh logits.
    assert calling.usage.prompt_tokens == none.usage.prompt_tokens
    assert calling.usage.cached_prompt_tokens == calling.usage.prompt_tokens - 1
