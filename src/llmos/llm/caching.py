"""Turns and cache breakpoints: what the Anthropic and Bedrock adapters share.

Both providers take a system prompt apart from the conversation, want the
conversation as strictly alternating user/assistant turns made of content
blocks (text, tool use, tool result), and cache a prompt prefix only where the
request marks a breakpoint (Anthropic's `cache_control`, Bedrock's
`cachePoint`). This module turns llmos's OpenAI-shaped messages into that
neutral form once, so each adapter only renders blocks in its own JSON:

* `to_turns(messages, volatile)`: tool results become user-side blocks,
  consecutive messages of one role merge into one turn, empty texts drop out,
  a conversation that starts with the assistant gets a fixed opening user turn
  (after a flush the window may start there), a tool result whose call left
  the window becomes plain text, and a call without a recorded result gets a
  placeholder result (both providers reject either orphan).
* `system_blocks(request)` and `mark_last_stable(turns)`: where the
  breakpoints go. The window is ordered from most to least stable (see
  `memory/window.py`), so the boundaries are (1) the end of the base prompt,
  `system_parts[0]` — with the tools, which providers put before the system
  text, it changes only when the agent's prompt or tools do; (2) the end of
  the whole system message — core memory and summary change only at a
  compaction; (3) the last message block that is not a volatile alert — the
  FIFO is append-only, so the next request starts with this one's prefix and
  reads what this breakpoint wrote. That is three breakpoints, within
  Anthropic's and Bedrock's limit of four (`MAX_BREAKPOINTS`).

Left out: images and documents (llmos sends text only), Anthropic's 1-hour
cache TTL, and guessing whether a prefix reaches the provider's minimum
cacheable length (a breakpoint below it is simply not cached; it costs nothing).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from llmos.llm.core import ChatRequest, Message

__all__ = [
    "MAX_BREAKPOINTS",
    "OPENING_TEXT",
    "Block",
    "Turn",
    "mark_last_stable",
    "safe_id",
    "system_blocks",
    "to_turns",
]

#: Anthropic and Bedrock (Claude, Nova) both accept at most four breakpoints.
MAX_BREAKPOINTS = 4
#: The user turn put before a conversation that starts with the assistant.
OPENING_TEXT = "(The conversation so far is summarized above; it continues here.)"
MISSING_RESULT = "(no result was recorded for this call)"
_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(slots=True)
class Block:
    """One content block in provider-neutral form."""

    kind: Literal["text", "tool_use", "tool_result"]
    text: str = ""  # text, or a tool result's content
    id: str = ""  # tool_use / tool_result id
    name: str = ""  # the function's name
    input: dict[str, Any] = field(default_factory=dict)  # tool_use arguments
    volatile: bool = False  # from a trailing alert: never part of a cached prefix
    cache_after: bool = False  # a breakpoint right after this block


@dataclass(slots=True)
class Turn:
    role: Literal["user", "assistant"]
    blocks: list[Block] = field(default_factory=list)


def safe_id(raw: str | None, fallback: str) -> str:
    """A tool-call id both providers accept: [A-Za-z0-9_-], 1 to 64 characters.

    Deterministic, so a call and its result (and the next request's copy of
    them) map to the same id.
    """
    cleaned = _ID_CHARS.sub("_", raw or "")[:64]
    return cleaned or fallback


def _arguments(text: str) -> dict[str, Any]:
    """A call's raw JSON arguments as the object both providers require."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        # Malformed arguments (from another core, or a model's slip) are kept
        # as text rather than dropped: the model sees what it sent.
        return {"raw_arguments": text}
    return value if isinstance(value, dict) else {"value": value}


def to_turns(messages: Sequence[Message], volatile: int = 0) -> list[Turn]:
    """The non-system messages as alternating turns of blocks.

    `volatile` is how many trailing messages are volatile (alerts): their
    blocks are marked so no breakpoint lands on or after them.
    """
    body = [m for m in messages if m.role != "system"]
    first_volatile = len(body) - max(0, min(volatile, len(body)))
    turns: list[Turn] = []
    # ids of the calls in the latest assistant turn still waiting for results
    open_calls: dict[str, str] = {}

    def add(role: Literal["user", "assistant"], block: Block) -> None:
        if turns and turns[-1].role == role:
            turns[-1].blocks.append(block)
        else:
            turns.append(Turn(role, [block]))

    def close_open_calls() -> None:
        # A call whose result never came still needs one.
        for cid, name in list(open_calls.items()):
            add("user", Block("tool_result", MISSING_RESULT, id=cid, name=name))
        open_calls.clear()

    for i, msg in enumerate(body):
        vol = i >= first_volatile
        text = (msg.content or "").strip()
        if msg.role == "assistant":
            close_open_calls()
            if text:
                add("assistant", Block("text", text, volatile=vol))
            for n, call in enumerate(msg.tool_calls):
                cid = safe_id(call.id, f"call_{i}_{n}")
                add(
                    "assistant",
                    Block(
                        "tool_use",
                        id=cid,
                        name=call.name,
                        input=_arguments(call.arguments),
                        volatile=vol,
                    ),
                )
                open_calls[cid] = call.name
        elif msg.role == "tool":
            cid = safe_id(msg.tool_call_id, "")
            if cid and cid in open_calls:
                open_calls.pop(cid)
                add("user", Block("tool_result", text or "(empty)", id=cid, name=msg.name or ""))
            else:
                # Its call is not in the window: show the result as text.
                add("user", Block("text", f"[function result: {msg.name}] {text}", volatile=vol))
        else:  # user
            close_open_calls()
            if text:
                add("user", Block("text", text, volatile=vol))
    close_open_calls()

    # Providers require tool results before any text in a user turn.
    for turn in turns:
        if turn.role == "user":
            turn.blocks.sort(key=lambda b: b.kind != "tool_result")
    if turns and turns[0].role == "assistant":
        turns.insert(0, Turn("user", [Block("text", OPENING_TEXT)]))
    if not turns:
        turns.append(Turn("user", [Block("text", OPENING_TEXT)]))
    return turns


def system_blocks(request: ChatRequest) -> list[tuple[str, bool]]:
    """The system prompt as (text, breakpoint after it) pieces.

    Two pieces when `system_parts` matches the system message: the base
    prompt, then core memory and summary. Otherwise the system message as one
    piece with a breakpoint after it.
    """
    first = request.messages[0] if request.messages else None
    content = first.content if first is not None and first.role == "system" else None
    if not content:
        return []
    parts = [p for p in request.system_parts if p]
    if len(parts) >= 2 and "\n\n".join(parts) == content:
        return [(parts[0], True), ("\n\n".join(parts[1:]), True)]
    return [(content, True)]


def mark_last_stable(turns: list[Turn]) -> Block | None:
    """Put the message breakpoint on the last block that is not volatile; return it."""
    for turn in reversed(turns):
        for block in reversed(turn.blocks):
            if not block.volatile:
                block.cache_after = True
                return block
    return None


def count_breakpoints(system: list[tuple[str, bool]], turns: list[Turn]) -> int:
    return sum(1 for _, bp in system if bp) + sum(
        1 for t in turns for b in t.blocks if b.cache_after
    )
