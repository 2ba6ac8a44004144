"""Nested key-value retrieval, as MemGPT's paper defines it (Packer et al. 2023, §3.2).

A store of UUID key-value pairs sits in the agent's archival memory (140 pairs,
as in the paper). The agent is given one key and must return its value; at
nesting level n (0-4) that value is itself a key, n times over, so the agent
must look up each value in turn until it reaches one that is not a key.
Items cycle through the levels; each has its own store, generated from the
seed (`random.Random`), so a run is reproducible. Scored as the paper scores
it: accuracy, the final value present in the reply.

The no-memory baseline gets the pairs as notes in its prompt, cut from the
front to fit the window: a chain whose pairs were cut is unanswerable for it.
"""

from __future__ import annotations

import itertools
import random
import uuid
from typing import TYPE_CHECKING, Any

from llmos.evals import scoring
from llmos.evals.harness import QAItem
from llmos.evals.qa import QATask

if TYPE_CHECKING:
    from llmos.llm.core import Core

LEVELS = 5  # nesting levels 0..4
PAIRS = 140

QUESTION = (
    "Your archival memory holds key-value pairs (lines like 'key: value'). Find the value of "
    "key {key}. If that value is itself a key in your archival memory, look it up too, and so "
    "on, until you reach a value that is not a key. Reply with only that final value."
)


def passage(key: str, value: str) -> str:
    return f"{key}: {value}"


class NestedKV(QATask):
    name = "nested-kv"
    metrics = ("accuracy", "f1")

    def __init__(self, size: int = 10, seed: int = 0, pairs: int = PAIRS) -> None:
        if size < 1:
            raise ValueError("--size must be at least 1")
        if pairs < LEVELS + 1:
            raise ValueError(f"a store needs at least {LEVELS + 1} pairs")
        self.size, self.seed, self.pairs = size, seed, pairs

    def identity(self) -> dict[str, Any]:
        return {"seed": self.seed, "size": self.size, "pairs": self.pairs}

    def items(self) -> list[QAItem]:
        return [self._item(i) for i in range(self.size)]

    def _item(self, i: int) -> QAItem:
        rng = random.Random(f"nested-kv:{self.seed}:{i}")

        def new_id() -> str:
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))

        level = i % LEVELS
        chain = [new_id() for _ in range(level + 2)]  # key, level nested keys, final value
        needed = [passage(a, b) for a, b in itertools.pairwise(chain)]
        store = needed + [passage(new_id(), new_id()) for _ in range(self.pairs - len(needed))]
        rng.shuffle(store)
        return QAItem(
            id=f"kv-{i}",
            question=QUESTION.format(key=chain[0]),
            answer=chain[-1],
            passages=store,
            category=f"level {level}",
            meta={"needed_passages": needed},
        )

    async def score(self, item: QAItem, reply: str, judge: Core | None) -> dict[str, float | None]:
        return {
            "accuracy": scoring.contains(reply, item.answer),
            "f1": scoring.token_f1(reply, item.answer),
        }
