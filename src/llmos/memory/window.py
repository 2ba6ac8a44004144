"""The context window — llmos's RAM — compiled for one step within a token budget.

Sections, from most to least stable (the "stable" layout of DESIGN.md):

1. system: the agent's prompt and the tool schemas;
2. core memory as rendered at the last compaction;
3. the recursive summary of evicted messages;
4. messages: the append-only FIFO (memory edits appear here as events);
5. alerts: volatile notices such as memory pressure, always last.

Consecutive steps of one agent therefore share their whole prompt up to the
newest messages, which is what provider prefix caches and llama.cpp's KV
reuse need. The "classic" layout re-renders current core memory and recall
statistics into the system message every step, as MemGPT does.

This module also decides eviction (how many of the oldest messages must leave
so the window drops to the flush target) and the last-resort trimming that
guarantees no request exceeds the budget by llmos's own count.

Left out: the summary text itself (`summarize.py`) and persistence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmos.errors import LLMOSError
from llmos.llm.core import ChatRequest, Message, ToolSpec
from llmos.llm.tokens import MESSAGE_OVERHEAD_TOKENS

if TYPE_CHECKING:
    from llmos.llm.core import Core
    from llmos.memory.image import AgentImage
    from llmos.memory.recall import StoredMessage

SECTIONS = ("system", "tools", "core_memory", "summary", "messages", "alerts")
TRUNCATION_MARK = "\n[… truncated to fit the context window; the full text is in recall memory]"


@dataclass(slots=True)
class CompiledWindow:
    request: ChatRequest
    sections: dict[str, int]
    budget: int  # prompt tokens allowed: the window less the reserved output
    context_window: int
    messages_in_window: int
    trimmed: int = 0  # messages shortened to fit (last resort)
    alerts: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.sections.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "context_window": self.context_window,
            "budget": self.budget,
            "total": self.total,
            "free": max(0, self.context_window - self.total),
            "sections": dict(self.sections),
            "messages_in_window": self.messages_in_window,
            "trimmed": self.trimmed,
            "alerts": list(self.alerts),
        }


def message_tokens(core: Core, message: Message) -> int:
    return core.count_tokens(message.text_for_count()) + MESSAGE_OVERHEAD_TOKENS


def render_core_memory(agent: AgentImage, classic: bool) -> str:
    if classic:
        body = agent.memory.render()
        stats = (
            f"{agent.recall_count} previous messages are in recall memory; "
            f"{agent.archival_count} passages are in archival memory."
        )
        return f"### Core memory\n{body}\n\n### Memory statistics\n{stats}"
    return f"### Core memory (as of the last compaction)\n{agent.core_snapshot}"


def render_summary(agent: AgentImage) -> str:
    if not agent.summary:
        return ""
    return (
        "### Summary of earlier conversation (evicted from the window; "
        f"the full messages are in recall memory)\n{agent.summary}"
    )


def compile_window(
    agent: AgentImage,
    core: Core,
    tools: list[ToolSpec],
    alerts: list[str],
    max_tokens: int,
    *,
    trim: bool = True,
) -> CompiledWindow:
    """Build the request for the agent's next step and account for its tokens.

    With `trim` (the default) a window over budget has its longest messages
    shortened in the request until it fits; `trim=False` only measures."""
    classic = agent.layout == "classic"
    base = agent.system_prompt
    core_text = render_core_memory(agent, classic)
    summary_text = render_summary(agent)
    system_parts = [p for p in (base, core_text, summary_text) if p]
    system_content = "\n\n".join(system_parts)

    sections = {
        "system": agent.count(core, base) + MESSAGE_OVERHEAD_TOKENS,
        "tools": agent.count(core, tools),
        "core_memory": agent.count(core, core_text),
        "summary": agent.count(core, summary_text),
        "messages": sum(m.tokens for m in agent.window),
        "alerts": 0,
    }
    messages = [Message("system", system_content)]
    messages.extend(m.to_message() for m in agent.window)
    for alert in alerts:
        msg = Message("user", f"[system alert] {alert}")
        messages.append(msg)
        sections["alerts"] += message_tokens(core, msg)

    budget = agent.context_window - max_tokens
    window = CompiledWindow(
        request=ChatRequest(
            messages,
            tools,
            max_tokens=max_tokens,
            cache_key=agent.id,
            system_parts=system_parts,
            volatile_messages=len(alerts),
        ),
        sections=sections,
        budget=budget,
        context_window=agent.context_window,
        messages_in_window=len(agent.window),
        alerts=list(alerts),
    )
    if trim and window.total > budget:
        _trim_to_budget(window, core)
    return window


def _trim_to_budget(window: CompiledWindow, core: Core) -> None:
    """Last resort when eviction could not free enough: shorten the longest
    messages of this request (never the stored ones) until it fits."""
    msgs = window.request.messages
    while window.total > window.budget:
        # Index 0 is the system message; everything else may be shortened.
        idx = max(range(1, len(msgs)), key=lambda i: len(msgs[i].content or ""), default=None)
        if idx is None or len(msgs[idx].content or "") <= len(TRUNCATION_MARK) + 16:
            raise ContextOverflow(
                f"the fixed part of the window ({window.total} tokens) exceeds the budget "
                f"of {window.budget}; shrink core memory or use a model with a larger window"
            )
        msg = msgs[idx]
        before = message_tokens(core, msg)
        over = window.total - window.budget
        content = msg.content or ""
        # Cut proportionally to the overshoot, at least a quarter, so this ends fast.
        keep = max(0, min(len(content) * 3 // 4, len(content) - int(over * 4.5) - 16))
        msgs[idx] = Message(
            msg.role, content[:keep] + TRUNCATION_MARK, msg.tool_calls, msg.tool_call_id, msg.name
        )
        after = message_tokens(core, msgs[idx])
        key = "alerts" if idx >= len(msgs) - len(window.alerts) else "messages"
        window.sections[key] -= before - after
        window.trimmed += 1


class ContextOverflow(LLMOSError, RuntimeError):
    """Even an empty conversation would not fit: the agent's configuration is wrong."""


def eviction_point(window: list[StoredMessage], fixed_tokens: int, target: int) -> int:
    """How many of the oldest window messages to evict so the prompt drops to `target`.

    The cut only falls before a message that is not a tool result (a result
    without its call is invalid for every provider), and the newest message
    group always stays.
    """
    remaining = sum(m.tokens for m in window)
    boundaries = [i for i, m in enumerate(window) if i > 0 and m.role != "tool"]
    cut = 0
    for i in boundaries:
        if fixed_tokens + remaining <= target:
            break
        remaining -= sum(m.tokens for m in window[cut:i])
        cut = i
    return cut
