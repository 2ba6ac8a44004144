"""A 2,048-token model can host a MemGPT agent: the fixed part of its window (system
prompt, tool listing, core memory) takes at most half, and the agent shows its budget."""

from __future__ import annotations

import asyncio

from llmos import Kernel
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policies import memgpt_policy


async def test_a_2k_window_agent_is_created_and_keeps_half_for_messages(kernel: Kernel) -> None:
    with FakeOpenAIServer(memgpt_policy, context_window=2048) as oa:
        await kernel.create_agent(
            "tiny",
            model="openai/fake-model",
            base_url=oa.base_url,
            context_window=2048,
            embedder="test/hash",
        )
        budget = kernel.get_agent("tiny")["budget"]
        assert budget["window"] == 2048 and budget["reply"] == 256
        assert budget["fixed"] <= 1024, budget  # half the window: messages and the reply
        assert budget["messages"] == 2048 - 256 - budget["fixed"] - budget["summary"]
        # MemGPT's functions are all still offered, each with request_heartbeat
        tools = {t.name: t for t in kernel.tool_specs(kernel.image("tiny"))}
        assert {"send_message", "core_memory_append", "core_memory_replace",
                "conversation_search", "conversation_search_date",
                "archival_memory_insert", "archival_memory_search"} <= set(tools)  # fmt: skip
        assert all("request_heartbeat" in t.parameters["properties"] for t in tools.values())
        turn = await asyncio.wait_for(kernel.send("tiny", "Hello, I am Ada."), 20)
        assert turn.stop_reason == "end_turn" and turn.reply
        assert all(oa.prompt_tokens(r) <= 2048 for r in oa.requests)
