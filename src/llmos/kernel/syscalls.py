"""Syscalls: the typed requests agents make to the kernel, and the one table that lists them.

An agent never calls a core, a store or a tool directly: it builds one of the
request types below and hands it to `Kernel.syscall`, which looks the type up
in `DISPATCH` and runs the kernel method named there. Every syscall records
when it was queued, started and finished, and its tokens, so the kernel can
report per-agent and per-core totals.

| syscall          | what it does                                         |
|------------------|------------------------------------------------------|
| `LLMSyscall`     | one completion on a core, through its run queue      |
| `MemorySyscall`  | recall search (by words or dates), core memory edits |
| `StorageSyscall` | archival search, embeddings                          |
| `ToolSyscall`    | one function call through the function executor      |
| `AgentSyscall`   | a message to another agent (grant-checked, hop-limited) |

A `ToolSyscall` of a built-in runs in-process; any other name goes to
`tools/executor.py`, which checks the agent's grant (an attached tool),
holds irreversible calls for approval, runs the sandbox and audits. An
`AgentSyscall` is served by `kernel/messaging.py`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmos.agent.functions import FunctionContext
    from llmos.llm.core import ChatRequest, Core, ToolCall


@dataclass(slots=True, kw_only=True)
class Syscall:
    agent_id: str
    queued_at: float = field(default_factory=time.perf_counter)
    started_at: float = 0.0
    finished_at: float = 0.0
    tokens: int = 0

    @property
    def kind(self) -> str:
        return KIND[type(self)]

    def timings(self) -> dict[str, float]:
        return {
            "queued_s": round(max(0.0, self.started_at - self.queued_at), 6),
            "run_s": round(max(0.0, self.finished_at - self.started_at), 6),
        }


@dataclass(slots=True, kw_only=True)
class LLMSyscall(Syscall):
    core: Core
    request: ChatRequest
    priority: float = 0.0  # used by the `priority` policy


@dataclass(slots=True, kw_only=True)
class MemorySyscall(Syscall):
    op: str  # "recall_search" | "recall_search_date"
    args: dict[str, Any]


@dataclass(slots=True, kw_only=True)
class StorageSyscall(Syscall):
    op: str  # "archival_search" | "embed"
    args: dict[str, Any]


@dataclass(slots=True, kw_only=True)
class ToolSyscall(Syscall):
    ctx: FunctionContext
    call: ToolCall


@dataclass(slots=True, kw_only=True)
class AgentSyscall(Syscall):
    op: str  # "send" (fire-and-forget) | "ask" (wait for the reply)
    args: dict[str, Any]  # caller (AgentImage), target (a name), message


#: syscall type -> name of the Kernel method that serves it.
DISPATCH: dict[type[Syscall], str] = {
    LLMSyscall: "sys_llm",
    MemorySyscall: "sys_memory",
    StorageSyscall: "sys_storage",
    ToolSyscall: "sys_tool",
    AgentSyscall: "sys_agent",
}

KIND: dict[type[Syscall], str] = {
    LLMSyscall: "llm",
    MemorySyscall: "memory",
    StorageSyscall: "storage",
    ToolSyscall: "tool",
    AgentSyscall: "agent",
}
