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

Memory lines: where the agent's memory mode lets the model manage memory
(`self`, `hybrid`), the grammar (`MEMORY_GRAMMAR`) allows, after the reply,
lines of the form

    remember: <a fact about the user>     -> core memory ("human" block)
    note: <anything worth keeping>        -> archival memory

and nothing else: after the reply's newline the model may only write such a
line, start the user's line (which `STOP` ends) or stop. One example exchange
shows a `remember:` line. `parse_reply` splits the output into the reply and
its memory lines; the kernel applies them (`agent/loop.py`).

Fact extraction (`extraction_request`, `parse_fact`): a short constrained
step that rewrites what the user says about themselves as one fact, or
"none"; `agent/paging.py` runs it.

Left out: the function-calling window (`memory/window.py`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
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
    "MEMORY_GRAMMAR",
    "REPLY_GRAMMAR",
    "REPLY_MAX_TOKENS",
    "STOP",
    "MemoryLine",
    "ban_first",
    "clean_reply",
    "compile_transcript",
    "exchanges",
    "extraction_request",
    "parse_fact",
    "parse_reply",
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
# How the assistant uses what the kernel paged in: (what the user said, the
# question, the answer).
RECALL_EXAMPLE: tuple[str, str, str] | None = (
    "My cat is called Milo.",
    "What is my cat called?",
    "Your cat is called Milo.",
)
NEW_CHAT = "(A new chat begins.)"
USER, ASSISTANT = "User:", "Assistant:"

# The example exchange that shows a memory line (memory modes self and hybrid).
MEMORY_EXAMPLE = (0, "remember: The user's name is Tom.")
MEMORY_KEYS = {"remember": "core", "note": "archival"}
MEMORY_LINES_MAX = 2  # applied per reply, at most
MEMORY_LINE_CHARS = 200

# One line of text that does not open with whitespace, JSON or markup; the
# optional newline lets the model end the line itself (STOP cuts it there).
_LINE = r"""first ::= [^ \t\r\n{}<>\[\]]
rest ::= [^\r\n]*
"""
REPLY_GRAMMAR = 'root ::= " "? first rest "\\n"?\n' + _LINE
# The same, then optional memory lines; after a newline the model may only
# write one, start the user's line (MEMORY_STOP cuts it) or end: the lines
# are allowed, never forced.
MEMORY_GRAMMAR = (
    'root ::= " "? first rest mem* ("\\n" "User:"?)?\n'
    'mem ::= "\\n" ("remember" | "note") ": " first rest\n' + _LINE
)
_FIRST = "first ::= [^ "


def ban_first(grammar: str, reply: str) -> str:
    """`grammar` with the reply's first character no longer allowed to open a
    reply (a letter or digit; others are left as they are): the cheapest way
    to make a greedy decoder say something else."""
    char = reply[:1]
    if not char.isalnum() or _FIRST not in grammar:
        return grammar
    return grammar.replace(_FIRST, f"first ::= [^{char} ", 1)


STOP = ["\n", "User:"]
MEMORY_STOP = ["User:"]
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


def _examples(memory_lines: bool) -> list[tuple[str, str]]:
    """The example exchanges; with memory lines, one of them shows one."""
    out = list(EXAMPLES)
    if memory_lines:
        i, line = MEMORY_EXAMPLE
        out[i] = (out[i][0], f"{out[i][1]}\n{line}")
    return out


def _head(memory_lines: bool, paging: bool) -> str:
    examples = "\n".join(f"{USER} {q}\n{ASSISTANT} {a}" for q, a in _examples(memory_lines))
    if RECALL_EXAMPLE and paging:
        said, q, a = RECALL_EXAMPLE
        examples += f"\n{_paged_text([_said(said)])}\n{USER} {q}\n{ASSISTANT} {a}"
    return f"{PREAMBLE}\n\n{examples}\n\n{NEW_CHAT}"


def _said(text: str) -> str:
    return f'earlier, the user said "{text}"'


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
    memory_lines: bool = False,
    paging: bool = True,
) -> CompiledWindow:
    """The agent's next step as a transcript to continue, within the token budget.

    The messages section is counted as the stored messages' cost (an upper
    bound of their lines here), so eviction (`window.eviction_point`) plans
    with the same numbers as for the function-calling window. `memory_lines`:
    the model may add memory lines after its reply (see the module docstring);
    `paging`: the kernel pages memory in (an example shows how it is used)."""
    head = _head(memory_lines, paging)
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

    prompt, messages = _render(
        head, notes, summary, volatile, lines, chat_template, memory_lines, paging
    )
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
        stop=list(MEMORY_STOP if memory_lines else STOP),
        grammar=MEMORY_GRAMMAR if memory_lines else REPLY_GRAMMAR,
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
    memory_lines: bool,
    paging: bool,
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
    for q, a in _examples(memory_lines):
        messages += [Message("user", q), Message("assistant", a)]
    if RECALL_EXAMPLE and paging:
        said, q, a = RECALL_EXAMPLE
        q = f"{_paged_text([_said(said)])}\n{q}"
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


@dataclass(frozen=True, slots=True)
class MemoryLine:
    """One memory line of a reply: `kind` is "core" (remember:) or "archival" (note:)."""

    kind: str
    text: str


_MEMORY_LINE = re.compile(r"^\s*(remember|note)\s*:\s*(\S.*)$", re.IGNORECASE)


def parse_reply(text: str | None, function_names: set[str]) -> tuple[str, list[MemoryLine]]:
    """The model's output as (reply, memory lines): the first line is the reply
    (`clean_reply`), later `remember:` / `note:` lines are memory lines (at most
    MEMORY_LINES_MAX, each cut to MEMORY_LINE_CHARS), anything else is dropped."""
    raw = [ln for ln in (text or "").split("\n") if ln.strip()]
    memory: list[MemoryLine] = []
    first = ""
    for i, line in enumerate(raw):
        m = _MEMORY_LINE.match(line)
        if m is None:
            if i == 0:
                first = line
            continue
        fact = _one_line(m.group(2))[:MEMORY_LINE_CHARS].strip()
        item = MemoryLine(MEMORY_KEYS[m.group(1).lower()], fact)
        if fact and item not in memory and len(memory) < MEMORY_LINES_MAX:
            memory.append(item)
    return clean_reply(first, function_names), memory


# --- fact extraction ------------------------------------------------------------

EXTRACT_HEAD = (
    "Each thing the user said is rewritten as one short fact about the user, "
    "or none when it says nothing lasting about the user.\n"
    "Said: Hi! I'm Tom.\nFact: The user's name is Tom.\n"
    "Said: What is the capital of Peru?\nFact: none\n"
    "Said: My cat is called Milo and I love jazz.\n"
    "Fact: The user's cat is called Milo; the user loves jazz.\n"
    "Said: Tell me a joke.\nFact: none\n"
)
EXTRACT_GRAMMAR = r"""root ::= " " ("none" | "The user" rest) "\n"?
rest ::= [^\r\n]*
"""
EXTRACT_MAX_CHARS = 240  # longer messages are not statements of a fact (or too costly)
EXTRACT_MAX_TOKENS = 40
_SELF = re.compile(r"\b(i|i'm|i've|my|mine|myself)\b", re.IGNORECASE)


def extraction_request(message: str, cache_key: str | None = None) -> ChatRequest | None:
    """The constrained step that rewrites `message` as a fact about the user;
    None when the message is no candidate (no first person, a question, too long)."""
    said = _one_line(message)
    if not said or len(said) > EXTRACT_MAX_CHARS or said.endswith("?") or not _SELF.search(said):
        return None
    prompt = f"{EXTRACT_HEAD}Said: {said}\nFact:"
    return ChatRequest(
        [Message("user", prompt)],
        [],
        max_tokens=EXTRACT_MAX_TOKENS,
        tool_choice="none",
        cache_key=cache_key,
        prompt=prompt,
        stop=list(STOP),
        grammar=EXTRACT_GRAMMAR,
    )


def parse_fact(text: str | None) -> str | None:
    """The extracted fact, or None ("none", empty, or not about the user)."""
    fact = _one_line(text or "")
    if not fact.startswith("The user") or len(fact) < len("The user x"):
        return None
    return fact[:MEMORY_LINE_CHARS].rstrip()
