"""llmos — an operating system for LLM agents.

The LLM is the CPU, the context window is RAM, recall and archival storage are
the disk, agents are processes, and everything an agent does goes through the
kernel by syscalls. The public API is what this module exports; names are
imported on first use so that `llmos --help` does not pay for the kernel.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmos.agent.loop import Turn
    from llmos.errors import LLMOSError
    from llmos.kernel.kernel import AgentExists, AgentNotFound, Kernel, MessageTooLong
    from llmos.llm.core import (
        ChatRequest,
        ChatResponse,
        Core,
        Message,
        ToolCall,
        ToolSpec,
        Usage,
    )

_EXPORTS = {
    "Turn": "llmos.agent.loop",
    "LLMOSError": "llmos.errors",
    "AgentExists": "llmos.kernel.kernel",
    "AgentNotFound": "llmos.kernel.kernel",
    "Kernel": "llmos.kernel.kernel",
    "MessageTooLong": "llmos.kernel.kernel",
    "ChatRequest": "llmos.llm.core",
    "ChatResponse": "llmos.llm.core",
    "Core": "llmos.llm.core",
    "Message": "llmos.llm.core",
    "ToolCall": "llmos.llm.core",
    "ToolSpec": "llmos.llm.core",
    "Usage": "llmos.llm.core",
}

__all__ = [
    "AgentExists",
    "AgentNotFound",
    "ChatRequest",
    "ChatResponse",
    "Core",
    "Kernel",
    "LLMOSError",
    "Message",
    "MessageTooLong",
    "ToolCall",
    "ToolSpec",
    "Turn",
    "Usage",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmos' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
