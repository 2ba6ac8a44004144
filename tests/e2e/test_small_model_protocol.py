"""The transcript protocol on the real embedded model (Gemma 3 270M, a base model).

What a 270M model says is not tested word for word; what is tested is the
protocol: every reply is one non-empty line of text, never a function name or
JSON, the model never writes the user's next line, and the turn is stored as
any other (a send_message call and its result). With memory lines on (memory
modes self and hybrid), every line after the reply is a memory line, and the
memory calls made from them (and from fact extraction) succeed and land in
the agent's memory.
"""

from __future__ import annotations

import json

import pytest

from llmos import ChatRequest, Kernel, Message
from llmos.agent.functions import BUILTINS
from llmos.agent.loop import Turn
from llmos.llm.registry import make_core
from llmos.memory.transcript import MEMORY_GRAMMAR, MEMORY_STOP, REPLY_GRAMMAR, STOP

pytestmark = pytest.mark.slow

EVERYDAY = [
    "Hello! My name is Ana and I love hiking.",
    "What is the capital of France?",
    "Tell me a joke about cats.",
    "What is 2 + 2?",
    "What is my name?",
]


def well_formed(reply: str) -> None:
    assert reply.strip() == reply and reply
    assert "\n" not in reply and "User:" not in reply
    assert reply not in BUILTINS and not reply.startswith(("{", "["))
    with pytest.raises(ValueError):
        json.loads(reply)


MEMORY_FUNCTIONS = {"core_memory_append", "core_memory_replace", "archival_memory_insert"}
STATEMENTS = [
    "Hi! My name is Ana and I love hiking.",
    "My favorite color is teal.",
    "I live in Lisbon.",
    "What is my name?",
]


def memory_applied(kernel: Kernel, name: str, turn: Turn) -> None:
    """The turn's memory calls are memory functions that succeeded, and their text is stored."""
    assert turn.function_calls[0].name == "send_message"
    image = kernel.image(name)
    for call in turn.function_calls[1:]:
        assert call.name in MEMORY_FUNCTIONS and call.ok, call
        args = json.loads(call.arguments)
        text = args.get("content") or args.get("new_content")
        assert text and "\n" not in text
        if call.name == "archival_memory_insert":
            assert text in [p.text for p in kernel.list_archival(name)[0]]
        else:
            assert text in image.memory.blocks["human"].value


@pytest.mark.parametrize("mode", ["hybrid", "auto"])
async def test_memory_lines_and_extraction_on_the_real_model(kernel: Kernel, mode: str) -> None:
    await kernel.create_agent("gemma", embedder="test/hash", settings={"memory_mode": mode})
    for text in STATEMENTS:
        turn = await kernel.send("gemma", text)
        assert turn.stop_reason == "end_turn" and turn.steps == 1, turn.error
        well_formed(turn.reply)
        memory_applied(kernel, "gemma", turn)


async def test_the_memory_grammar_holds_on_the_raw_core() -> None:
    core = make_core("local/gemma-3-270m", context_window=2048)
    try:
        prompt = (
            "User: Hi! I'm Tom.\nAssistant: Hello Tom!\nremember: The user's name is Tom.\n"
            "User: What color is the sky?\nAssistant: Blue.\n"
            "User: I'm Eva and my cat is called Milo.\nAssistant:"
        )
        request = ChatRequest(
            [Message("user", "x")],
            max_tokens=64,
            tool_choice="none",
            prompt=prompt,
            stop=list(MEMORY_STOP),
            grammar=MEMORY_GRAMMAR,
        )
        text = (await core.chat(request)).content or ""
        first, *rest = text.split("\n")
        assert first.strip() and "User:" not in text
        for line in rest:
            assert line == "" or line.startswith(("remember: ", "note: ")), text
    finally:
        await core.aclose()


async def test_everyday_messages_get_text_replies(kernel: Kernel) -> None:
    await kernel.create_agent("gemma", embedder="test/hash")
    for text in EVERYDAY:
        turn = await kernel.send("gemma", text)
        assert turn.stop_reason == "end_turn", turn.error
        well_formed(turn.reply)
        # The reply, then any facts extracted from a statement (auto, the default).
        memory_applied(kernel, "gemma", turn)
        assert json.loads(turn.function_calls[0].arguments) == {"message": turn.reply}
        if text.endswith("?"):  # questions are not candidates for extraction
            assert len(turn.function_calls) == 1
    roles = [m.role for m in reversed(kernel.messages("gemma"))]
    assert roles[:3] == ["user", "assistant", "tool"]


async def test_stop_strings_and_grammar_hold_on_the_raw_core() -> None:
    core = make_core("local/gemma-3-270m", context_window=2048)
    try:
        # A transcript that invites the model to go on writing both sides.
        prompt = "User: Hi\nAssistant: Hello!\nUser: How are you?\nAssistant: Fine.\n" * 3
        request = ChatRequest(
            [Message("user", "x")],
            max_tokens=48,
            tool_choice="none",
            prompt=prompt + "User: Count from one to five.\nAssistant:",
            stop=list(STOP),
            grammar=REPLY_GRAMMAR,
        )
        response = await core.chat(request)
        text = response.content or ""
        assert text and "\n" not in text and "User:" not in text
        assert response.usage.completion_tokens <= 48
        # Without a stop string the same request may run on: the stop is what holds.
        request.stop, request.grammar = [], None
        free = await core.chat(request)
        assert free.usage.completion_tokens >= response.usage.completion_tokens
    finally:
        await core.aclose()
