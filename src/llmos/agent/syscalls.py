"""Syscalls: the typed requests an agent makes, and the kernel interface it makes them through.

An agent never calls a core, a store or a tool directly: its loop and its
functions build one of the request types below and hand it to
`KernelInterface.syscall`. The kernel (`kernel/syscalls.py`) looks the type
up in its dispatch table and runs the handler. Every syscall records when it
was queued, started and finished, and its tokens, so the kernel can report
per-agent and per-core totals.

| syscall          | what it does                                         |
|------------------|------------------------------------------------------|
| `LLMSyscall`     | one completion on a core, through its run queue      |
| `MemorySyscall`  | recall search (by words or dates)                    |
| `StorageSyscall` | archival search, embeddings                          |
| `ToolSyscall`    | one function call through the function executor      |
| `AgentSyscall`   | a message to another agent (grant-checked, hop-limited) |

A function call runs with a `FunctionContext`; the writes it wants made go in
its `StepWrites`, which the kernel commits with the step. `KernelInterface`
is everything `agent/` sees of the kernel: submit a
syscall, commit a step, the functions on offer, file an agent-written tool
for approval (`create_tool`), and the file store, grants and audit log the
file functions use. The kernel satisfies it; `agent/`
never imports `kernel/`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from llmos.access.audit import AuditLog
    from llmos.access.grants import Grants
    from llmos.llm.core import ChatRequest, Core, ToolCall, ToolSpec
    from llmos.memory.image import AgentImage
    from llmos.memory.recall import StoredMessage
    from llmos.storage.files import FileStore


@dataclass(slots=True)
class StepWrites:
    """Writes a step's functions want made, committed with the step's messages."""

    blocks: set[str] = field(default_factory=set)  # labels of edited blocks
    passages: list[tuple[str, Any]] = field(default_factory=list)  # (text, vector)
    settings: bool = False  # the agent's settings changed


@dataclass(slots=True)
class FunctionContext:
    """What a function call runs with: the kernel, the calling agent, the step's writes."""

    kernel: KernelInterface
    agent: AgentImage
    writes: StepWrites


@dataclass(slots=True, kw_only=True)
class Syscall:
    kind: ClassVar[str] = ""

    agent_id: str
    queued_at: float = field(default_factory=time.perf_counter)
    started_at: float = 0.0
    finished_at: float = 0.0
    tokens: int = 0

    def timings(self) -> dict[str, float]:
        return {
            "queued_s": round(max(0.0, self.started_at - self.queued_at), 6),
            "run_s": round(max(0.0, self.finished_at - self.started_at), 6),
        }


@dataclass(slots=True, kw_only=True)
class LLMSyscall(Syscall):
    kind: ClassVar[str] = "llm"

    core: Core
    request: ChatRequest
    priority: float = 0.0  # used by the `priority` policy


@dataclass(slots=True, kw_only=True)
class MemorySyscall(Syscall):
    kind: ClassVar[str] = "memory"

    op: str  # "recall_search" | "recall_search_date"
    args: dict[str, Any]


@dataclass(slots=True, kw_only=True)
class StorageSyscall(Syscall):
    kind: ClassVar[str] = "storage"

    op: str  # "archival_search" | "embed"
    args: dict[str, Any]


@dataclass(slots=True, kw_only=True)
class ToolSyscall(Syscall):
    kind: ClassVar[str] = "tool"

    ctx: FunctionContext
    call: ToolCall


@dataclass(slots=True, kw_only=True)
class AgentSyscall(Syscall):
    kind: ClassVar[str] = "agent"

    op: str  # "send" (fire-and-forget) | "ask" (wait for the reply)
    args: dict[str, Any]  # caller (AgentImage), target (a name), message


class KernelInterface(Protocol):
    """What an agent's loop and functions may ask of the kernel."""

    files: FileStore
    grants: Grants
    audit_log: AuditLog

    async def syscall(self, call: Syscall) -> Any:
        """Serve one syscall; a process blocked in it shows as waiting."""
        ...

    async def commit_step(
        self,
        image: AgentImage,
        new_messages: list[StoredMessage],
        writes: StepWrites | None = None,
        agent_fields: dict[str, Any] | None = None,
    ) -> None:
        """Store a step's messages and effects atomically, then apply them to `image`."""
        ...

    def tool_specs(self, image: AgentImage) -> list[ToolSpec]:
        """The functions the agent's requests offer."""
        ...

    async def propose_tool(
        self,
        image: AgentImage,
        name: str,
        source: str,
        description: str,
        examples: list[dict[str, Any]],
    ) -> tuple[bool, str, str | None]:
        """Test an agent-written tool and file it for its owner's approval:
        (ok, message for the model, approval id)."""
        ...
