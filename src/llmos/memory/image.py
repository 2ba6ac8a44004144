"""The agent image: an agent's state loaded into memory.

`AgentImage` holds an agent's settings, core memory, recursive summary and
the messages in its context window, rebuilt from the database on demand (the
kernel's agent store, `kernel/agents.py`), so an idle agent costs a row, not an
object. The window compiler (`memory/window.py`) reads it; the agent loop and
its functions change it; the kernel commits the changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmos.llm.toolcalls import tools_text
from llmos.memory.blocks import CoreMemory

if TYPE_CHECKING:
    from llmos.llm.core import Core, ToolSpec
    from llmos.memory.recall import StoredMessage


DEFAULT_SETTINGS: dict[str, Any] = {
    "max_steps": 10,  # function-chaining steps per turn before the loop is cut
    "warning_fraction": 0.75,  # memory-pressure alert (MemGPT's value)
    "flush_fraction": 0.9,  # evict and summarize above this share of the budget
    "flush_target": 0.5,  # ... down to this share
    "max_tokens": None,  # reserved for the answer; None: window // 8, at most 1024
    "temperature": 0.0,
    "priority": 0,  # for cores scheduled by priority; higher runs first
    "memory_mode": None,  # "self" | "auto" | "hybrid"; None: the model profile's default
    "extract_facts": True,  # auto/hybrid, transcript protocol: a step extracts user facts
}


@dataclass(slots=True)
class AgentImage:
    id: str
    owner: str
    name: str
    model: str
    base_url: str | None
    context_window: int
    layout: str
    embedder: str
    system_prompt: str
    settings: dict[str, Any]
    summary: str
    window_start: int
    core_snapshot: str
    memory: CoreMemory
    window: list[StoredMessage]
    created_at: float
    recall_count: int = 0
    archival_count: int = 0
    warned: bool = False  # a memory-pressure alert was shown since the last flush
    # token counts of texts that rarely change (system prompt, snapshot), per core
    _counts: dict[tuple[str, int], int] = field(default_factory=dict)

    def setting(self, key: str) -> Any:
        value = self.settings.get(key)
        return DEFAULT_SETTINGS[key] if value is None else value

    @property
    def max_tokens(self) -> int:
        value = self.settings.get("max_tokens")
        return int(value) if value else min(1024, self.context_window // 8)

    @property
    def message_limit(self) -> int:
        """The most tokens one incoming message may take: half the budget left
        beside the answer, so a message that could never fit is refused."""
        return (self.context_window - self.max_tokens) // 2

    def count(self, core: Core, item: str | list[ToolSpec]) -> int:
        """Token count of a rarely-changing text or tool list, memoised."""
        if not item:
            return 0
        if isinstance(item, str):
            key = (core.name, hash(item))
            if key not in self._counts:
                self._counts[key] = core.count_tokens(item)
        else:
            key = (core.name, hash(tuple(t.name for t in item)))
            if key not in self._counts:
                self._counts[key] = core.count_tokens(tools_text(core, item))
        if len(self._counts) > 64:  # snapshots change at each compaction
            self._counts.pop(next(iter(self._counts)))
        return self._counts[key]

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "model": self.model,
            "base_url": self.base_url,
            "context_window": self.context_window,
            "layout": self.layout,
            "embedder": self.embedder,
            "blocks": [
                {"label": b.label, "value": b.value, "limit": b.limit}
                for b in self.memory.blocks.values()
            ],
            "summary": self.summary,
            "messages_in_window": len(self.window),
            "recall_count": self.recall_count,
            "archival_count": self.archival_count,
            "settings": {k: self.setting(k) for k in DEFAULT_SETTINGS}
            | {k: v for k, v in self.settings.items() if k not in DEFAULT_SETTINGS},
            "created_at": self.created_at,
        }
