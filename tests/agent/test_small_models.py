"""Small and base models: the transcript protocol and the memory modes, with scripted cores.

A scripted core is made "small" through the user's model overrides (the same
models.json mechanism a user would use), so these tests check the loop's
logic exactly: what the request holds, how a text reply becomes a turn, what
is paged in. The real model's side is in tests/e2e/test_small_model_protocol.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.errors import InvalidRequest
from llmos.llm.models import lookup
from llmos.llm.replay import ScriptedCore, call, say
from llmos.memory.transcript import (
    EXTRACT_HEAD,
    FALLBACK_REPLY,
    MEMORY_GRAMMAR,
    MEMORY_STOP,
    REPLY_GRAMMAR,
    STOP,
    MemoryLine,
    ban_first,
    clean_reply,
    parse_fact,
    parse_reply,
)

SMALL = "scripted/small"  # a base model: no chat template
SMALL_CHAT = "scripted/small-chat"  # a small model with a chat template


@pytest.fixture
def overrides(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = home / "models.json"
    path.write_text(
        json.dumps(
            {
                SMALL: {"chat_template": False, "size_class": "small"},
                SMALL_CHAT: {"size_class": "small"},
            }
        )
    )
    monkeypatch.setenv("LLMOS_MODELS", str(path))
    return path


def extracting(req: ChatRequest) -> bool:
    return (req.prompt or "").startswith(EXTRACT_HEAD)


def echo_policy(req: ChatRequest) -> ChatResponse:
    """Answers the newest user line of a transcript; summaries are plain text too."""
    if req.prompt is None:
        return say("Summary: the user chatted.")
    if extracting(req):
        return say(" none")
    last = re.findall(r"^User: (.*)$", req.prompt, re.M)[-1]
    return say(f" You said: {last[:40]}\nUser: and this must not appear")


async def small_agent(
    kernel: Kernel,
    policy=echo_policy,
    *,
    model: str = SMALL,
    window: int = 2048,
    settings: dict | None = None,
) -> ScriptedCore:
    core = ScriptedCore(policy, name=model, context_window=window)
    kernel.add_core(core, model=model)
    await kernel.create_agent(
        "tiny", model=model, context_window=window, embedder="test/hash", settings=settings
    )
    return core


def test_profiles() -> None:
    gemma = lookup("local/gemma-3-270m")
    assert (gemma.chat_template, gemma.size_class) == (False, "small")
    assert (gemma.reply_protocol, gemma.default_memory_mode) == ("transcript", "auto")
    capable = lookup("openai/gpt-4o")
    assert (capable.reply_protocol, capable.default_memory_mode) == ("functions", "self")
    assert lookup("scripted/policy").reply_protocol == "functions"


def test_profile_overrides(overrides: Path) -> None:
    assert lookup(SMALL).reply_protocol == "transcript"
    assert lookup(SMALL_CHAT).chat_template and lookup(SMALL_CHAT).reply_protocol == "transcript"
    overrides.write_text(json.dumps({"x/y": {"size_class": "tiny"}}))
    with pytest.raises(ValueError, match="size_class"):
        lookup("x/y")


def test_clean_reply() -> None:
    names = {"send_message", "core_memory_append"}
    assert clean_reply(" It is Paris. ", names) == "It is Paris."
    assert clean_reply("Assistant: Hi there", names) == "Hi there"
    for bad in ("", "  ", "send_message", '"send_message"', '{"function": "x"}', "[1, 2]"):
        assert clean_reply(bad, names) == FALLBACK_REPLY
    assert clean_reply('core_memory_append(label="human")', names) == FALLBACK_REPLY
    assert clean_reply("Paris (France) is lovely.", names) == "Paris (France) is lovely."


async def test_a_base_model_continues_a_transcript(kernel: Kernel, overrides: Path) -> None:
    core = await small_agent(kernel)
    turn = await kernel.send("tiny", "What is the capital of France?")

    req = core.requests[-1]
    assert req.prompt is not None and req.prompt.endswith("\nAssistant:")
    assert "User: What is the capital of France?" in req.prompt
    assert req.tools == [] and req.tool_choice == "none" and req.stop == STOP
    assert req.grammar and "send_message" not in req.prompt
    # A turn like any other: the reply went out through send_message.
    assert turn.stop_reason == "end_turn" and turn.steps == 1
    assert turn.reply == "You said: What is the capital of France?"
    assert [c.name for c in turn.function_calls] == ["send_message"]
    assert [m.role for m in turn.messages] == ["user", "assistant", "tool"]
    # The next step sees the exchange as transcript lines.
    await kernel.send("tiny", "And of Spain?")
    prompt = core.requests[-1].prompt or ""
    assert "User: What is the capital of France?\nAssistant: You said: What is the capital" in (
        prompt
    )
    assert prompt.count("this must not appear") == 0


async def test_a_small_chat_model_gets_chat_messages(kernel: Kernel, overrides: Path) -> None:
    def policy(req: ChatRequest) -> ChatResponse:
        assert req.prompt is None and req.tools == []
        assert req.messages[0].role == "system" and req.messages[-1].role == "user"
        return say("Hello!")

    await small_agent(kernel, policy, model=SMALL_CHAT)
    turn = await kernel.send("tiny", "Hi")
    assert turn.reply == "Hello!"


@pytest.mark.parametrize("answer", ["", "send_message", '{"function": "send_message"}'])
async def test_a_reply_is_never_empty_a_name_or_json(
    kernel: Kernel, overrides: Path, answer: str
) -> None:
    await small_agent(kernel, lambda req: say(answer))
    turn = await kernel.send("tiny", "Hello")
    assert turn.reply == FALLBACK_REPLY and turn.stop_reason == "end_turn"


def filler(i: int) -> str:
    return f"Filler {i}: the weather was mild, and I walked around the old harbour once more."


async def fill(kernel: Kernel, turns: int) -> int:
    flushes = 0
    for i in range(turns):
        turn = await kernel.send("tiny", filler(i))
        assert turn.stop_reason == "end_turn", turn.error
        flushes += turn.flushes
    return flushes


async def test_auto_mode_pages_an_evicted_fact_back_in(kernel: Kernel, overrides: Path) -> None:
    core = await small_agent(kernel)
    assert kernel.get_agent("tiny")["settings"]["memory_mode"] is None  # the profile's: auto
    await kernel.send("tiny", "Hello! My name is Ana and I love hiking.")
    assert await fill(kernel, 40) >= 1
    image = kernel.image("tiny")
    assert not any("Ana" in (m.content or "") for m in image.window)

    await kernel.send("tiny", "What is my name?")
    prompt = core.requests[-1].prompt or ""
    remembered = '(The assistant remembers: earlier, the user said "Hello! My name is Ana'
    assert remembered in prompt
    # Paged memory is volatile: just before the question, after everything stable.
    assert prompt.index(remembered) > prompt.index("Filler 39")
    assert prompt.rstrip().endswith("User: What is my name?\nAssistant:")
    for req in core.requests:
        assert core.prompt_tokens(req) + req.max_tokens <= 2048
    # Flushes asked the small model for no summary: what left is in recall.
    assert all(req.prompt is not None for req in core.requests)
    assert kernel.get_agent("tiny")["summary"] == ""


async def test_self_mode_pages_nothing(kernel: Kernel, overrides: Path) -> None:
    core = await small_agent(kernel, settings={"memory_mode": "self"})
    await kernel.send("tiny", "Hello! My name is Ana.")
    await fill(kernel, 40)
    await kernel.send("tiny", "What is my name?")
    assert "remembers" not in (core.requests[-1].prompt or "")


def capable_policy(req: ChatRequest) -> ChatResponse:
    if req.tool_choice == "none":
        return say("Summary: the user chatted.")
    return call("send_message", message="ok")


@pytest.mark.parametrize("mode", ["auto", "hybrid"])
async def test_paging_for_a_function_calling_model(kernel: Kernel, mode: str) -> None:
    core = await small_agent(
        kernel, capable_policy, model="scripted/capable", settings={"memory_mode": mode}
    )
    await kernel.send("tiny", "Hello! My name is Ana.")
    await fill(kernel, 40)
    await kernel.send("tiny", "What is my name?")
    req = core.requests[-1]
    last = req.messages[-1].content or ""
    assert req.prompt is None and last.startswith("[system alert] Memory paged in")
    assert "My name is Ana" in last and req.volatile_messages >= 1
    names = {t.name for t in req.tools}
    assert "send_message" in names
    assert ("core_memory_append" in names) == (mode == "hybrid")


async def test_memory_mode_is_validated(kernel: Kernel) -> None:
    kernel.add_core(ScriptedCore(capable_policy), model="scripted/policy")
    with pytest.raises(InvalidRequest, match="memory_mode"):
        await kernel.create_agent(
            "bad", model="scripted/policy", embedder="test/hash", settings={"memory_mode": "x"}
        )
    await kernel.create_agent(
        "ok", model="scripted/policy", embedder="test/hash", settings={"memory_mode": "hybrid"}
    )
    assert kernel.get_agent("ok")["settings"]["memory_mode"] == "hybrid"


async def test_context_shows_the_transcript_of_a_small_model(
    kernel: Kernel, overrides: Path
) -> None:
    await small_agent(kernel)
    await kernel.send("tiny", "Hello there")
    window = kernel.context("tiny")
    assert window.request.prompt is not None and window.sections["tools"] == 0
    assert "User: Hello there" in window.request.prompt


def test_content_words() -> None:
    from llmos.agent.paging import content_words

    assert content_words("What is my name?") == ["name"]
    assert content_words("Where do I live? I LIVE where?") == ["live"]
    assert content_words("What is it?") == []


# --- memory lines, fact extraction, the repetition guard ----------------------------


def test_parse_reply() -> None:
    names = {"send_message"}
    text = "Nice to meet you!\nremember: The user's name is Ana.\nNote:  Ana hikes \nUser: hi"
    reply, lines = parse_reply(text, names)
    assert reply == "Nice to meet you!"
    assert lines == [
        MemoryLine("core", "The user's name is Ana."),
        MemoryLine("archival", "Ana hikes"),
    ]
    # Other lines are dropped; empty memory lines too; at most two are kept.
    text = "Hi.\nsomething else\nremember:\nremember: a\nremember: a\nnote: b\nnote: c"
    assert parse_reply(text, names) == (
        "Hi.",
        [MemoryLine("core", "a"), MemoryLine("archival", "b")],
    )
    # A memory line is never the reply.
    assert parse_reply("remember: x", names) == (FALLBACK_REPLY, [MemoryLine("core", "x")])
    assert parse_reply("send_message\nremember: x", names)[0] == FALLBACK_REPLY


def test_ban_first() -> None:
    assert "first ::= [^I \\t" in ban_first(REPLY_GRAMMAR, "I like it")
    assert ban_first(MEMORY_GRAMMAR, "Hi").count("[^H ") == 1
    assert ban_first(REPLY_GRAMMAR, "]x") == REPLY_GRAMMAR  # not a letter: unchanged


def test_parse_fact() -> None:
    assert parse_fact(" The user's name is Ana.") == "The user's name is Ana."
    for nothing in (" none", "", "The user", "Ana likes tea."):
        assert parse_fact(nothing) is None


def human(kernel: Kernel) -> str:
    return kernel.image("tiny").memory.blocks["human"].value


def passages(kernel: Kernel) -> list[str]:
    return [p.text for p in kernel.list_archival("tiny")[0]]


def memory_policy(answer: str):
    def policy(req: ChatRequest) -> ChatResponse:
        if extracting(req):
            return say(" none")
        return say(answer)

    return policy


@pytest.mark.parametrize("mode", ["self", "hybrid"])
async def test_memory_lines_edit_core_and_archival_memory(
    kernel: Kernel, overrides: Path, mode: str
) -> None:
    answer = (
        " Nice to meet you, Ana!\nremember: The user's name is Ana.\nnote: Ana hikes on Sundays."
    )
    core = await small_agent(kernel, memory_policy(answer), settings={"memory_mode": mode})
    turn = await kernel.send("tiny", "Hi! I'm Ana and I hike on Sundays.")
    req = [r for r in core.requests if not extracting(r)][-1]
    assert req.grammar == MEMORY_GRAMMAR and req.stop == MEMORY_STOP
    assert "\nremember: The user's name is Tom." in (req.prompt or "")  # the one example
    assert turn.reply == "Nice to meet you, Ana!" and turn.stop_reason == "end_turn"
    assert [c.name for c in turn.function_calls] == [
        "send_message",
        "core_memory_replace",  # the block's default text goes
        "archival_memory_insert",
    ]
    assert all(c.ok for c in turn.function_calls), turn.function_calls
    assert human(kernel) == "The user's name is Ana."
    assert passages(kernel) == ["Ana hikes on Sundays."]
    # Memory lines are not replayed into later transcripts (only the examples show one).
    await kernel.send("tiny", "Hello again")
    prompt = core.requests[-1].prompt or ""
    assert prompt.count("remember:") == 1 and "note:" not in prompt
    assert "About the user: The user's name is Ana." in prompt
    # The same fact again is not appended twice.
    assert human(kernel) == "The user's name is Ana."


async def test_memory_lines_append_then_overflow_to_archival(
    kernel: Kernel, overrides: Path
) -> None:
    from llmos.agent.paging import CORE_FACT_CHARS

    facts = iter(f"The user owns boat number {i} " + "x" * 60 for i in range(40))

    def policy(req: ChatRequest) -> ChatResponse:
        return say(f" Noted {len(req.prompt or '')}.\nremember: {next(facts)}")

    await small_agent(kernel, policy, settings={"memory_mode": "self"})
    for i in range(12):
        turn = await kernel.send("tiny", f"Boat {i}")
        assert all(c.ok for c in turn.function_calls)
    block = human(kernel)
    assert block.startswith("The user owns boat number 0") and "boat number 1 " in block
    assert len(block) <= CORE_FACT_CHARS
    stored = len(block.split("\n")) + len(passages(kernel))
    assert stored == 12 and passages(kernel)  # none lost: the rest went to archival


async def test_auto_mode_has_no_memory_lines(kernel: Kernel, overrides: Path) -> None:
    answer = " Hi!\nremember: The user's name is Ana."
    core = await small_agent(kernel, memory_policy(answer), settings={"extract_facts": False})
    turn = await kernel.send("tiny", "Hi! I'm Ana.")
    req = core.requests[-1]
    assert req.grammar == REPLY_GRAMMAR and req.stop == STOP
    assert "remember:" not in (req.prompt or "")
    # A core that ignores the grammar: the line is not applied in auto.
    assert turn.reply == "Hi!" and [c.name for c in turn.function_calls] == ["send_message"]
    assert len(core.requests) == 1  # and no extraction step


async def test_extraction_puts_a_stated_fact_in_core_memory(
    kernel: Kernel, overrides: Path
) -> None:
    def policy(req: ChatRequest) -> ChatResponse:
        if extracting(req):
            assert req.grammar and req.stop == STOP and req.max_tokens <= 48
            said = re.findall(r"^Said: (.*)$", req.prompt or "", re.M)[-1]
            return say(" The user's favorite color is teal." if "teal" in said else " none")
        return echo_policy(req)

    core = await small_agent(kernel, policy)  # auto: the profile's default
    turn = await kernel.send("tiny", "My favorite color is teal.")
    assert [c.name for c in turn.function_calls] == ["send_message", "core_memory_replace"]
    assert human(kernel) == "The user's favorite color is teal."
    assert turn.usage.prompt_tokens == sum(core.prompt_tokens(r) for r in core.requests)
    # Questions and long messages are no candidates: no extraction step runs.
    n = len(core.requests)
    await kernel.send("tiny", "What is my favorite color?")
    # The fact is paged in next to a question that shares a word with it.
    assert (core.requests[-1].prompt or "").endswith(
        "(The assistant remembers: The user's favorite color is teal.)\n"
        "User: What is my favorite color?\nAssistant:"
    )
    await kernel.send("tiny", "I walked " + "far and long " * 30)
    assert len(core.requests) == n + 2 and not any(extracting(r) for r in core.requests[n:])
    # A statement that holds nothing: a step runs, nothing is written.
    turn = await kernel.send("tiny", "I think so.")
    assert extracting(core.requests[-2]) and [c.name for c in turn.function_calls] == [
        "send_message"
    ]
    assert human(kernel) == "The user's favorite color is teal."


async def test_extraction_can_be_turned_off(kernel: Kernel, overrides: Path) -> None:
    core = await small_agent(kernel, settings={"extract_facts": False})
    await kernel.send("tiny", "My favorite color is teal.")
    assert not any(extracting(r) for r in core.requests)


async def test_a_repeated_reply_is_decoded_again(kernel: Kernel, overrides: Path) -> None:
    def policy(req: ChatRequest) -> ChatResponse:
        if extracting(req):
            return say(" none")
        if "[^I " in (req.grammar or ""):
            return say(f" Fresh at {req.temperature}.")
        return say(" I like that!")

    core = await small_agent(kernel, policy)
    assert (await kernel.send("tiny", "Tell me something.")).reply == "I like that!"
    n = len(core.requests)
    turn = await kernel.send("tiny", "Tell me more.")
    assert turn.reply == "Fresh at 0.0."
    again = core.requests[n + 1]
    assert again.temperature == 0.0 and again.grammar == ban_first(REPLY_GRAMMAR, "I")
    assert len(core.requests) == n + 2
    assert turn.usage.prompt_tokens == sum(core.prompt_tokens(r) for r in core.requests[n:])


async def test_the_repetition_guard_is_bounded(kernel: Kernel, overrides: Path) -> None:
    core = await small_agent(kernel, memory_policy(" I like that!"))
    await kernel.send("tiny", "Tell me something.")
    n = len(core.requests)
    turn = await kernel.send("tiny", "Tell me more.")
    assert [r.temperature for r in core.requests[n:]] == [0.0, 0.0, 0.8]
    assert turn.reply == "I like that!" and turn.stop_reason == "end_turn" and turn.steps == 1
    # Near-identical counts too; a different reply does not.
    from llmos.agent.shape import repeats

    assert repeats("I like that.", ["Hello", "i like THAT!"])
    assert repeats("The sky is blue today", ["The sky is blue, today."])
    assert not repeats("The sea is green.", ["The sky is blue."])
