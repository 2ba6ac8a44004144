"""Recall results for the model: a message that only called functions shows its calls."""

from __future__ import annotations

import asyncio
import json
from datetime import date

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.llm.replay import ScriptedCore, call


async def test_date_search_shows_tool_call_only_turns_as_the_call(kernel: Kernel) -> None:
    today = date.today().isoformat()

    def policy(req: ChatRequest) -> ChatResponse:
        last = req.messages[-1]
        user = next(m.content or "" for m in reversed(req.messages) if m.role == "user")
        if last.role == "user" and "Ada" in user:
            return call("core_memory_append", label="human", content="Name: Ada",
                        request_heartbeat=True)  # fmt: skip
        if last.role == "user":
            return call("conversation_search_date", start_date=today, end_date=today,
                        request_heartbeat=True)  # fmt: skip
        return call("send_message", message="done")

    kernel.add_core(ScriptedCore(policy), model="scripted/dates")
    await kernel.create_agent("ada", model="scripted/dates", embedder="test/hash")
    await asyncio.wait_for(kernel.send("ada", "my name is Ada Lovelace"), 10)
    turn = await asyncio.wait_for(kernel.send("ada", "what did we say today?"), 10)
    result = next(m for m in turn.messages if m.name == "conversation_search_date")
    text = json.loads(result.content or "")["message"]
    assert "assistant called core_memory_append(label='human', content='Name: Ada')" in text
    assert "user: my name is Ada Lovelace" in text
    assert "assistant: \n" not in text + "\n" and not text.rstrip().endswith("assistant:")
