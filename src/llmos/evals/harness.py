"""How an evaluation puts a question to a model: through an agent's memory, or in plain chat.

Every question-answering task (nested-kv, dmr, locomo, longmemeval) turns its
data into `QAItem`s: a history (the sessions that came before, as chat
messages), archival passages, a question and its gold answer. Then:

- `ask_agent()` builds an llmos agent that has lived through that history, the
  way `llmos agent import` builds one (kernel/portable.py): every message in
  recall storage, the window starting late enough that the facts have left it,
  the passages in archival memory. It asks the question with `Kernel.send` and
  returns the reply. The agent must page its memory back in itself
  (conversation_search, archival_memory_search): nothing is handed to it.
- `ask_plain()` is the no-memory baseline: the same model, plain chat, the
  history as chat messages truncated from the front to fit the same window.

Each question gets a fresh agent, deleted afterwards, so no question sees
another's answer. Left out: feeding the history turn by turn through the model
(what a live user would do) — it costs one model turn per message, hours on a
small CPU; the imported history is the state those turns would leave.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmos.agent.shape import profile_of
from llmos.kernel import portable
from llmos.llm.core import ChatRequest, Message
from llmos.llm.tokens import MESSAGE_OVERHEAD_TOKENS
from llmos.memory.transcript import ASSISTANT, EXAMPLES, NEW_CHAT, REPLY_GRAMMAR, STOP, USER

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel
    from llmos.llm.core import Core

ANSWER_TOKENS = 128  # what a plain-chat answer may take (short answers are asked for)
BASELINE_SYSTEM = (
    "You are a helpful assistant. Answer the user's last question from the conversation "
    "so far. Answer briefly: just the answer, no explanation."
)
EXAMPLES_TOKENS = 120  # the example exchanges of a base model's transcript (about 90 tokens)
_names = itertools.count(1)


@dataclass(slots=True)
class Turn:
    """One message of an item's history."""

    role: str  # "user" or "assistant"
    text: str
    at: float = 0.0  # when it was said (Unix time); 0: spaced a minute apart


@dataclass(slots=True)
class QAItem:
    """One question of a task, with everything the model may need to answer it."""

    id: str
    question: str
    answer: str
    history: list[Turn] = field(default_factory=list)
    passages: list[str] = field(default_factory=list)
    category: str = ""
    #: how many trailing history messages stay in the agent's window (the rest are evicted)
    keep_in_window: int = 0
    #: the history messages that state the answer (indices): was it in the baseline's prompt?
    evidence: list[int] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Settings:
    """The model under test and the shape of the agents made for it."""

    model: str
    base_url: str | None = None
    context_window: int = 2048
    embedder: str | None = None
    memory_mode: str | None = None  # self, auto, hybrid; None: the model profile's default
    turn_timeout: float = 600.0


def _stamps(history: list[Turn]) -> list[float]:
    start = time.time() - 86400 * 30
    return [t.at or start + 60 * i for i, t in enumerate(history)]


async def ask_agent(kernel: Kernel, settings: Settings, item: QAItem) -> dict[str, Any]:
    """The agent's reply to the item's question, with the functions it called."""
    template = f"eval-template-{next(_names)}-{int(time.time() * 1000)}"
    await kernel.create_agent(
        template,
        model=settings.model,
        base_url=settings.base_url,
        context_window=settings.context_window,
        embedder=settings.embedder,
        settings={"memory_mode": settings.memory_mode} if settings.memory_mode else None,
    )
    try:
        doc = portable.export_agent(kernel, template, "local")
    finally:
        await kernel.delete_agent(template)
    core = kernel.core(settings.model, settings.base_url)
    doc["messages"] = [
        {
            "role": t.role,
            "content": t.text,
            "tokens": core.count_tokens(t.text) + MESSAGE_OVERHEAD_TOKENS,
            "created_at": at,
        }
        for t, at in zip(item.history, _stamps(item.history), strict=True)
    ]
    now = time.time() - 3600
    doc["passages"] = [{"text": p, "created_at": now} for p in item.passages]
    doc["agent"]["window_start_index"] = max(0, len(item.history) - item.keep_in_window)
    name = f"eval-{next(_names)}-{int(time.time() * 1000)}"
    await portable.import_agent(kernel, doc, "local", name, embedder=settings.embedder)
    try:
        turn = await asyncio.wait_for(kernel.send(name, item.question), settings.turn_timeout)
        return {
            "reply": turn.reply,
            "calls": [c.name for c in turn.function_calls],
            "stop_reason": turn.stop_reason,
            "error": turn.error,
        }
    finally:
        await kernel.delete_agent(name)


def plain_messages(
    core: Core, item: QAItem, window: int, reserve: int = 0
) -> tuple[list[Message], bool]:
    """The baseline's prompt: system, then as much of the history as fits (newest kept),
    then the passages as context and the question; and whether all evidence fit."""
    system = Message("system", BASELINE_SYSTEM)
    head: list[Message] = []
    if item.passages:
        head.append(Message("user", "Notes:\n" + "\n".join(item.passages)))
    question = Message("user", item.question)

    def cost(m: Message) -> int:
        return core.count_tokens(m.content or "") + MESSAGE_OVERHEAD_TOKENS

    budget = window - ANSWER_TOKENS - reserve - cost(system) - cost(question)
    history = [
        Message("assistant" if t.role == "assistant" else "user", t.text) for t in item.history
    ]
    if item.passages:
        # The notes are one block: truncate its lines from the front, like a window would.
        lines = list(item.passages)
        while lines and cost(Message("user", "Notes:\n" + "\n".join(lines))) > budget:
            lines.pop(0)
        kept_passages = set(lines)
        head = [Message("user", "Notes:\n" + "\n".join(lines))] if lines else []
        budget -= sum(cost(m) for m in head)
    else:
        kept_passages = set()
    kept: list[Message] = []
    first_kept = len(history)
    for i in range(len(history) - 1, -1, -1):
        c = cost(history[i])
        if c > budget:
            break
        budget -= c
        kept.insert(0, history[i])
        first_kept = i
    evidence_fit = all(i >= first_kept for i in item.evidence)
    if item.passages and item.meta.get("needed_passages"):
        evidence_fit = evidence_fit and all(
            p in kept_passages for p in item.meta["needed_passages"]
        )
    return [system, *head, *kept, question], evidence_fit


def transcript_prompt(messages: list[Message]) -> str:
    """The plain-chat messages as the transcript a base model continues (no chat template):
    the few example exchanges llmos's own transcript protocol shows, then the chat."""
    examples = "\n".join(f"{USER} {q}\n{ASSISTANT} {a}" for q, a in EXAMPLES)
    lines = [messages[0].content or "", "", examples, "", NEW_CHAT]
    for m in messages[1:]:
        who = ASSISTANT if m.role == "assistant" else USER
        lines.append(f"{who} {' '.join((m.content or '').split())}")
    return "\n".join(lines) + f"\n{ASSISTANT}"


async def ask_plain(kernel: Kernel, settings: Settings, item: QAItem) -> dict[str, Any]:
    """The no-memory baseline's reply: the same model in plain chat, window-truncated.

    A base model (no chat template) gets the chat as a transcript to continue,
    with the example exchanges and stop strings its agents get: the same framing."""
    core = kernel.core(settings.model, settings.base_url)
    window = min(settings.context_window, core.context_window or settings.context_window)
    info = profile_of(core)
    base = info.reply_protocol == "transcript" and not info.chat_template
    messages, fit = plain_messages(core, item, window, reserve=EXAMPLES_TOKENS if base else 0)
    request = ChatRequest(messages=messages, max_tokens=ANSWER_TOKENS, tool_choice="none")
    if base:
        request.prompt = transcript_prompt(messages)
        request.stop = list(STOP)
        request.grammar = REPLY_GRAMMAR
    response = await core.chat(request)
    return {"reply": (response.content or "").strip(), "evidence_in_prompt": fit}
