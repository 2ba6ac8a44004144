"""The shared shape of the question-answering tasks: ask (agent or plain chat), then score.

A task subclasses `QATask`, builds its `QAItem`s in `items()` and says how a
reply is scored in `score()`; `run()` does the rest for either mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.evals import scoring
from llmos.evals.harness import QAItem, ask_agent, ask_plain

if TYPE_CHECKING:
    from llmos.evals.harness import Settings
    from llmos.kernel.kernel import Kernel
    from llmos.llm.core import Core


class QATask:
    name = "qa"
    metrics: tuple[str, ...] = ("contains", "exact", "f1")
    modes: tuple[str, ...] = ("memory",)

    def identity(self) -> dict[str, Any]:
        return {}

    def items(self) -> list[QAItem]:
        raise NotImplementedError

    async def score(self, item: QAItem, reply: str, judge: Core | None) -> dict[str, float | None]:
        return {
            "contains": scoring.contains(reply, item.answer),
            "exact": scoring.exact_match(reply, item.answer),
            "f1": scoring.token_f1(reply, item.answer),
        }

    async def run(
        self, kernel: Kernel, settings: Settings, item: QAItem, mode: str, judge: Core | None
    ) -> dict[str, Any]:
        if mode == "baseline":
            got = await ask_plain(kernel, settings, item)
        else:
            got = await ask_agent(kernel, settings, item)
        scores = await self.score(item, got["reply"], judge)
        return {
            "category": item.category,
            "question": item.question,
            "answer": item.answer,
            **got,
            **scores,
        }
