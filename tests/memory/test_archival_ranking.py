"""Archival search answers with what is relevant: filler words do not rank a passage,
and a passage unrelated to the query in meaning and words is not returned at all.

On the real default embedder (all-MiniLM-L6-v2), on both engines. Before the fix,
"household pets and animals" ranked "The Eiffel Tower is in Paris and ..." above
the cats (it shared "and"), and every search returned every passage."""

from __future__ import annotations

from tests.conftest import both_engines

from llmos import Kernel
from llmos.llm.replay import ScriptedCore
from llmos.storage.search import words

engine = both_engines()

PETS = [
    "Cats sleep for twelve to sixteen hours a day and groom themselves.",
    "Our dog Rufus needs two walks a day; he is a beagle.",
    "Parrots such as the African grey can learn hundreds of words.",
]
OTHERS = [
    "The Eiffel Tower is in Paris and was completed in 1889 for the World's Fair.",
    "Pesto is made from basil, pine nuts, garlic, parmesan and olive oil.",
    "A SQL index speeds up lookups on a column at the cost of slower writes.",
    "Git rebase replays your commits on top of another branch.",
    "Jupiter is the largest planet and has a storm larger than Earth.",
    "The Berlin Wall fell in 1989 and Germany reunified in 1990.",
]


def test_stopwords_leave_the_words_that_carry_the_query() -> None:
    assert words("household pets and animals") == ["household", "pets", "animals"]
    assert words("the care of a dog") == ["care", "dog"]
    assert words("the who") == ["the", "who"]  # nothing else to search by: keep them


async def test_filler_words_do_not_rank_and_unrelated_passages_are_not_returned(
    home: object,
) -> None:
    async with Kernel.open(home) as kernel:  # the default embedder: MiniLM, offline
        kernel.add_core(ScriptedCore([]), model="scripted/x")
        await kernel.create_agent("ann", model="scripted/x")
        ids = await kernel.insert_archival("ann", PETS + OTHERS)
        pets = set(ids[: len(PETS)])

        hits, total = await kernel.search_archival("ann", "household pets and animals")
        found = [h.id for h in hits]
        assert set(found[: len(PETS)]) == pets, [h.text for h in hits]
        assert total < len(ids), "a search returns what is relevant, not every passage"
        assert ids[len(PETS)] not in found  # the Eiffel Tower shares only "and"

        # A word the query shares is still found, however far the meaning.
        hits, _ = await kernel.search_archival("ann", "parmesan")
        assert hits and "Pesto" in hits[0].text
