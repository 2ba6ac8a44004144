"""A whole agent turn on the real embedded model (Gemma 3 270M on llama.cpp), offline.

The model is a small base model, so what it says is weak; what this proves is
that the whole system runs on it: the kernel schedules the step on the local
core, the grammar forces a well-formed function call, the executor runs it,
and the turn ends with a stop reason and nothing over the window.
"""

from __future__ import annotations

import json

import pytest

from llmos import Kernel
from llmos.agent.functions import BUILTINS

pytestmark = pytest.mark.slow


async def test_embedded_gemma_runs_a_turn(kernel: Kernel) -> None:
    await kernel.create_agent("gemma", embedder="test/hash", settings={"max_steps": 2})
    assert kernel.get_agent("gemma")["model"] == "local/gemma-3-270m"
    turn = await kernel.send("gemma", "Hello! My name is Sam and I love sailing.")

    assert turn.stop_reason in ("end_turn", "max_steps"), turn.error
    assert turn.function_calls, "the model made no function call"
    for record in turn.function_calls:
        assert record.name in BUILTINS
        assert isinstance(json.loads(record.arguments), dict)
    assert turn.usage.prompt_tokens > 0 and turn.usage.completion_tokens > 0
    window = kernel.context("gemma")
    assert window.total <= window.budget
    # Everything the turn did is in recall storage, in order.
    roles = [m.role for m in reversed(kernel.messages("gemma"))]
    assert roles[0] == "user" and "assistant" in roles and "tool" in roles
