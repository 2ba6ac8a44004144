"""Scores as the memory papers compute them: exact match, containment, token F1, a judge.

- `normalize`: SQuAD's answer normalization (lower case, no punctuation, no
  articles, single spaces), which LoCoMo's and LongMemEval's scripts also use.
- `exact_match`: the normalized reply equals the normalized answer.
- `contains`: the normalized answer occurs in the normalized reply — MemGPT's
  accuracy for nested key-value retrieval (the reply must hold the value).
- `token_f1`: harmonic mean of token precision and recall (LoCoMo's QA score).
- `judge`: a model of the user's choice says whether the reply answers the
  question as the gold answer does (MemGPT's deep-memory-retrieval accuracy and
  LongMemEval's score use an LLM judge; the prompt here is llmos's own wording).

Left out: LoCoMo's Porter stemming inside F1 (it would need nltk; scores here
are a little lower for inflected answers).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import TYPE_CHECKING

from llmos.llm.core import ChatRequest, Message

if TYPE_CHECKING:
    from llmos.llm.core import Core

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans(dict.fromkeys(string.punctuation, " "))

JUDGE_PROMPT = """You grade an assistant's answer against a reference answer.

Question: {question}
Reference answer: {answer}
Assistant's answer: {reply}

Does the assistant's answer give the reference answer (the same fact, in any wording)? \
An answer that also says other things still counts if it gives the reference answer; \
one that gives a different answer, or none, does not. Reply with one word: yes or no."""

ABSTAIN_PROMPT = """You grade an assistant's answer to a question that cannot be answered \
from what the assistant was told.

Question: {question}
Why it is unanswerable: {answer}
Assistant's answer: {reply}

Does the assistant say it does not know, or that the information was not given? \
Reply with one word: yes or no."""


def normalize(text: str) -> str:
    text = str(text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(reply: str, answer: str) -> float:
    return float(normalize(reply) == normalize(answer))


def contains(reply: str, answer: str) -> float:
    gold = normalize(answer)
    return float(bool(gold) and f" {gold} " in f" {normalize(reply)} ")


def token_f1(reply: str, answer: str) -> float:
    pred, gold = normalize(reply).split(), normalize(answer).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


async def judge(
    core: Core, question: str, answer: str, reply: str, *, abstention: bool = False
) -> float:
    """1.0 if the judge model says the reply gives the answer (or, for an
    abstention question, declines to answer), else 0.0."""
    prompt = (ABSTAIN_PROMPT if abstention else JUDGE_PROMPT).format(
        question=question, answer=answer, reply=reply or "(no answer)"
    )
    response = await core.chat(
        ChatRequest(messages=[Message("user", prompt)], max_tokens=8, tool_choice="none")
    )
    return float(normalize(response.content or "").startswith("yes"))
