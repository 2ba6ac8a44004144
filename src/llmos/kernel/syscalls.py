"""The syscall table: which handler serves each syscall type, and what a caller waits in.

The request types are declared where agents make them (`agent/syscalls.py`,
re-exported here); the handlers live in `kernel/handlers.py`. While a
process's turn is blocked in an llm or tool syscall, the process table shows
it as waiting for a core or a tool.

| syscall          | handler                  | a caller waits as |
|------------------|--------------------------|-------------------|
| `LLMSyscall`     | `SyscallHandlers.llm`    | `waiting_llm`     |
| `MemorySyscall`  | `SyscallHandlers.memory` | (running)         |
| `StorageSyscall` | `SyscallHandlers.storage`| (running)         |
| `ToolSyscall`    | `SyscallHandlers.tool`   | `waiting_tool`    |
| `AgentSyscall`   | `SyscallHandlers.agent`  | (inside its tool call) |
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from llmos.agent.syscalls import (
    AgentSyscall,
    LLMSyscall,
    MemorySyscall,
    StorageSyscall,
    Syscall,
    ToolSyscall,
)
from llmos.kernel.handlers import SyscallHandlers
from llmos.kernel.process import ProcState

__all__ = [
    "BLOCKED_IN",
    "AgentSyscall",
    "LLMSyscall",
    "MemorySyscall",
    "StorageSyscall",
    "Syscall",
    "ToolSyscall",
    "dispatch_table",
]

Handler = Callable[[Any], Awaitable[Any]]

#: the state of a process whose turn is blocked in a syscall of this type
BLOCKED_IN: dict[type[Syscall], ProcState] = {
    LLMSyscall: ProcState.WAITING_LLM,
    ToolSyscall: ProcState.WAITING_TOOL,
}


def dispatch_table(h: SyscallHandlers) -> dict[type[Syscall], Handler]:
    """Syscall type -> its handler."""
    return {
        LLMSyscall: h.llm,
        MemorySyscall: h.memory,
        StorageSyscall: h.storage,
        ToolSyscall: h.tool,
        AgentSyscall: h.agent,
    }
