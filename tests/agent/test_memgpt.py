"""End-to-end MemGPT semantics with a scripted core playing a deterministic agent.

The policy reads its prompt the way a model would: it finds facts in core
memory (the system message) or in memory-edit events, and acts by calling
functions. So each test proves the kernel put the right things in the window.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmos import ChatRequest, ChatResponse, Kernel, Message
from llmos.llm.replay import ScriptedCore, call, raw_call, say
from tests.conftest import HashEmbedder, both_engines

engine = both_engines()

FACT = re.compile(r"Favorite color: (\w+)")


def prompt_text(req: ChatRequest) -> str:
    return "\n".join(m.text_for_count() for m in req.messages)


def last_event(req: ChatRequest) -> Message:
    """The newest message that is not a volatile system alert."""
    for m in reversed(req.messages):
        if not (m.content or "").startswith("[system alert]"):
            return m
    raise AssertionError("no messages")


def memgpt_policy(req: ChatRequest) -> ChatResponse:
    """A small MemGPT agent: remembers colours, answers from memory, chats otherwise."""
    if req.tool_choice == "none":  # a summary request
        return say("Summary: the user chatted about many topics. " + "x" * 40)
    last = last_event(req)
    if last.role == "tool":
        result = json.loads(last.content or "{}")
        if last.name == "send_message":
            return call("send_message", message="(unexpected heartbeat)")
        return call("send_message", message=f"Done: {result['status']}")
    text = last.content or ""
    if m := re.search(r"my favorite color is (\w+)", text, re.I):
        return call(
            "core_memory_append",
            thought="The user told me a fact worth keeping.",
            label="human",
            content=f"Favorite color: {m.group(1)}",
            request_heartbeat=True,
        )
    if "what is my favorite color" in text.lower():
        found = FACT.findall(prompt_text(req))
        answer = found[-1] if found else "unknown"
        return call("send_message", message=f"Your favorite color is {answer}.")
    return call("send_message", message=f"Interesting! Tell me more about '{text[:60]}'.")


def filler(i: int) -> str:
    return (
        f"Message number {i}: today I went for a walk by the river, saw some birds, "
        f"and thought about topic {i * 7 % 13} for a while before heading home."
    )


async def make_agent(kernel: Kernel, core: ScriptedCore, window: int = 2048) -> None:
    kernel.add_core(core, model="scripted/memgpt")
    await kernel.create_agent(
        "ann", model="scripted/memgpt", context_window=window, embedder="test/hash"
    )


async def test_agents_share_their_system_prompt_up_to_their_name(kernel: Kernel) -> None:
    """The name comes last in the base prompt, so every agent's prompt starts with
    the same text: one cached prefix serves all agents on a core."""
    kernel.add_core(ScriptedCore(memgpt_policy), model="scripted/memgpt")
    for name in ("ann", "bo"):
        await kernel.create_agent(name, model="scripted/memgpt", embedder="test/hash")
    ann, bo = (kernel.context(n).request.messages[0].content or "" for n in ("ann", "bo"))
    assert "Your name is ann." in ann and "Your name is bo." in bo
    shared = next(i for i, (a, b) in enumerate(zip(ann, bo, strict=False)) if a != b)
    assert shared == ann.index("Your name is ann.") + len("Your name is ")


async def test_core_memory_fact_survives_50_turns_and_restart(kernel: Kernel, home: Path) -> None:
    core = ScriptedCore(memgpt_policy, context_window=4096)
    await make_agent(kernel, core)
    turn = await kernel.send("ann", "Hi! My favorite color is teal, please remember.")
    assert [c.name for c in turn.function_calls] == ["core_memory_append", "send_message"]
    assert turn.stop_reason == "end_turn" and turn.steps == 2

    flushes = 0
    for i in range(50):
        t = await kernel.send("ann", filler(i))
        assert t.stop_reason == "end_turn"
        flushes += t.flushes
    # The 2,048-token window forced evictions: the edit event is gone from the
    # window, so the answer must come from core memory re-rendered at compaction.
    assert flushes >= 1
    image = kernel.image("ann")
    assert not any("Favorite color" in (m.content or "") for m in image.window)
    turn = await kernel.send("ann", "What is my favorite color?")
    assert turn.reply == "Your favorite color is teal."
    await kernel.close()

    restarted = Kernel.open(home, embedders={"test/hash": HashEmbedder()})
    restarted.add_core(ScriptedCore(memgpt_policy, context_window=4096), model="scripted/memgpt")
    turn = await restarted.send("ann", "What is my favorite color?")
    assert turn.reply == "Your favorite color is teal."
    agent = restarted.get_agent("ann")
    assert "Favorite color: teal" in agent["blocks"][1]["value"]
    assert agent["summary"].startswith("Summary:")
    assert agent["recall_count"] > 150  # nothing was deleted, only evicted
    await restarted.close()


async def test_long_conversation_never_overflows_a_2048_window(kernel: Kernel) -> None:
    core = ScriptedCore(memgpt_policy, context_window=2048)
    await make_agent(kernel, core, window=2048)
    total_flushes = 0
    for i in range(120):
        turn = await kernel.send("ann", filler(i) + " " + "More words follow here. " * (i % 5))
        assert turn.stop_reason == "end_turn", turn.error
        total_flushes += turn.flushes
    assert total_flushes >= 3
    for req in core.requests:
        assert core.prompt_tokens(req) + req.max_tokens <= 2048
    # The summary is in the window: in the system message, with core memory.
    last = core.requests[-1]
    assert "Summary of earlier conversation" in (last.messages[0].content or "")
    assert "Summary: the user chatted" in (last.messages[0].content or "")
    ctx = kernel.context("ann").as_dict()
    assert ctx["sections"]["summary"] > 0
    assert ctx["total"] <= ctx["budget"]


async def test_memory_pressure_alert_then_flush(kernel: Kernel) -> None:
    seen_alert: list[str] = []

    def policy(req: ChatRequest) -> ChatResponse:
        last = req.messages[-1]
        if req.tool_choice == "none":
            return say("Summary so far.")
        if last.role == "user" and (last.content or "").startswith("[system alert]"):
            seen_alert.append(last.content or "")
            return call(
                "archival_memory_insert", content="saved before eviction", request_heartbeat=True
            )
        return memgpt_policy(req)

    core = ScriptedCore(policy, context_window=2048)
    await make_agent(kernel, core, window=2048)
    flushed = False
    for i in range(60):
        turn = await kernel.send("ann", filler(i))
        assert turn.stop_reason == "end_turn"
        if turn.flushes:
            flushed = True
            break
    assert seen_alert and "Memory pressure" in seen_alert[0]
    assert flushed
    found, _ = await kernel.search_archival("ann", "saved before eviction")
    assert found and found[0].text == "saved before eviction"


async def test_malformed_output_never_crashes_a_turn(kernel: Kernel) -> None:
    script = iter(
        [
            raw_call("send_message", "{not json"),
            raw_call("no_such_function", "{}"),
            raw_call("send_message", json.dumps({"message": 123})),
            raw_call("core_memory_append", json.dumps({"label": "nope", "content": "x"})),
            raw_call("conversation_search", json.dumps({"query": "x", "page": "first"})),
            raw_call("", "I am just rambling without JSON"),
            say(""),
            call("send_message", message="finally right"),
        ]
    )
    errors: list[str] = []

    def policy(req: ChatRequest) -> ChatResponse:
        last = req.messages[-1]
        if last.role == "tool":
            errors.append(json.loads(last.content or "{}")["message"])
        return next(script)

    core = ScriptedCore(policy)
    kernel.add_core(core, model="scripted/bad")
    await kernel.create_agent(
        "bob", model="scripted/bad", embedder="test/hash", settings={"max_steps": 20}
    )
    turn = await kernel.send("bob", "hello")
    assert turn.stop_reason == "end_turn"
    assert turn.reply == "finally right"
    assert "not valid JSON" in errors[0]
    assert "unknown function 'no_such_function'" in errors[1]
    assert "message: Input should be a valid string" in errors[2]
    assert "no core memory block labelled 'nope'" in errors[3]
    assert "page" in errors[4]
    assert "(no function name)" in errors[5]
    assert [c.ok for c in turn.function_calls] == [False] * 6 + [True]


async def test_step_cap_ends_runaway_heartbeats(kernel: Kernel) -> None:
    queries = iter(range(100))
    core = ScriptedCore(
        lambda req: call("conversation_search", query=f"x{next(queries)}", request_heartbeat=True)
    )
    kernel.add_core(core, model="scripted/loop")
    await kernel.create_agent(
        "loopy", model="scripted/loop", embedder="test/hash", settings={"max_steps": 4}
    )
    turn = await kernel.send("loopy", "go")
    assert turn.stop_reason == "max_steps"
    assert turn.steps == 4 and len(core.requests) == 4


async def test_identical_calls_in_a_row_end_the_turn(kernel: Kernel) -> None:
    # What the embedded base model does: echo the same call with a heartbeat.
    core = ScriptedCore(lambda req: call("send_message", message="hi", request_heartbeat=True))
    kernel.add_core(core, model="scripted/echo")
    await kernel.create_agent("echo", model="scripted/echo", embedder="test/hash")
    turn = await kernel.send("echo", "hello")
    assert turn.stop_reason == "repeated_call"
    assert turn.steps == 2 and turn.replies == ["hi", "hi"]


async def test_core_memory_limit_is_reported_to_the_model(kernel: Kernel) -> None:
    results: list[str] = []

    def policy(req: ChatRequest) -> ChatResponse:
        last = req.messages[-1]
        if last.role == "tool":
            results.append(last.content or "")
            return call("send_message", message="ok")
        return call("core_memory_append", label="human", content="y" * 5000, request_heartbeat=True)

    kernel.add_core(ScriptedCore(policy), model="scripted/big")
    await kernel.create_agent("c", model="scripted/big", embedder="test/hash")
    await kernel.send("c", "hi")
    assert "over its limit of 2000" in results[0]
    assert kernel.get_agent("c")["blocks"][1]["value"] == "Nothing is known about the user yet."


async def test_recall_search_and_paging(kernel: Kernel) -> None:
    pages: list[str] = []

    def policy(req: ChatRequest) -> ChatResponse:
        last = req.messages[-1]
        if last.role == "tool":
            pages.append(json.loads(last.content or "{}")["message"])
            return call("send_message", message="searched")
        text = last.content or ""
        if text.startswith("search "):
            _, query, page = text.split(" ", 2)
            return call("conversation_search", query=query, page=int(page), request_heartbeat=True)
        return call("send_message", message="ack")

    kernel.add_core(ScriptedCore(policy), model="scripted/s")
    await kernel.create_agent("s", model="scripted/s", embedder="test/hash")
    for i in range(12):
        await kernel.send("s", f"note {i}: the zebra code is Z{i}")
    await kernel.send("s", "search zebra 0")
    await kernel.send("s", "search zebra 2")
    # Timestamps vary from run to run; everything else is exact.
    stamp = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d\] ", re.M)
    assert all(len(stamp.findall(p)) == len(p.splitlines()) - 1 for p in pages)
    # 12 notes + the search request itself; the short request ranks first (BM25),
    # ties go newest first
    assert stamp.sub("", pages[0]) == "\n".join(
        [
            "Showing 5 of 13 recall results (page 0 of 0..2):",
            "user: search zebra 0",
            *(f"user: note {i}: the zebra code is Z{i}" for i in (11, 10, 9, 8)),
        ]
    )
    # the second search request matches too: 14, and the last page holds the oldest four
    assert stamp.sub("", pages[1]) == "\n".join(
        [
            "Showing 4 of 14 recall results (page 2 of 0..2):",
            *(f"user: note {i}: the zebra code is Z{i}" for i in (3, 2, 1, 0)),
        ]
    )
    found, total = await kernel.search_recall("s", "Z7")
    assert total == 1 and "Z7" in found[0].searchable_text()


async def test_archival_finds_the_right_passage_among_500(kernel: Kernel) -> None:
    topics = ["astronomy", "cooking", "gardening", "football", "chemistry", "poetry"]
    texts = [
        f"Passage {i} about {topics[i % 6]}: detail {i * 31 % 97} and item{i}." for i in range(500)
    ]
    texts[317] = "The launch code for the lunar greenhouse is KESTREL-42."
    kernel.add_core(ScriptedCore(memgpt_policy), model="scripted/memgpt")
    await kernel.create_agent("arch", model="scripted/memgpt", embedder="test/hash")
    await kernel.insert_archival("arch", texts)
    found, total = await kernel.search_archival("arch", "lunar greenhouse launch code")
    assert found[0].text == texts[317]
    assert total >= 5
    page1, _ = await kernel.search_archival("arch", "cooking detail", page=1)
    page0, _ = await kernel.search_archival("arch", "cooking detail", page=0)
    assert not {p.id for p in page0} & {p.id for p in page1}
    assert kernel.get_agent("arch")["archival_count"] == 500


async def test_oversize_function_result_is_trimmed_to_fit(kernel: Kernel) -> None:
    def policy(req: ChatRequest) -> ChatResponse:
        last = req.messages[-1]
        if req.tool_choice == "none":
            return say("Summary.")
        if last.role == "tool" and last.name == "archival_memory_search":
            return call("send_message", message="found a lot")
        return call("archival_memory_search", query="giant", request_heartbeat=True)

    core = ScriptedCore(policy, context_window=2048)
    kernel.add_core(core, model="scripted/giant")
    await kernel.create_agent(
        "g", model="scripted/giant", embedder="test/hash", context_window=2048
    )
    await kernel.insert_archival("g", [f"giant passage {i} " + "word " * 700 for i in range(5)])
    turn = await kernel.send("g", "search")
    assert turn.stop_reason == "end_turn" and turn.reply == "found a lot"
    after_search = next(r for r in core.requests if r.messages[-1].role == "tool")
    for req in core.requests:
        assert core.prompt_tokens(req) + req.max_tokens <= 2048
    assert "truncated to fit the context window" in (after_search.messages[-1].content or "")
    # Recall keeps the whole result; only the request was shortened.
    stored = [m for m in kernel.messages("g") if m.name == "archival_memory_search"]
    assert len(stored[0].content or "") > 10_000


@pytest.mark.slow
async def test_archival_search_by_meaning_with_the_real_embedder(home: Path) -> None:
    """500 passages through the default all-MiniLM-L6-v2: a paraphrase finds its passage."""
    k = Kernel.open(home)  # the default embedder, as a user gets it
    k.add_core(ScriptedCore(memgpt_policy), model="scripted/memgpt")
    await k.create_agent("real", model="scripted/memgpt")
    assert k.get_agent("real")["embedder"] == "local/all-MiniLM-L6-v2"
    subjects = ["the weather", "a football match", "baking bread", "tax forms", "a train delay"]
    texts = [f"Note {i}: a short remark about {subjects[i % 5]}, number {i}." for i in range(500)]
    texts[123] = "My sister Clara moved to Lisbon last spring to work as a marine biologist."
    await k.insert_archival("real", texts)
    found, _ = await k.search_archival(
        "real", "Which relative relocated to Portugal for ocean research?"
    )
    assert found[0].text == texts[123]
    await k.close()
