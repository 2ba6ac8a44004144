"""Agent settings: their ranges and the rules between them, checked in one place.

`AgentSettings` is the schema of every setting a user may set: the loop's,
and the switches that offer an agent more kernel functions (`file_tools`,
`agent_tools`, `self_tools`) or size its file area (`file_quota`). The HTTP
API uses it as its request body; `parse_settings` reads `KEY=VALUE` text
through it (the CLI's `llmos agent set`); `check_settings` applies it and the
rules that relate settings to each other and to the agent's window. The
kernel runs that on every create and update, whichever face the request came
through. Defaults live with the image (`memory/image.py`, `DEFAULT_SETTINGS`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmos.errors import InvalidRequest
from llmos.memory.image import DEFAULT_SETTINGS


class AgentSettings(BaseModel):
    """The agent's loop settings; in an update, null resets one to its default."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int | None = Field(None, ge=1, le=100, description="steps per turn, at most")
    warning_fraction: float | None = Field(None, gt=0, le=1)
    flush_fraction: float | None = Field(None, gt=0, le=1)
    flush_target: float | None = Field(None, gt=0, lt=1)
    max_tokens: int | None = Field(None, ge=16, le=1 << 20, description="reserved for answers")
    temperature: float | None = Field(None, ge=0, le=2)
    priority: int | None = Field(None, ge=-1000, le=1000)
    memory_mode: Literal["self", "auto", "hybrid"] | None = Field(
        None,
        description="who moves memory: the model by function calls (self), the kernel "
        "by paging (auto), or both (hybrid); unset: the model profile's default",
    )
    file_tools: bool | None = Field(None, description="offer the file_* functions")
    agent_tools: bool | None = Field(
        None, description="offer send_message_to_agent (and ..._and_wait_for_reply)"
    )
    self_tools: bool | None = Field(
        None, description="offer create_tool: the agent writes tools its owner approves"
    )
    file_quota: int | None = Field(
        None, ge=0, le=1 << 34, description="bytes of the agent's file area (default 1 MB)"
    )
    extract_facts: bool | None = Field(
        None,
        description="small models in auto/hybrid memory: a short step extracts what the "
        "user states about themselves into core memory (one more model call on such turns)",
    )


#: values of `KEY=VALUE` that reset a setting to its default
RESET_WORDS = frozenset({"", "null", "none", "default"})


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """`["max_steps=5", "self_tools=true", "priority="]` as typed changes (None: reset).

    Raises InvalidRequest naming the bad pair, or an unknown key with the known ones."""
    raw: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidRequest(f"settings: want KEY=VALUE, got {pair!r}")
        if key not in AgentSettings.model_fields:
            known = ", ".join(AgentSettings.model_fields)
            raise InvalidRequest(f"settings: unknown setting {key!r}; known: {known}")
        value = value.strip()
        raw[key] = None if value.lower() in RESET_WORDS else value
    try:
        # lax mode reads "true", "5", "0.3" as the field's type
        parsed = AgentSettings.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise InvalidRequest(f"settings: {where}: {first['msg']}") from None
    return {key: getattr(parsed, key) for key in raw}


def merge_settings(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`current` with `changes` applied; a change to None resets that setting."""
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def check_settings(settings: dict[str, Any], context_window: int | None) -> None:
    """Raise InvalidRequest unless `settings` are valid for an agent with that window."""
    known = {k: v for k, v in settings.items() if k in AgentSettings.model_fields}
    try:
        AgentSettings.model_validate(known)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise InvalidRequest(f"settings: {where}: {first['msg']}") from None

    def get(key: str) -> Any:
        value = settings.get(key)
        return DEFAULT_SETTINGS.get(key) if value is None else value

    if get("flush_target") >= get("flush_fraction"):
        raise InvalidRequest("settings: flush_target must be below flush_fraction")
    if get("warning_fraction") > get("flush_fraction"):
        raise InvalidRequest("settings: warning_fraction must not exceed flush_fraction")
    max_tokens = settings.get("max_tokens")
    if max_tokens and context_window and max_tokens > context_window // 2:
        raise InvalidRequest("settings: max_tokens may be at most half the context window")
