"""The context window rendered as a plain transcript: how small and base models see an agent.

A base model (no chat template) cannot follow MemGPT's system prompt and
function schemas, but it can continue a conversation. `compile_transcript`
renders the agent's window as one, most stable part first so consecutive
steps share their prefix:

1. a one-line preamble and a few example exchanges showing real replies;
2. core memory as short prose (the assistant's notes about itself and the
   user; blocks still at their default text are left out);
3. the summary of evicted messages;
4. the recent exchanges as "User: …" / "Assistant: …" lines;
5. what the kernel paged in from memory for this message (volatile), just
   before the user's newest line, and an open "Assistant:" line.

The reply is decoded as one line of text: `REPLY_GRAMMAR` makes it non-empty
and keeps it from opening with JSON or markup, and `STOP` ends it before the
model writes the user's next line. `clean_reply` is the last guard. Models
with a chat template get the same parts as chat messages instead.

Left out: memory operations written by the model (in this protocol the kernel
pages memory in, `agent/paging.py`), and the function-calling window
(`memory/window.py`).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from llmos.llm.core import ChatRequest, Message
from llmos.llm.tokens import MESSAGE_OVERHEAD_TOKENS
from llmos.memory.blocks import DEFAULT_HUMAN, DEFAULT_PERSONA
from llmos.memory.window import CompiledWindow, ContextOverflow

if TYPE_CHECKING:
    from llmos.llm.core import Core
    from llmos.memory.image import AgentImage
    from llmos.memory.recall import StoredMessage

__all__ = [
    "EXAMPLES",
    "FALLBACK_REPLY",
    "REPLY_GRAMMAR",
    "REPLY_MAX_TOKENS",
    "STOP",
    "clean_reply",
    "compile_transcript",
    "exchanges",
]

PREAMBLE = (
    "Below is a chat between a user and an assistant. The assistant is friendly and "
    "helpful, and answers in one or two short sentences."
)
# Real replies, short: a small model copies the shape of what it sees.
# Measured on Gemma 3 270M: a hobby or a name question in the examples leaks
# into answers ("What is my favorite sport?" -> "I like chess.").
EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Hi! I'm Tom.", "Hello Tom! Nice to meet you."),
    ("What color is the sky?", "The sky is blue."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
    (
        "Tell me a joke about dogs.",
        "Why did the dog sit in the shade? Because it did not want to be a hot dog!",
    ),
)
NEW_CHAT = "(A new chat begins.)"
USER, ASSISTANT = "User:", "Assistant:"

# One line of text that does not open with whitespace, JSON or markup; the
# optional newline lets the model end the line itself.
REPLY_GRAMMAR = r"""root ::= " "? first rest "\n"?
first ::= [^ \t\r\n{}<>\[\]]
rest ::= [^\r\n]*
"""
STOP = ["\n", "User:"]
REPLY_MAX_TOKENS = 96
FALLBACK_REPLY = "Sorry, I did not catch that. Could you say it another way?"

_CALL_LIKE = re.compile(r"^[a-z]+(?:_[a-z]+)+\s*\(")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def exchanges(window: list[StoredMessage]) -> list[tuple[str, str]]:
    """The window as (speaker, text) lines: what the user said and the replies.

    Function calls other than `send_message`, their results and inner
    thoughts are plumbing a small model cannot use: left out."""
    lines: list[tuple[str, str]] = []
    for m in window:
        if m.role == "user" and m.content:
            lines.append((USER, _one_line(m.content)))
        elif m.role == "assistant":
            said = []
            for call in m.tool_calls:
                if call.name != "send_message":
                    continue
                try:
                    said.append(str(json.loads(call.arguments).get("message", "")))
                except (ValueError, AttributeError):
                    continue
            if not m.tool_calls and m.content:
                said.append(m.content)
            for text in said:
                if text.strip():
                    lines.append((ASSISTANT, _one_line(text)))
    return lines


def _notes(agent: AgentImage) -> str:
    """Core memory as one line of prose, without blocks that still hold their
    default text (measured on Gemma 3 270M: boilerplate notes cost it about one
    everyday question in ten, and "nothing is known about the user" contradicts
    what paging brings in)."""
    out = []
    for block in agent.memory.blocks.values():
        value = _one_line(block.value)
        if not value or value in (DEFAULT_PERSONA, DEFAULT_HUMAN):
            continue
        if block.label == "persona":
            out.append(f"About the assistant: {value}")
        elif block.label == "human":
            out.append(f"About the user: {value}")
        else:
            out.append(f"{block.label}: {value}")
    return f"(The assistant's notes. {' '.join(out)})" if out else ""


def _head() -> str:
    examples = "\n".join(f"{USER} {q}\n{ASSISTANT} {a}" for q, a in EXAMPLES)
    return f"{PREAMBLE}\n\n{examples}\n\n{NEW_CHAT}"


def _paged_text(paged: list[str]) -> str:
    return "\n".join(f"(The assistant remembers: {_one_line(p)})" for p in paged)


def compile_transcript(
    agent: AgentImage,
    core: Core,
    paged: list[str],
    max_tokens: int,
    *,
    chat_template: bool,
    trim: bool = True,
) -> CompiledWindow:
    """The agent's next step as a transcript to continue, within the token budget.

    The messages section is counted as the stored messages' cost (an upper
    bound of their lines here), so eviction (`window.eviction_point`) plans
    with the same numbers as for the function-calling window."""
    head = _head()
    notes = _notes(agent)
    summary = f"Earlier in this chat: {_one_line(agent.summary)}" if agent.summary else ""
    volatile = _paged_text(paged)
    lines = exchanges(agent.window)

    sections = {
        "system": agent.count(core, head) + MESSAGE_OVERHEAD_TOKENS,
        "tools": 0,
        "core_memory": agent.count(core, notes),
        "summary": agent.count(core, summary),
        "messages": sum(m.tokens for m in agent.window),
        "alerts": core.count_tokens(volatile) if volatile else 0,
    }
    budget = agent.context_window - max_tokens
    fixed = sum(sections.values()) - sections["messages"]
    if trim and fixed > budget:
        raise ContextOverflow(
            f"the fixed part of the transcript ({fixed} tokens) exceeds the budget of "
            f"{budget}; shrink core memory or use a model with a larger window"
        )
    trimmed = 0
    if trim:
        # Last resort: drop the oldest lines of this request (never the stored messages).
        cost = [core.count_tokens(f"{who} {text}") + 1 for who, text in lines]
        while len(lines) > 1 and fixed + sum(cost) > budget:
            lines, cost = lines[1:], cost[1:]
            trimmed += 1
        if trimmed:
            sections["messages"] = sum(cost)

    prompt, messages = _render(head, notes, summary, volatile, lines, chat_template)
    reply_tokens = min(max_tokens, REPLY_MAX_TOKENS)
    request = ChatRequest(
        messages,
        [],
        max_tokens=reply_tokens,
        tool_choice="none",
        cache_key=agent.id,
        system_parts=[p for p in (head, notes, summary) if p],
        volatile_messages=0,
        prompt=None if chat_template else prompt,
        stop=list(STOP),
        grammar=REPLY_GRAMMAR,
    )
    return CompiledWindow(
        request=request,
        sections=sections,
        budget=budget,
        context_window=agent.context_window,
        messages_in_window=len(agent.window),
        trimmed=trimmed,
        alerts=list(paged),
    )


def _render(
    head: str,
    notes: str,
    summary: str,
    volatile: str,
    lines: list[tuple[str, str]],
    chat_template: bool,
) -> tuple[str, list[Message]]:
    """The transcript as plain text (base models) and as chat messages (the rest)."""
    # The newest user line is what the reply answers: paged memory goes just before it.
    last_user = max((i for i, (who, _) in enumerate(lines) if who == USER), default=len(lines))
    body: list[str] = []
    for i, (who, text) in enumerate(lines):
        if i == last_user and volatile:
            body.append(volatile)
        body.append(f"{who} {text}")
    if last_user == len(lines) and volatile:
        body.append(volatile)
    context = "\n".join(p for p in (notes, summary) if p)
    prompt = "\n".join(p for p in (head, context, *body) if p) + f"\n{ASSISTANT}"

    system = "\n\n".join(p for p in (PREAMBLE, notes, summary) if p)
    messages = [Message("system", system)]
    for q, a in EXAMPLES:
        messages += [Message("user", q), Message("assistant", a)]
    for i, (who, text) in enumerate(lines):
        role = "user" if who == USER else "assistant"
        if i == last_user and volatile:
            text = f"{volatile}\n{text}"
        if messages[-1].role == role and role != "system":
            messages[-1] = Message(role, f"{messages[-1].content}\n{text}")
        else:
            messages.append(Message(role, text))
    return prompt, messages


def clean_reply(text: str | None, function_names: set[str]) -> str:
    """The model's text as a reply the user can read: never empty, a function name or JSON."""
    reply = _one_line(text or "")
    while reply.startswith(ASSISTANT):
        reply = reply[len(ASSISTANT) :].strip()
    reply = reply.split(USER, 1)[0].strip()
    bare = reply.strip("`'\". ")
    if (
        not bare
        or bare in function_names
        or reply[0] in "{[<"
        or _CALL_LIKE.match(bare) is not None
    ):
        return FALLBACK_REPLY
    return reply
