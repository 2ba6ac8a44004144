"""The catalog: which kernel-provided functions an agent is offered, and which table runs a call.

Every agent has the built-ins (`functions.py`). The file functions
(`file_functions.py`) and the agent-message functions (`agent_functions.py`)
are offered only to agents whose settings switch them on (`file_tools`,
`agent_tools`; `self_tools` offers `create_tool`), so agents that never use
them do not pay for their schemas in every prompt. Any other name is a user
tool, run by `tools/executor.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.agent.agent_functions import AGENT_FUNCTIONS, AGENT_SPECS
from llmos.agent.file_functions import FILE_FUNCTIONS, FILE_SPECS
from llmos.agent.functions import (
    BUILTINS,
    SELF_TOOL_FUNCTIONS,
    SELF_TOOL_SPECS,
    TOOL_SPECS,
    Function,
)

if TYPE_CHECKING:
    from llmos.llm.core import ToolSpec


def offered_specs(settings: dict[str, Any]) -> list[ToolSpec]:
    """The kernel-provided functions' schemas for an agent with these settings."""
    specs = TOOL_SPECS
    if settings.get("file_tools"):
        specs = [*specs, *FILE_SPECS]
    if settings.get("agent_tools"):
        specs = [*specs, *AGENT_SPECS]
    if settings.get("self_tools"):
        specs = [*specs, *SELF_TOOL_SPECS]
    return specs


def function_table(name: str, settings: dict[str, Any]) -> dict[str, Function] | None:
    """The table of kernel-provided functions that runs `name`; None: a user tool."""
    if name in BUILTINS:  # the fast path: in-process, no grant needed
        return BUILTINS
    if name.startswith("file_") and settings.get("file_tools"):
        return FILE_FUNCTIONS
    if name.startswith("send_message_to_agent") and settings.get("agent_tools"):
        return AGENT_FUNCTIONS
    if name in SELF_TOOL_FUNCTIONS and settings.get("self_tools"):
        return SELF_TOOL_FUNCTIONS
    return None
