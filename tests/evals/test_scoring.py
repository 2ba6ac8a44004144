"""The scores as the papers define them: SQuAD normalization, exact match, containment,
token F1, and a judge model that is asked the right question."""

from __future__ import annotations

import pytest

from llmos.evals import scoring
from llmos.llm.core import ChatRequest
from llmos.llm.replay import ScriptedCore, say


def test_normalization_drops_case_punctuation_and_articles() -> None:
    assert scoring.normalize("The  Eiffel-Tower, in Paris!") == "eiffel tower in paris"
    assert scoring.exact_match("the Miso.", "Miso") == 1.0
    assert scoring.exact_match("Miso the cat", "Miso") == 0.0


def test_containment_matches_whole_words_only() -> None:
    assert scoring.contains("Your dog is called Pepper.", "pepper") == 1.0
    assert scoring.contains("Peppermint tea", "pepper") == 0.0  # not a word of the reply
    assert scoring.contains("anything", "") == 0.0  # an empty answer never matches


@pytest.mark.parametrize(
    ("reply", "answer", "f1"),
    [
        ("Miso", "Miso", 1.0),
        ("my cat is Miso", "Miso", 0.4),  # precision 1/4, recall 1
        ("7 May 2023", "May 7, 2023", 1.0),  # the same tokens in another order
        ("nothing", "Miso", 0.0),
    ],
)
def test_token_f1(reply: str, answer: str, f1: float) -> None:
    assert scoring.token_f1(reply, answer) == pytest.approx(f1)


async def test_the_judge_is_asked_about_the_answer_or_the_abstention() -> None:
    seen: list[ChatRequest] = []

    def judge(request: ChatRequest) -> object:
        seen.append(request)
        return say("Yes.")

    core = ScriptedCore(judge, name="scripted/judge")
    assert await scoring.judge(core, "Q?", "Miso", "It is Miso") == 1.0
    assert "Reference answer: Miso" in (seen[0].messages[0].content or "")
    assert await scoring.judge(core, "Q?", "never said", "I don't know", abstention=True) == 1.0
    assert "cannot be answered" in (seen[1].messages[0].content or "")
    core.policy = lambda r: say("no")
    assert await scoring.judge(core, "Q?", "Miso", "Rex") == 0.0
    assert not seen[0].tools and seen[0].tool_choice == "none"
