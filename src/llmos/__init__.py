"""llmos — an operating system for LLM agents.

The LLM is the CPU, the context window is RAM, recall and archival storage are
the disk, agents are processes, and everything an agent does goes through the
kernel by syscalls. The public API is what this module exports.
"""

from llmos.agent.loop import Turn
from llmos.kernel.kernel import AgentExists, AgentNotFound, Kernel, MessageTooLong
from llmos.llm.core import ChatRequest, ChatResponse, Core, Message, ToolCall, ToolSpec, Usage

__all__ = [
    "AgentExists",
    "AgentNotFound",
    "ChatRequest",
    "ChatResponse",
    "Core",
    "Kernel",
    "Message",
    "MessageTooLong",
    "ToolCall",
    "ToolSpec",
    "Turn",
    "Usage",
]
__version__ = "0.1.0"
