"""When the window is flushed and how far: the agent's `flush_fraction` and `flush_target`.

A turn's first step measures the window with the new user message in it; above
`flush_fraction` of the budget it evicts the oldest messages (folding them into
the summary) until the messages take at most `flush_target` of the room the
fixed part (system prompt, tools, core memory, summary) leaves. These tests
drive a conversation one short turn at a time and check, for every turn, the
decision against the numbers the window had when it was made.
"""

from __future__ import annotations

from typing import Any

import pytest

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.llm.replay import ScriptedCore, call, say
from llmos.memory.window import message_tokens


def ack(req: ChatRequest) -> ChatResponse:
    if req.tool_choice == "none":  # a flush's summary request
        return say("Summary: small talk.")
    return call("send_message", message="Noted.")


def chatter(i: int) -> str:
    return f"Turn {i}: the weather was mild, the bus was late, and lunch was soup again."


@pytest.mark.parametrize(
    ("window", "settings"),
    [
        (2048, {}),
        # a larger window: the fixed part alone is over half of 2,048's budget
        (4096, {"warning_fraction": 0.5, "flush_fraction": 0.6, "flush_target": 0.3}),
    ],
    ids=["defaults-0.9-0.5", "custom-0.6-0.3"],
)
async def test_flush_starts_above_flush_fraction_and_ends_at_flush_target(
    kernel: Kernel, window: int, settings: dict[str, Any]
) -> None:
    core = ScriptedCore(ack, context_window=window)
    kernel.add_core(core, model="scripted/ack")
    await kernel.create_agent(
        "ann",
        model="scripted/ack",
        embedder="test/hash",
        context_window=window,
        settings=settings,
    )
    _, image = kernel.process("ann")
    fraction = float(image.setting("flush_fraction"))
    target_share = float(image.setting("flush_target"))
    assert (fraction, target_share) == (
        settings.get("flush_fraction", 0.9),
        settings.get("flush_target", 0.5),
    )

    flushed_between = []  # measured shares of the budget at which a flush happened
    kept_between = []  # ... and at which none did, above the warning fraction
    for i in range(200):
        before = kernel.context("ann")
        budget = before.budget
        fixed = before.total - before.sections["messages"]
        seen = len(core.requests)
        turn = await kernel.send("ann", chatter(i))
        assert turn.stop_reason == "end_turn", turn.error
        measured = before.total + turn.messages[0].tokens  # the window with the new message
        share = measured / budget
        if measured > fraction * budget:
            assert turn.flushes == 1, f"turn {i}: {share:.3f} of the budget and no flush"
            flushed_between.append(share)
            # The step after the flush: its request's messages are what the flush kept.
            step = next(r for r in core.requests[seen:] if r.tool_choice != "none")
            kept = sum(message_tokens(core, m) for m in step.messages[1:])
            limit = int(target_share * (budget - fixed))
            assert kept <= limit, f"turn {i}: {kept} message tokens kept, target {limit}"
            # ... and not far below it: the oldest messages went, not all of them.
            assert kept > limit - 200, f"turn {i}: only {kept} tokens kept of {limit}"
        else:
            assert turn.flushes == 0, f"turn {i}: flushed at {share:.3f} of the budget"
            if share > fraction - 0.1:
                kept_between.append(share)
        if len(flushed_between) >= 3:
            break
    # The conversation crossed the threshold in small steps: some turns came
    # close below it without a flush, and flushes happened just above it.
    assert len(flushed_between) >= 3, flushed_between
    assert kept_between, "no turn came within 10% of the budget below the threshold"
    assert all(fraction < s <= fraction + 0.1 for s in flushed_between), flushed_between
