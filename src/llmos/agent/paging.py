"""Memory modes and demand paging: how an agent's memory reaches a model that cannot manage it.

An agent's `memory_mode` setting says who moves data between its window and
its stores:

* `self` — MemGPT's: the model moves data by function calls (core memory
  edits, recall and archival search); nothing is paged in.
* `auto` — the kernel pages: before a turn's first step, the user's earlier
  messages and the archival passages most relevant to the new message are
  searched (recall by BM25 on the message's content words, archival by the
  agent's embedder) and put in a volatile section of the window, and the
  memory functions are not offered.
* `hybrid` — both: passages are paged in and the functions stay on offer.
  (A step in the transcript protocol offers no functions at all, so there
  `hybrid` is `auto`.)

Unset, the mode follows the model's profile (`ModelInfo.default_memory_mode`:
`auto` for small and base models, `self` for capable ones). The searches go
through the kernel as syscalls, like a function's would.

In the transcript protocol (small and base models) the model's side of
memory is its memory lines (`memory/transcript.py`): allowed in `self` and
`hybrid`. In `auto` and `hybrid`, with the `extract_facts` setting, a short
constrained step rewrites what the user states about themselves as one fact
(`extract_fact`). `memory_calls` turns both into the function calls a
capable model would have made: a fact goes to the "human" core memory block
(replacing its default text) while the block stays under CORE_FACT_CHARS,
else to archival memory, like a `note:` line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmos.agent.functions import search_archival, search_recall
from llmos.agent.syscalls import LLMSyscall
from llmos.llm.core import CoreError, ToolCall, Usage
from llmos.memory.blocks import DEFAULT_HUMAN
from llmos.memory.transcript import MemoryLine, extraction_request, parse_fact

if TYPE_CHECKING:
    from llmos.agent.syscalls import KernelInterface
    from llmos.llm.core import Core, ToolSpec
    from llmos.memory.image import AgentImage
    from llmos.memory.recall import StoredMessage

MEMORY_MODES = ("self", "auto", "hybrid")
#: the functions by which a model manages its own memory (not offered in `auto`)
MEMORY_FUNCTIONS = frozenset(
    {
        "core_memory_append",
        "core_memory_replace",
        "conversation_search",
        "conversation_search_date",
        "archival_memory_insert",
        "archival_memory_search",
    }
)
PAGED_ITEMS = 3  # recall messages paged in per turn, at most
PAGED_PASSAGES = 2  # archival passages, at most
PAGED_FACTS = 2  # lines of the "human" core memory block (transcript protocol), at most
PAGED_CHARS = 300  # each item cut to this length
# Facts go to core memory while the "human" block is shorter than this: every
# transcript prompt carries the block, and a 2,048-token window has little room.
CORE_FACT_CHARS = 600

# Words that match nearly every message: BM25 would rank by them otherwise.
_STOPWORD_TEXT = """
a about am an and are as at be but by can could did do does for from had has have how i
i'm if in is it its just let me my no not of on or our please so that the their them
then there these they this to too was we were what when where which who why will with
would you your tell know remember said say again
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[\w']+", re.UNICODE)


def memory_mode(image: AgentImage, default: str) -> str:
    """The agent's memory mode: its setting, else the model profile's `default`."""
    mode = image.setting("memory_mode")
    return mode if mode in MEMORY_MODES else default


def offered(specs: list[ToolSpec], mode: str) -> list[ToolSpec]:
    """The functions a step offers in this memory mode."""
    if mode != "auto":
        return specs
    return [s for s in specs if s.name not in MEMORY_FUNCTIONS]


def content_words(text: str) -> list[str]:
    """The words of `text` worth searching for (no stopwords), in order, once each."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        word = word.strip("'")
        if len(word) > 1 and word not in _STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PAGED_CHARS else text[: PAGED_CHARS - 1] + "…"


async def page_in(
    kernel: KernelInterface,
    image: AgentImage,
    query: StoredMessage,
    *,
    include_window: bool = False,
) -> list[str]:
    """What the agent's stores hold about the message `query`, as short lines.

    Recall hits already in the window are left out unless `include_window`: a
    small model reading a transcript misses a fact twenty lines up, and finds
    it restated next to the question."""
    text = query.content or ""
    words = content_words(text)
    if not words:
        return []
    found, _ = await search_recall(kernel, image, " ".join(words), 0)
    skip = {query.id} | (set() if include_window else {m.id for m in image.window})
    lines: list[str] = []
    for m in found:
        # Only what the user said: a small model's own replies echo it at best,
        # and paged back in they teach it to repeat itself.
        said = _cut(m.content or "")
        line = f'earlier, the user said "{said}"'
        if m.role == "user" and m.id not in skip and said and line not in lines:
            lines.append(line)
        if len(lines) >= PAGED_ITEMS:
            break
    if image.archival_count:
        passages: Any
        passages, _ = await search_archival(kernel, image, text, 0, PAGED_PASSAGES)
        lines += [f'a saved note says "{_cut(p.text)}"' for p in passages]
    if include_window:
        lines += core_facts(image, words)
    return lines


def core_facts(image: AgentImage, words: list[str]) -> list[str]:
    """The lines of the "human" block that share a word with `words`, at most
    PAGED_FACTS: core memory is in the prompt already, but a small model uses
    a fact only when it sits next to the question (measured: "teal" in the
    notes, "blue" in the answer)."""
    block = image.memory.blocks.get("human")
    if block is None or block.value.strip() == DEFAULT_HUMAN:
        return []
    wanted = set(words)
    found = [ln for ln in block.value.split("\n") if wanted & set(content_words(ln))]
    return [_cut(ln) for ln in found[:PAGED_FACTS]]


async def extract_fact(
    kernel: KernelInterface, image: AgentImage, core: Core, message: StoredMessage
) -> tuple[str | None, Usage]:
    """What `message` states about the user, as one fact, by a short constrained
    step on the agent's core, and the step's usage; None if it states nothing
    (or the step failed: the turn goes on without it)."""
    request = extraction_request(message.content or "", cache_key=f"{image.id}:extract")
    if request is None:
        return None, Usage()
    try:
        response = await kernel.syscall(LLMSyscall(agent_id=image.id, core=core, request=request))
    except CoreError:
        return None, Usage()
    return parse_fact(response.content), response.usage


def memory_calls(
    image: AgentImage, lines: list[MemoryLine], new_id: Callable[[], str]
) -> list[ToolCall]:
    """The function calls that apply memory lines and facts to the agent's memory.

    A fact already in the block is skipped; a block still at its default text
    is replaced, not appended to (it would contradict the fact)."""
    calls: list[ToolCall] = []
    human = image.memory.blocks.get("human")
    value = human.value if human is not None else ""
    for line in lines:
        text = line.text.strip()
        if not text:
            continue
        if line.kind == "core" and human is not None:
            if text.casefold() in value.casefold():
                continue
            if value.strip() in ("", DEFAULT_HUMAN):
                args = {"label": "human", "old_content": value, "new_content": text}
                if not value:
                    args = {"label": "human", "content": text}
                name = "core_memory_replace" if value else "core_memory_append"
                calls.append(ToolCall(new_id(), name, json.dumps(args)))
                value = text
                continue
            if len(value) + len(text) + 1 <= min(CORE_FACT_CHARS, human.limit):
                args = {"label": "human", "content": text}
                calls.append(ToolCall(new_id(), "core_memory_append", json.dumps(args)))
                value = f"{value}\n{text}"
                continue
        calls.append(ToolCall(new_id(), "archival_memory_insert", json.dumps({"content": text})))
    return calls
