"""The core table: the kernel's LLM cores, their replicas and run queues, and its embedders.

A core is found by the agent's model string and base URL (`model@base_url`),
made on first use by `llm/registry.py`, and kept for the kernel's life. A
comma-separated base URL names replicas of one model (two vLLM servers, say):
each has its own run queue and an llm syscall goes to the least loaded one.
Run queues are keyed by the core object, since two cores may share a name.
Embedders are kept the same way, by their spec. A deleted agent's saved
prompt states go with it (`forget_agent`): from the cores that keep them and
from `$LLMOS_HOME/kv/agents`, where the embedded model persists them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from llmos.kernel.accounting import ratio
from llmos.kernel.scheduler import RunQueue
from llmos.llm.kvstore import default_kv_dir, forget_agent_files
from llmos.llm.registry import make_core

if TYPE_CHECKING:
    from llmos.llm.core import Core
    from llmos.memory.embedders import Embedder


class CoreTable:
    """Cores by model string, their replicas and run queues; embedders by spec."""

    def __init__(
        self,
        cores: dict[str, Core] | None,
        embedders: dict[str, Embedder] | None,
        policy: str,
        quantum: int,
    ) -> None:
        # Tests and users of the Python API may pass ready-made cores under the model name.
        self.cores: dict[str, Core] = dict(cores or {})
        self.queues: dict[int, RunQueue] = {}
        self.replicas: dict[int, list[Core]] = {}
        self.embedders: dict[str, Embedder] = dict(embedders or {})
        self.policy = policy
        self.quantum = quantum

    @staticmethod
    def key(model: str, base_url: str | None) -> str:
        return f"{model}@{base_url}" if base_url else model

    def add(
        self,
        core: Core,
        model: str | None = None,
        base_url: str | None = None,
        replicas: list[Core] | None = None,
    ) -> None:
        self.cores[self.key(model or core.name, base_url)] = core
        if replicas:
            self.replicas[id(core)] = [core, *replicas]

    def get(self, model: str, base_url: str | None = None) -> Core:
        key = self.key(model, base_url)
        core = self.cores.get(key) or self.cores.get(model)
        if core is None:
            urls = [u.strip() for u in base_url.split(",")] if base_url else [None]
            made = [make_core(model, base_url=u) for u in urls if u != ""]
            core = self.cores[key] = made[0]
            if len(made) > 1:
                self.replicas[id(core)] = made
        return core

    async def window_for(self, core: Core, requested: int | None) -> int:
        """The context window an agent on `core` gets when it asks for `requested` (or None)."""
        probe = getattr(core, "probe", None)
        if probe is None:
            # A local core's window is the context it was loaded with.
            return min(requested or core.context_window, core.context_window)
        # A remote core: ask the server for its window (best effort, and never
        # long: an unreachable server must not stall agent creation). A window
        # given by the user overrides what the core assumes.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(probe(), 5)
        return requested or core.context_window

    def queue(self, core: Core) -> RunQueue:
        q = self.queues.get(id(core))
        if q is None:
            q = self.queues[id(core)] = RunQueue(core, policy=self.policy, quantum=self.quantum)
        return q

    def set_policy(
        self, core: Core, policy: str, *, quantum: int | None = None, aging: float = 1.0
    ) -> RunQueue:
        old = self.queues.get(id(core))
        if old is not None and (old.running or old.queued):
            raise RuntimeError(f"core {core.name} is busy; change its policy when idle")
        q = RunQueue(core, policy=policy, quantum=quantum or self.quantum, aging=aging)
        self.queues[id(core)] = q
        return q

    def pick_queue(self, core: Core) -> RunQueue:
        """The run queue an llm syscall for `core` joins: its own, or its least loaded replica's."""
        replicas = self.replicas.get(id(core))
        if not replicas:
            return self.queue(core)
        return min((self.queue(c) for c in replicas), key=lambda q: q.load)

    def embedder(self, spec: str) -> Embedder:
        emb = self.embedders.get(spec)
        if emb is None:
            from llmos.memory.embedders import make_embedder

            emb = self.embedders[spec] = make_embedder(spec)
        return emb

    def stats(self) -> list[dict[str, Any]]:
        rows = []
        for q in self.queues.values():
            row = q.stats()
            prompt = int(row.get("prompt_tokens") or 0)  # type: ignore[call-overload]
            cached = int(row.get("cached_prompt_tokens") or 0)  # type: ignore[call-overload]
            row["cache_hit_rate"] = ratio(cached, prompt)
            rows.append(row)
        return rows

    def _all(self) -> list[Core]:
        every = [*self.cores.values(), *(c for cs in self.replicas.values() for c in cs)]
        return list({id(c): c for c in every}.values())

    async def forget_agent(self, agent_id: str) -> None:
        """Drop a deleted agent's saved prompt states: in the cores that keep them,
        and its files on disk even when no core in this process loaded the model.
        In a thread: a core's lock may be held by a generation for seconds."""
        for core in self._all():
            forget = getattr(core, "forget_agent", None)
            if forget is not None:
                await asyncio.to_thread(forget, agent_id)
        await asyncio.to_thread(forget_agent_files, default_kv_dir() / "agents", agent_id)

    async def aclose(self) -> None:
        for core in self._all():
            await core.aclose()
