"""Core memory: the labelled, size-limited blocks that live in the context window.

A block is MemGPT's "core memory" section (`persona`, `human`, or any label a
user adds). Edits go through `CoreMemory.append` / `replace`, which enforce the
block's character limit and raise `MemoryEditError` with a message meant for
the model ("would exceed its limit by N characters …"), so the agent can
shorten its edit and try again.

Left out: persistence (the kernel writes the blocks a step changed when the
agent loop commits the step) and block sharing between agents.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmos.errors import InvalidRequest

DEFAULT_BLOCK_LIMIT = 2000
# What a new agent's blocks say when its creator gave none.
DEFAULT_PERSONA = (
    "I am a helpful, curious assistant with a long memory. I keep notes about the "
    "people I talk with and use them to help better over time."
)
DEFAULT_HUMAN = "Nothing is known about the user yet."


class MemoryEditError(InvalidRequest):
    """An edit the model asked for cannot be made; the message is for the model."""

    code = "memory_edit"


@dataclass(slots=True)
class Block:
    label: str
    value: str
    limit: int = DEFAULT_BLOCK_LIMIT

    def render(self) -> str:
        return (
            f'<{self.label} characters="{len(self.value)}/{self.limit}">\n'
            f"{self.value}\n</{self.label}>"
        )


class CoreMemory:
    """The agent's blocks, in display order."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks: dict[str, Block] = {b.label: b for b in blocks}

    def get(self, label: str) -> Block:
        try:
            return self.blocks[label]
        except KeyError:
            known = ", ".join(self.blocks) or "(none)"
            raise MemoryEditError(
                f"there is no core memory block labelled {label!r}; blocks are: {known}"
            ) from None

    def append(self, label: str, content: str) -> Block:
        block = self.get(label)
        new_value = f"{block.value}\n{content}" if block.value else content
        self._check_limit(block, new_value)
        block.value = new_value
        return block

    def replace(self, label: str, old_content: str, new_content: str) -> Block:
        block = self.get(label)
        if not old_content:
            raise MemoryEditError("old_content must not be empty; use core_memory_append to add")
        if old_content not in block.value:
            raise MemoryEditError(
                f"old_content was not found in block {label!r}; copy it exactly from core memory"
            )
        new_value = block.value.replace(old_content, new_content)
        self._check_limit(block, new_value)
        block.value = new_value
        return block

    def set(self, label: str, value: str) -> Block:
        block = self.get(label)
        self._check_limit(block, value)
        block.value = value
        return block

    @staticmethod
    def _check_limit(block: Block, new_value: str) -> None:
        if len(new_value) > block.limit:
            over = len(new_value) - block.limit
            raise MemoryEditError(
                f"edit rejected: block {block.label!r} would hold {len(new_value)} characters, "
                f"over its limit of {block.limit} by {over}; shorten the edit, or move "
                "details to archival memory with archival_memory_insert"
            )

    def render(self) -> str:
        return "\n".join(b.render() for b in self.blocks.values())
