"""Recursive summaries: what evicted messages leave behind in the window.

When the window is flushed, the evicted messages and the previous summary are
folded into a new summary by the agent's own core (`summarize`). If the text to
summarize is itself too large for one request, it is folded chunk by chunk:
summary_{k+1} = summarize(summary_k, chunk_k) — the recursion of MemGPT's
"recursive summary".

Left out: choosing what to evict (`window.eviction_point`) and writing the
result (the agent loop commits it with the flush).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from llmos.llm.core import ChatRequest, ChatResponse, Message
from llmos.memory.recall import StoredMessage

SUMMARY_INSTRUCTIONS = (
    "You maintain the running summary of an agent's conversation. Older messages are "
    "leaving the agent's context window. Write a new summary that merges the previous "
    "summary with these messages. Keep names, facts the user shared, decisions, open "
    "tasks and dates; drop pleasantries. Write in the third person, at most {words} words. "
    "Answer with the summary text only."
)

LLMCall = Callable[[ChatRequest], Awaitable[ChatResponse]]
Counter = Callable[[str], int]


def transcript_line(m: StoredMessage) -> str:
    if m.role == "tool":
        return f"[result of {m.name}] {m.content or ''}"
    parts = []
    if m.content:
        parts.append(f"{m.role}: {m.content}")
    for call in m.tool_calls:
        if call.name == "send_message":
            try:
                said = json.loads(call.arguments).get("message", call.arguments)
            except (ValueError, AttributeError):
                said = call.arguments
            parts.append(f"assistant (to user): {said}")
        else:
            parts.append(f"assistant called {call.name}({call.arguments})")
    return "\n".join(parts)


def _chunks(lines: list[str], count: Counter, limit: int) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        n = count(line)
        if n > limit:  # one enormous message: keep its head
            line = line[: limit * 3]
            n = count(line)
        if current and size + n > limit:
            chunks.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += n
    if current:
        chunks.append("\n".join(current))
    return chunks


async def summarize(
    llm: LLMCall,
    count: Counter,
    previous: str,
    evicted: list[StoredMessage],
    context_window: int,
    max_summary_tokens: int,
    cache_key: str | None = None,
) -> str:
    """Fold `evicted` into `previous`, in as many requests as the window needs."""
    words = max(40, int(max_summary_tokens * 0.6))
    instructions = SUMMARY_INSTRUCTIONS.format(words=words)
    # Room for the transcript: the window less instructions, previous summary,
    # the answer and a margin for chat framing.
    room = context_window - count(instructions) - 2 * max_summary_tokens - 64
    if room < 64:
        raise ValueError(f"context window of {context_window} tokens is too small to summarize")
    summary = previous
    for chunk in _chunks([transcript_line(m) for m in evicted], count, room):
        prompt = (
            f"Previous summary:\n{summary or '(none)'}\n\nMessages leaving the window:\n{chunk}"
        )
        response = await llm(
            ChatRequest(
                [Message("system", instructions), Message("user", prompt)],
                tools=[],
                max_tokens=max_summary_tokens,
                tool_choice="none",
                cache_key=cache_key,
            )
        )
        text = (response.content or "").strip()
        # A model that returns nothing must not erase what was evicted: fall
        # back to the transcript's head (the caller caps the summary's size).
        summary = text or f"{summary}\n{chunk}".strip()
    return summary
