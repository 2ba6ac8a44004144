"""Context switches on the real Gemma 3 270M: preempted generations, per-agent KV state.

A generation suspended between slices (another agent's generation running in
between) must produce exactly the tokens of an uninterrupted one at
temperature 0, with and without a grammar, and evaluate no token twice;
agents taking turns must get their own prompt state back; saved states must
survive a spill to disk; a closed generation must leave the core usable; and
the kernel's round-robin run queue must switch contexts without changing any
output. Short prompts and a dozen tokens per request keep it to tens of seconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.kernel.scheduler import RunQueue
from llmos.kernel.syscalls import LLMSyscall
from llmos.llm.core import (
    ChatRequest,
    ChatResponse,
    CoreUnavailable,
    Message,
    PreemptibleCore,
    ToolSpec,
)
from llmos.llm.kvstore import KVStore
from llmos.llm.llamacpp import LlamaCppCore
from llmos.llm.llamacpp_generation import LlamaCppGeneration

pytestmark = pytest.mark.slow

SEND = ToolSpec(
    name="send_message",
    description="Sends a message to the human user.",
    parameters={
        "type": "object",
        "properties": {"message": {"type": "string", "description": "Message contents."}},
        "required": ["message"],
    },
)
TOPICS = {
    "ada": "Write a short poem about the sea, the ships and the lighthouse keeper.",
    "bob": "Explain how a bicycle works, step by step, for a curious child.",
    "cy": "List three facts about the planet Mars and its two small moons.",
}


def request(agent: str, *, tools: bool = False, max_tokens: int = 12) -> ChatRequest:
    return ChatRequest(
        messages=[
            Message("system", f"You are {agent}'s assistant. Answer briefly and kindly."),
            Message("user", TOPICS[agent]),
        ],
        tools=[SEND] if tools else [],
        tool_choice="required" if tools else "none",
        max_tokens=max_tokens,
        cache_key=agent,
    )


@pytest.fixture(scope="module")
def core() -> Iterator[LlamaCppCore]:
    pytest.importorskip("llama_cpp")
    core = LlamaCppCore(context_window=1024)
    yield core
    asyncio.run(core.aclose())


async def uninterrupted(
    core: LlamaCppCore, *requests: ChatRequest
) -> list[tuple[list[int], ChatResponse]]:
    """Each request run alone, one after the other, from an empty cache: (tokens, response)."""
    core.clear_kv_cache()
    outs = []
    for r in requests:
        gen = core.start(r)
        try:
            assert await gen.run(10_000)
            outs.append((list(gen.out), gen.result()))
        finally:
            await gen.close()
    core.clear_kv_cache()
    return outs


async def interleave(gens: list[LlamaCppGeneration], quantum: int) -> None:
    """Round robin by hand: run a slice, suspend, let the next one run."""
    done = [False] * len(gens)
    while not all(done):
        for i, gen in enumerate(gens):
            if done[i]:
                continue
            await gen.resume()
            done[i] = await gen.run(quantum)
            if not done[i]:
                await gen.suspend()


def answer(resp: ChatResponse) -> tuple[object, ...]:
    """What a response says (tool call ids are random)."""
    calls = [(c.name, c.arguments) for c in resp.tool_calls]
    return resp.content, calls, resp.finish_reason, resp.usage.completion_tokens


def test_core_is_preemptible_and_takes_its_budgets(tmp_path: Path) -> None:
    core = LlamaCppCore(kv_cache_bytes=1, kv_disk_bytes=2, kv_dir=tmp_path)
    assert isinstance(core, PreemptibleCore)
    store = core.slot.store
    assert (store.ram_budget, store.disk_budget, store._base) == (1, 2, tmp_path)
    assert core.stats()["store"]["entries_ram"] == 0


@pytest.mark.parametrize("tools", [False, True], ids=["text", "grammar"])
async def test_preempted_generation_equals_uninterrupted(core: LlamaCppCore, tools: bool) -> None:
    reqs = [request("ada", tools=tools), request("bob", tools=tools)]
    expected = await uninterrupted(core, *reqs)
    before = core.stats()
    gens = [core.start(r) for r in reqs]
    try:
        await interleave(gens, quantum=4)
        for gen, (want, resp) in zip(gens, expected, strict=True):
            assert gen.out == want
            assert answer(gen.result()) == answer(resp)
            assert gen.suspensions >= 1 or gen.finish == "stop"
            # No token evaluated twice: the prompt once (minus what was reused
            # from the cache), the sampled tokens once each.
            assert gen.reevaluated == 0
            assert gen.prompt is not None
            assert gen.prompt_evaluated == len(gen.prompt) - gen.cached_prompt_tokens
        after = core.stats()
        assert after["snapshot_restores"] > before["snapshot_restores"]
        assert after["reevaluated_tokens"] == before["reevaluated_tokens"]
        if tools:  # the grammar's state survived the switches: a well-formed call
            for gen in gens:
                assert gen.result().tool_calls[0].name == "send_message"
    finally:
        for gen in gens:
            await gen.close()
    assert not [k for k in core.slot.store if k.startswith("gen:")], "snapshots leaked"


async def test_without_snapshots_resume_reevaluates(core: LlamaCppCore) -> None:
    core.clear_kv_cache()
    core.snapshot_switches = False
    try:
        a, b = core.start(request("ada", max_tokens=6)), core.start(request("bob", max_tokens=6))
        assert not await a.run(3)
        await a.suspend()
        await b.run(3)
        await b.suspend()
        await a.resume()
        assert a.prompt is not None and a.snapshot is None
        # The prompt and the two evaluated sampled tokens again, less the head
        # shared with bob's prompt (still in the cache).
        again = a.reevaluated
        assert len(a.prompt) // 2 < again <= len(a.prompt) + 2
        assert core.stats()["resumes_without_snapshot"] >= 1
        assert await a.run(10)
        assert a.reevaluated == again  # the resume paid it all
        await a.close()
        await b.close()
    finally:
        core.snapshot_switches = True


async def test_agents_taking_turns_get_their_prompt_state_back(core: LlamaCppCore) -> None:
    core.clear_kv_cache()
    first_a = request("ada", max_tokens=4)
    resp_a = await core.chat(first_a)
    await core.chat(request("bob", max_tokens=4))  # displaces ada's state
    s0 = core.stats()
    second_a = ChatRequest(
        messages=[
            *first_a.messages,
            Message("assistant", resp_a.content or "..."),
            Message("user", "Thank you! Now make it rhyme."),
        ],
        tool_choice="none",
        max_tokens=4,
        cache_key="ada",
    )
    resp = await core.chat(second_a)
    s1 = core.stats()
    assert s1["hits"] == s0["hits"] + 1
    # Only the new tokens were evaluated: ada's whole first prompt came back.
    assert resp.usage.cached_prompt_tokens >= resp_a.usage.prompt_tokens
    evaluated = s1["prompt_tokens_evaluated"] - s0["prompt_tokens_evaluated"]
    assert evaluated == resp.usage.prompt_tokens - resp.usage.cached_prompt_tokens
    assert evaluated < resp.usage.prompt_tokens // 2
    # bob's state was saved in turn when ada took the model back.
    assert "agent:bob" in core.slot.store
    # The same agent again: its state is still in the model, nothing restored.
    again = await core.chat(second_a)
    assert core.stats()["live_hits"] == s1["live_hits"] + 1
    assert again.usage.cached_prompt_tokens == again.usage.prompt_tokens - 1


async def test_tiny_ram_budget_spills_to_disk_and_back(core: LlamaCppCore, tmp_path: Path) -> None:
    reqs = [request("ada", max_tokens=8), request("cy", max_tokens=8)]
    expected = await uninterrupted(core, *reqs)
    # The same core with a 1-byte RAM budget: every saved state goes to disk.
    small, roomy = core, core.slot.store
    small.slot.store = KVStore(ram_bytes=1, disk_bytes=1 << 30, directory=tmp_path)
    try:
        gens = [small.start(r) for r in reqs]
        await interleave(gens, quantum=3)
        assert [g.out for g in gens] == [want for want, _ in expected]
        assert all(g.reevaluated == 0 for g in gens)
        for g in gens:
            await g.close()
        store = small.stats()["store"]
        assert store["spilled"] >= 2 and store["loaded_from_disk"] >= 2
        assert store["entries_ram"] == 0 and store["ram_bytes"] <= 1

        # Agents' prompt states take the same road: ada's goes to disk when cy
        # takes the model, and her next request loads it back.
        await small.chat(request("ada", max_tokens=2))
        await small.chat(request("cy", max_tokens=2))
        hits, loads = small.stats()["hits"], small.stats()["store"]["loaded_from_disk"]
        await small.chat(request("ada", max_tokens=2))
        assert small.stats()["hits"] == hits + 1
        assert small.stats()["store"]["loaded_from_disk"] == loads + 1
        assert list(tmp_path.glob("kv-*/*.kv")), "cy's state is not on disk"

        # Past the disk cap the oldest states are dropped: a miss, still correct.
        small.slot.store.disk_budget = 1
        await small.chat(request("cy", max_tokens=2))
        assert small.stats()["store"]["dropped"] >= 1
        misses = small.stats()["misses"]
        resp = await small.chat(request("ada", max_tokens=8))
        assert small.stats()["misses"] == misses + 1
        assert resp.content == expected[0][1].content
    finally:
        small.slot.store.close()
        small.slot.store = roomy
        small.clear_kv_cache()
    assert not list(tmp_path.glob("kv-*")), "state directory left behind"


async def test_close_mid_generation_leaves_the_core_usable(core: LlamaCppCore) -> None:
    core.ignore_eos = True  # a run of 200 tokens that is still going when closed
    try:
        gen = core.start(request("bob", max_tokens=200))
        assert not await gen.run(2)
        task = asyncio.create_task(gen.run(200))
        while len(gen.out) < 5:
            await asyncio.sleep(0.02)
        await gen.close()
        assert await task is False  # the slice stopped at the next token
        assert len(gen.out) < 200
        with pytest.raises(CoreUnavailable, match="closed"):
            await gen.run(1)
        # A suspended generation that is closed drops its snapshot.
        other = core.start(request("cy", max_tokens=6))
        await other.run(2)
        await other.suspend()
        assert other.snapshot is not None and other.snapshot in core.slot.store
        await other.close()
        assert not [k for k in core.slot.store if k.startswith("gen:")]
    finally:
        core.ignore_eos = False
    ((_, want),) = await uninterrupted(core, request("ada", max_tokens=6))
    resp = await core.chat(request("ada", max_tokens=6))
    assert resp.content == want.content


async def test_round_robin_run_queue_switches_contexts_exactly(core: LlamaCppCore) -> None:
    core.ignore_eos = True  # exact lengths, so the slices are known
    try:
        reqs = [
            request("ada", max_tokens=20),
            request("bob", tools=True, max_tokens=12),
            request("cy", max_tokens=8),
        ]
        expected = await uninterrupted(core, *reqs)
        reevaluated = core.stats()["reevaluated_tokens"]
        q = RunQueue(core, policy="rr", quantum=8)
        calls = [LLMSyscall(agent_id=r.cache_key or "", core=core, request=r) for r in reqs]
        results = await asyncio.gather(*(q.run(c) for c in calls))
    finally:
        core.ignore_eos = False
    # ada ran 3 quanta, bob 2 and cy 1, with others waiting in between.
    assert q.context_switches >= 3
    assert core.stats()["reevaluated_tokens"] == reevaluated
    kv = q.stats()["kv"]  # the kernel's view of the core (llmos kernel stats)
    assert kv["snapshot_restores"] >= 3 and kv["suspends"] >= 3
    for resp, (_, want) in zip(results, expected, strict=True):
        assert answer(resp) == answer(want)


async def test_a_newcomer_starts_from_another_agents_saved_head(core: LlamaCppCore) -> None:
    """Agents on a core share their prompt's head (tools, system prompt): when the
    model holds something else, a newcomer restores another agent's saved state
    and evaluates only its own part — with the same answer as from scratch."""
    head = "You are a helpful agent on llmos. " + " ".join(
        f"Rule {i}: keep notes about ships, tides and lighthouses." for i in range(12)
    )

    def ask(agent: str, text: str) -> ChatRequest:
        return ChatRequest(
            messages=[Message("system", head), Message("user", text)],
            tool_choice="none",
            max_tokens=8,
            cache_key=agent,
        )

    newcomer = ask("cy", "Which lighthouse is the tallest?")
    ((want, _),) = await uninterrupted(core, newcomer)
    core.clear_kv_cache()
    await core.chat(ask("ann", "Tell me about the sea."))
    # Someone with a different prompt displaces ann (her state goes to the store).
    await core.chat(
        ChatRequest(
            messages=[Message("user", "Count to three.")],
            tool_choice="none",
            max_tokens=2,
            cache_key="zed",
        )
    )
    before = core.stats()["shared_hits"]
    gen = core.start(newcomer)
    try:
        assert await gen.run(100)
        assert gen.out == want
        assert core.stats()["shared_hits"] == before + 1
        head_tokens = core.count_tokens(head)
        assert gen.cached_prompt_tokens >= head_tokens  # the head came from ann's state
        assert gen.prompt_evaluated == len(gen.prompt or []) - gen.cached_prompt_tokens
    finally:
        await gen.close()
    core.clear_kv_cache()


async def test_round_robin_streams_each_piece_once_and_all_of_it(core: LlamaCppCore) -> None:
    """Streaming through preemptions: the pieces of each generation, in the order
    they arrived, are exactly its finished text: nothing repeated, nothing lost."""
    from llmos.llm.core import Delta

    reqs = [request("ada", max_tokens=24), request("bob", tools=True, max_tokens=24)]
    pieces: dict[str, list[Delta]] = {"ada": [], "bob": []}
    for r in reqs:
        r.on_delta = pieces[r.cache_key or ""].append
    q = RunQueue(core, policy="rr", quantum=3)
    calls = [LLMSyscall(agent_id=r.cache_key or "", core=core, request=r) for r in reqs]
    ada, bob = await asyncio.gather(*(q.run(c) for c in calls))
    assert q.context_switches >= 2
    assert len(pieces["ada"]) > 3 and all(d.call is None for d in pieces["ada"])
    assert "".join(d.text for d in pieces["ada"]).strip() == ada.content
    assert all(d.raw_call and d.call == 0 for d in pieces["bob"])
    streamed = json.loads("".join(d.text for d in pieces["bob"]))
    assert streamed["function"] == bob.tool_calls[0].name == "send_message"
    assert json.dumps(streamed["arguments"]) == json.dumps(json.loads(bob.tool_calls[0].arguments))
