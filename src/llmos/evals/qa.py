"""The shared shape of the question-answering tasks: ask (agent or plain chat), then score.

A task subclasses `QATask`, builds its `QAItem`s in `items()` and says how a
reply is scored in `score()`; `run()` does the rest for either mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.evals import datafile, scoring
from llmos.evals.harness import QAItem, ask_agent, ask_plain

if TYPE_CHECKING:
    from pathlib import Path

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


class FileQATask(QATask):
    """A QA task read from a data file the user supplies (LoCoMo, LongMemEval)."""

    fmt = "data"  # the format's name, in errors
    nothing = "questions"  # what a file without any has none of, in errors

    def __init__(self, path: Path, size: int | None = None) -> None:
        self.path, self.size = path, size
        self._items = self._parse(datafile.load_json(path, self.fmt))
        if not self._items:
            raise datafile.EvalDataError(f"{path}: no {self.nothing} in it")

    def identity(self) -> dict[str, Any]:
        return {"data": str(self.path), "sha256": datafile.digest(self.path), "size": self.size}

    def items(self) -> list[QAItem]:
        return self._items[: self.size] if self.size else self._items

    def _parse(self, data: Any) -> list[QAItem]:
        raise NotImplementedError
