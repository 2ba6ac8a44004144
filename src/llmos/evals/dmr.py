"""Deep memory retrieval over multi-session chats, generated (after MemGPT's paper, §3.1).

MemGPT's DMR asks an agent about a detail of an earlier session after that
session has left its context window. Its data (MSC-Self-Instruct) is not
shipped here; instead each item is a generated chat of several sessions, days
apart, each stating one fact about the user ("My dog's name is Pepper.") among
small talk. The question asks about a fact of the first two sessions; only
the last session is still in the agent's window, and the sessions after the
fact are long enough (at a 2,048-token window) that a plain chat truncated to
the window has lost it too — each item records whether the fact still fit in
the baseline's prompt, and the report gives the baseline's score on the
evicted ones apart.

Scored as the paper does: accuracy by a judge model (`--judge SPEC`), and
without a judge, the answer present in the reply; token F1 beside it.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from llmos.evals import scoring
from llmos.evals.harness import QAItem, Turn
from llmos.evals.qa import QATask

if TYPE_CHECKING:
    from llmos.llm.core import Core

# (what, values): the user says "My {what} is {value}." and is asked "What is my {what}?"
FACTS: list[tuple[str, list[str]]] = [
    ("dog's name", ["Pepper", "Biscuit", "Juniper", "Waffles", "Comet"]),
    ("sister's name", ["Ingrid", "Priya", "Mireille", "Oksana", "Tamsin"]),
    ("favourite fruit", ["mango", "quince", "lychee", "persimmon", "gooseberry"]),
    ("home town", ["Tromso", "Cuenca", "Ballarat", "Nagano", "Ushuaia"]),
    ("car", ["Saab", "Lada", "Citroen", "Subaru", "Skoda"]),
    ("favourite composer", ["Sibelius", "Ravel", "Janacek", "Satie", "Dvorak"]),
    ("job", ["cartographer", "glassblower", "beekeeper", "luthier", "actuary"]),
    ("favourite board game", ["Carcassonne", "Go", "Azul", "Catan", "Hive"]),
    ("first teacher's name", ["Halvorsen", "Okafor", "Delacroix", "Brennan", "Yamada"]),
    ("favourite colour", ["teal", "ochre", "magenta", "olive", "cobalt"]),
]
ACTIVITIES = [
    "baking bread",
    "hiking by the river",
    "repairing a bicycle",
    "reading a novel",
    "painting the fence",
    "visiting a market",
    "learning to juggle",
    "planting tomatoes",
    "watching old films",
    "cleaning the attic",
    "swimming laps",
    "knitting a scarf",
]
MOODS = ["relaxing", "tiring", "surprisingly fun", "a bit chaotic", "peaceful", "rewarding"]
TOPICS = [
    "the weather this week",
    "a podcast about history",
    "weekend plans",
    "a new recipe",
    "the neighbours' renovation",
    "a documentary on oceans",
    "train timetables",
]
SESSIONS = 6
EXCHANGES = 8  # small-talk exchanges per session


def _small_talk(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(ACTIVITIES, 2)
    mood, topic = rng.choice(MOODS), rng.choice(TOPICS)
    user = (
        f"Today I spent most of the day {a}, and honestly it was {mood}. Tomorrow I might "
        f"try {b} instead. By the way, I keep thinking about {topic}."
    )
    bot = (
        f"That sounds {mood}! {a.capitalize()} is a good way to spend a day, and {b} could "
        f"be a nice change. What is on your mind about {topic}?"
    )
    return user, bot


class DeepMemoryRetrieval(QATask):
    name = "dmr"
    metrics = ("accuracy", "f1")

    def __init__(self, size: int = 10, seed: int = 0) -> None:
        if size < 1:
            raise ValueError("--size must be at least 1")
        self.size, self.seed = size, seed

    def identity(self) -> dict[str, Any]:
        return {"seed": self.seed, "size": self.size}

    def items(self) -> list[QAItem]:
        return [self._item(i) for i in range(self.size)]

    def _item(self, i: int) -> QAItem:
        rng = random.Random(f"dmr:{self.seed}:{i}")
        facts = [(what, rng.choice(values)) for what, values in rng.sample(FACTS, SESSIONS)]
        asked = rng.randrange(2)  # a fact of session 1 or 2: long gone from the window
        day0 = 1_700_000_000.0 + rng.randrange(0, 86400 * 365)
        history: list[Turn] = []
        evidence: list[int] = []
        last_session_start = 0
        for s, (what, value) in enumerate(facts):
            at = day0 + s * 86400 * 3
            last_session_start = len(history)
            talk = [_small_talk(rng) for _ in range(EXCHANGES)]
            fact_at = rng.randrange(EXCHANGES)
            for e, (user, bot) in enumerate(talk):
                if e == fact_at:
                    if s == asked:
                        evidence.append(len(history))
                    user = f"{user} Oh, and something about me: my {what} is {value}."
                    bot = f"Thanks for telling me, I will remember that your {what} is {value}."
                history.append(Turn("user", user, at + 120 * e))
                history.append(Turn("assistant", bot, at + 120 * e + 60))
        what, value = facts[asked]
        return QAItem(
            id=f"dmr-{i}",
            question=f"In one of our earlier conversations I told you this: what is my {what}? "
            "Answer with just the answer.",
            answer=value,
            history=history,
            keep_in_window=len(history) - last_session_start,
            evidence=evidence,
            category=f"session {asked + 1}",
        )

    async def score(self, item: QAItem, reply: str, judge: Core | None) -> dict[str, float | None]:
        accuracy = (
            await scoring.judge(judge, item.question, item.answer, reply)
            if judge is not None
            else scoring.contains(reply, item.answer)
        )
        return {"accuracy": accuracy, "f1": scoring.token_f1(reply, item.answer)}
