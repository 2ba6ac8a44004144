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

Left out: extracting what the user states about themselves into core memory
(recall search already finds it when it is asked for).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from llmos.agent.functions import search_archival, search_recall

if TYPE_CHECKING:
    from llmos.agent.syscalls import KernelInterface
    from llmos.llm.core import ToolSpec
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
PAGED_CHARS = 300  # each item cut to this length

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
    return lines
