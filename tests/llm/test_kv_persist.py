"""Agents' prompt states outlive the process (real Gemma 3 270M): a second core on
the same state directory evaluates only the new tokens, with the same output;
a state of another context size, a corrupt file, or a prompt that changed
is a clean miss."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llmos.llm.core import ChatRequest, ChatResponse, Message
from llmos.llm.llamacpp import LlamaCppCore

pytestmark = pytest.mark.slow

SYSTEM = "You are a helpful assistant. " * 20  # a prompt worth keeping (> 64 tokens)


def ask(*turns: str, max_tokens: int = 8) -> ChatRequest:
    msgs = [Message("system", SYSTEM)]
    for i, t in enumerate(turns):
        msgs.append(Message("user" if i % 2 == 0 else "assistant", t))
    return ChatRequest(msgs, tool_choice="none", max_tokens=max_tokens, cache_key="agent-x")


async def run(core: LlamaCppCore, req: ChatRequest) -> tuple[ChatResponse, dict]:
    before = core.stats()
    out = await core.chat(req)
    after = core.stats()
    evaluated = after["prompt_tokens_evaluated"] - before["prompt_tokens_evaluated"]
    return out, {"evaluated": evaluated, "disk_hits": after["disk_hits"] - before["disk_hits"]}


async def test_a_restarted_core_takes_the_agents_state_from_disk(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    state = tmp_path / "agents"
    first = LlamaCppCore(context_window=1024, persist_kv=state)
    try:
        reply, _ = await run(first, ask("Say hello."))
    finally:
        await first.aclose()
    assert list(state.glob("*.kv")), "nothing persisted at close"
    follow = ask("Say hello.", reply.content or "", "And goodbye?")

    # The reference: one process that kept the state in memory (evaluation in
    # one batch or several may differ in the last bits, so the comparison is
    # with the same evaluation order), and a fresh one for the cost.
    stayed = LlamaCppCore(context_window=1024)
    cold = LlamaCppCore(context_window=1024)
    try:
        await run(stayed, ask("Say hello."))
        want, _ = await run(stayed, follow)
        _, ref = await run(cold, follow)
    finally:
        await asyncio.gather(stayed.aclose(), cold.aclose())

    warm = LlamaCppCore(context_window=1024, persist_kv=state)
    try:
        got, stats = await run(warm, follow)
    finally:
        await warm.aclose()
    assert stats["disk_hits"] == 1
    assert stats["evaluated"] < ref["evaluated"] // 3  # only the new tokens
    assert got.content == want.content  # and the same answer


async def test_mismatches_are_clean_misses(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    state = tmp_path / "agents"
    first = LlamaCppCore(context_window=1024, persist_kv=state)
    try:
        await run(first, ask("Say hello."))
    finally:
        await first.aclose()
    (path,) = state.glob("*.kv")
    good = path.read_bytes()

    # another context size: the state is not taken
    other = LlamaCppCore(context_window=2048, persist_kv=state)
    try:
        _, stats = await run(other, ask("Say hello."))
        assert stats["disk_hits"] == 0 and other.stats()["store"]["persist_misses"] == 1
    finally:
        await other.aclose()

    reference = LlamaCppCore(context_window=1024)
    try:
        # a torn file (the header intact, the state cut short): a miss, a good answer
        path.write_bytes(good[: len(good) // 2])
        torn = LlamaCppCore(context_window=1024, persist_kv=state)
        try:
            want, _ = await run(reference, ask("Say hello."))
            got, stats = await run(torn, ask("Say hello."))
            assert stats["disk_hits"] == 0 and got.content == want.content
        finally:
            await torn.aclose()

        # the agent's prompt changed near its start: at most the shared head
        # (the turn marker) is reused, and the answer is the one without a state
        path.write_bytes(good)
        req = ask("Say hello.")
        req.messages[0] = Message("system", "Different instructions entirely. " * 10)
        reference.clear_kv_cache()
        want, full = await run(reference, req)
        req = ask("Say hello.")
        req.messages[0] = Message("system", "Different instructions entirely. " * 10)
        changed = LlamaCppCore(context_window=1024, persist_kv=state)
        try:
            got, stats = await run(changed, req)
        finally:
            await changed.aclose()
        assert stats["evaluated"] >= full["evaluated"] - 8
        assert got.content == want.content
    finally:
        await reference.aclose()
