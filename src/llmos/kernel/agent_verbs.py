"""The kernel's verbs on agents as a whole: create, list, show, change, delete, usage.

A mixin of `Kernel` (kernel/kernel.py), kept apart so the facade stays short.
Every verb finds the agent by name or id within its owner. Creating checks the
settings (`settings.py`) and that the fixed part of the window (system prompt,
tools, core memory) leaves room for messages; changing checks every edit before
making any; deleting holds the agent, so no turn of it is running meanwhile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.agent.prompts import load_prompt
from llmos.kernel.agents import default_embedder
from llmos.kernel.memory_verbs import check_block_edits
from llmos.kernel.settings import check_settings, merge_settings
from llmos.llm.registry import DEFAULT_MODEL
from llmos.memory.blocks import (
    DEFAULT_BLOCK_LIMIT,
    DEFAULT_HUMAN,
    DEFAULT_PERSONA,
    Block,
    CoreMemory,
)

if TYPE_CHECKING:
    from llmos.kernel.accounting import Accounting, SyscallStats, UsageTotals
    from llmos.kernel.agents import AgentStore
    from llmos.kernel.cores import CoreTable
    from llmos.kernel.process import Process
    from llmos.kernel.wake import Waker
    from llmos.llm.core import Core
    from llmos.memory.image import AgentImage
    from llmos.memory.window import CompiledWindow
    from llmos.storage.db import Database


class AgentVerbs:
    """Agent verbs of `Kernel`; the attributes below are the kernel's."""

    db: Database
    cores: CoreTable
    store: AgentStore
    waker: Waker
    accounting: Accounting

    if TYPE_CHECKING:

        def core(self, model: str, base_url: str | None = None) -> Core: ...
        def context(self, name_or_id: str, owner: str = "local") -> CompiledWindow: ...
        def budget(self, name_or_id: str, owner: str = "local") -> dict[str, int] | None: ...
        async def update_block(
            self, name_or_id: str, label: str, value: str, owner: str = "local"
        ) -> None: ...

    async def create_agent(
        self,
        name: str,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        persona: str | None = None,
        human: str | None = None,
        blocks_: dict[str, str] | None = None,
        block_limit: int = DEFAULT_BLOCK_LIMIT,
        context_window: int | None = None,
        layout: str = "stable",
        embedder: str | None = None,
        system_prompt: str | None = None,
        settings: dict[str, Any] | None = None,
        owner: str = "local",
    ) -> dict[str, Any]:
        """Create an agent and return its description. Raises AgentExists, InvalidRequest."""
        name = self.store.check_new(name, owner, layout)
        check_settings(settings or {}, context_window)
        window = await self.cores.window_for(self.core(model, base_url), context_window)
        if window < 1024:
            raise ValueError(f"context window of {window} tokens is too small (need >= 1024)")
        values = {"persona": persona or DEFAULT_PERSONA, "human": human or DEFAULT_HUMAN}
        values.update(blocks_ or {})
        for label, value in values.items():
            if len(value) > block_limit:
                raise ValueError(
                    f"block {label!r} has {len(value)} characters, over the limit of {block_limit}"
                )
        with self.db.begin() as conn:
            agent_id = self.store.insert(
                conn,
                owner=owner,
                name=name,
                memory=CoreMemory([Block(k, v, block_limit) for k, v in values.items()]),
                model=model,
                base_url=base_url,
                context_window=window,
                layout=layout,
                embedder=embedder or default_embedder(),
                system_prompt=system_prompt or load_prompt("system").replace("{name}", name),
                settings=dict(settings or {}),
            )
        image = self.image(agent_id, owner)
        fixed = self.context(agent_id, owner).total
        if fixed > 0.75 * (window - image.max_tokens):
            await self.delete_agent(agent_id, owner=owner)
            raise ValueError(
                f"the system prompt, tools and core memory take {fixed} tokens, too much of a "
                f"{window}-token window; use a larger --context-window or smaller blocks"
            )
        return image.describe()

    def list_agents(self, owner: str = "local") -> list[dict[str, Any]]:
        return self.store.list(owner)

    def agent_models(self) -> list[dict[str, Any]]:
        """(name, model, base_url, context_window) of every agent: what `llmos models` lists."""
        return self.store.models()

    def image(self, name_or_id: str, owner: str = "local") -> AgentImage:
        """The agent's in-memory image, loaded from the database if needed."""
        return self.waker.image(name_or_id, owner)

    def process(self, name_or_id: str, owner: str = "local") -> tuple[Process, AgentImage]:
        return self.waker.process(name_or_id, owner)

    def get_agent(self, name_or_id: str, owner: str = "local") -> dict[str, Any]:
        image = self.image(name_or_id, owner)
        usage = self.agent_usage(image.id).as_dict()
        return image.describe() | {"usage": usage, "budget": self.budget(image.id, owner)}

    async def update_agent(
        self,
        name_or_id: str,
        owner: str = "local",
        *,
        blocks: dict[str, str] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Change blocks and settings (a setting given as None resets it), all or nothing.

        Every edit is checked before any is made; block edits reach the agent
        as events (`update_block`). Raises InvalidRequest, MemoryEditError."""
        proc, image = self.process(name_or_id, owner)
        edits = dict(blocks or {})
        check_block_edits(image, edits)
        if settings is not None:
            check_settings(merge_settings(image.settings, settings), image.context_window)
        for label, value in edits.items():
            if image.memory.blocks[label].value != value:
                await self.update_block(image.id, label, value, owner=owner)
        if settings is not None:
            async with self.waker.hold(proc):
                image = self.image(image.id, owner)  # it may have been reloaded meanwhile
                merged = merge_settings(image.settings, settings)
                with self.db.begin() as conn:
                    self.store.update(conn, image.id, settings=dict(merged))
                image.settings.clear()
                image.settings.update(merged)
        return self.get_agent(image.id, owner)

    async def delete_agent(self, name_or_id: str, owner: str = "local") -> None:
        proc, image = self.process(name_or_id, owner)
        async with self.waker.hold(proc):
            self.store.delete(image.id)
            await self.cores.forget_agent(image.id)  # its saved prompt states, on disk too
            self.waker.forget(image)
            self.accounting.forget(image.id)

    def agent_usage(self, agent_id: str) -> UsageTotals:
        """The agent's LLM usage over its lifetime (stored totals plus this session's)."""
        return self.accounting.usage(agent_id)

    def usage_of(self, agent_id: str) -> SyscallStats:
        return self.accounting.of(agent_id)
