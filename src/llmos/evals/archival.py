"""Archival retrieval quality: recall@5 and MRR of an agent's archival search on a labelled set.

The passages of `archival_set.py` go into a fresh agent's archival memory;
each query runs through `Kernel.search_archival` — the same storage syscall
`archival_memory_search` makes — asking for the whole ranking. No model is
called (the agent's embedder is). Per query:

- recall@5: the share of the passages that answer it found in the first five;
- reciprocal rank: 1 / the rank of the first passage that answers it (MRR is the mean);
- returned: how many passages the search reports matching, of the whole store
  (every passage, every time, means there is no relevance cut-off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmos.evals.archival_set import PASSAGES, QUERIES

if TYPE_CHECKING:
    from llmos.evals.harness import Settings
    from llmos.kernel.kernel import Kernel
    from llmos.llm.core import Core

K = 5


@dataclass(slots=True)
class Query:
    id: str
    text: str
    relevant: list[int]


class ArchivalRetrieval:
    name = "archival"
    metrics = ("recall@5", "mrr", "returned")
    modes = ("retrieval",)

    def __init__(self) -> None:
        self._agent: str | None = None
        self._ids: dict[int, int] = {}  # passage id in the store -> index in PASSAGES

    def identity(self) -> dict[str, Any]:
        return {"passages": len(PASSAGES), "queries": len(QUERIES)}

    def items(self) -> list[Query]:
        return [Query(f"q{i}", q, rel) for i, (q, rel) in enumerate(QUERIES)]

    async def _store(self, kernel: Kernel, settings: Settings) -> str:
        if self._agent is None:
            name = "eval-archival"
            await kernel.create_agent(
                name,
                model=settings.model,
                base_url=settings.base_url,
                context_window=settings.context_window,
                embedder=settings.embedder,
            )
            ids = await kernel.insert_archival(name, list(PASSAGES))
            self._ids = {pid: i for i, pid in enumerate(ids)}
            self._agent = name
        return self._agent

    async def run(
        self, kernel: Kernel, settings: Settings, item: Query, mode: str, judge: Core | None
    ) -> dict[str, Any]:
        agent = await self._store(kernel, settings)
        found, total = await kernel.search_archival(agent, item.text, page_size=len(PASSAGES))
        ranking = [self._ids[p.id] for p in found]
        relevant = set(item.relevant)
        first = next((r for r, i in enumerate(ranking, 1) if i in relevant), None)
        return {
            "query": item.text,
            "relevant": item.relevant,
            "top5": ranking[:K],
            "recall@5": len(relevant & set(ranking[:K])) / len(relevant),
            "mrr": 1 / first if first else 0.0,
            "returned": total,
        }
