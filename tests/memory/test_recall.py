"""Recall search ranks by relevance (BM25; ts_rank on PostgreSQL), not by age: a strong
match comes first wherever it sits.

The strong match is sent between two weak ones (one older, one newer), so an
order by id in either direction puts a weak match first. Checked through the
kernel (`Kernel.search_recall`, what `conversation_search` runs) and through
the agent's own `conversation_search` function.
"""

from __future__ import annotations

import json

from tests.conftest import both_engines

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.llm.replay import ScriptedCore, call

engine = both_engines()

WEAK_OLD = (
    "Last summer my cousin and her friends took me to a big zoo in another city, "
    "where we saw a sleepy zebra, some noisy parrots and a very old tortoise."
)
STRONG = "Zebra migration: the great zebra migration crosses the river in July."
WEAK_NEW = (
    "The travel agent called about the flights and the hotel and said that the "
    "migration of our booking to the new system would take a few more days."
)
QUERY = "zebra migration"


def quiet(req: ChatRequest) -> ChatResponse:
    """Answers without repeating the user's words, so only their messages match."""
    last = req.messages[-1]
    if last.role == "tool":
        return call("send_message", message=f"Found: {json.loads(last.content or '{}')['message']}")
    text = last.content or ""
    if text.startswith("search: "):
        return call("conversation_search", query=text[8:], request_heartbeat=True)
    return call("send_message", message="Noted.")


async def converse(kernel: Kernel) -> None:
    kernel.add_core(ScriptedCore(quiet), model="scripted/quiet")
    await kernel.create_agent("ann", model="scripted/quiet", embedder="test/hash")
    for text in (WEAK_OLD, "Nothing else today.", STRONG, "Still nothing.", WEAK_NEW):
        await kernel.send("ann", text)


async def test_the_strongest_match_ranks_first_not_the_oldest_or_newest(kernel: Kernel) -> None:
    await converse(kernel)
    found, total = await kernel.search_recall("ann", QUERY)
    assert total == 3
    assert found[0].content == STRONG
    assert {m.content for m in found[1:]} == {WEAK_OLD, WEAK_NEW}


async def test_conversation_search_shows_the_strongest_match_first(kernel: Kernel) -> None:
    await converse(kernel)
    turn = await kernel.send("ann", f"search: {QUERY}")
    result = next(c for c in turn.function_calls if c.name == "conversation_search")
    assert result.ok
    text = result.result
    # The search request itself now matches too; it is short, both words: BM25 puts
    # it and the strong match ahead of the weak ones.
    positions = {name: text.find(snippet) for name, snippet in
                 {"strong": "great zebra migration", "old": "sleepy zebra",
                  "new": "migration of our booking"}.items()}  # fmt: skip
    assert all(p >= 0 for p in positions.values()), text
    assert positions["strong"] < positions["old"] and positions["strong"] < positions["new"]
