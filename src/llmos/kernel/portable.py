"""Agent export and import: one JSON document that moves an agent between installations.

`export_agent()` writes everything that makes the agent itself: its settings
and system prompt, core memory blocks, the recursive summary, every message in
recall storage (in order, with its timestamp and token count) and every
archival passage's text. Where the context window starts is kept as an index
into the message list, since database ids do not travel.

`import_agent()` reads such a document into a new agent of the given owner, in
one transaction: messages keep their order and timestamps; passages are
embedded again with the new agent's embedder (vectors do not travel: the
target may embed differently, and a vector is only meaningful next to the
vectors of the same model). A name already taken raises `AgentExists`.

Left out: the kernel's per-agent usage statistics (they describe the old
installation's cores), provider credentials (never exported), recomputing
token counts for a different model (counts are kept as exported; the window
compiler's trimming is the safety net), and renaming the agent inside its
system prompt when it is imported under a new name.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from llmos.kernel.agents import AgentExists
from llmos.kernel.settings import check_settings
from llmos.llm.core import ToolCall
from llmos.memory.blocks import Block, CoreMemory
from llmos.memory.recall import StoredMessage
from llmos.storage.models import passages

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

FORMAT = "llmos.agent"
VERSION = 1
_EMBED_BATCH = 64


# --- the document ---------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


#: largest count a document may give (a window, a block's limit, a message's tokens);
#: far past any real one, far below SQLite's 64-bit integers
_BIG = 1 << 30


class ExportedToolCall(_Model):
    id: str = Field(max_length=128)
    name: str = Field(max_length=128)
    arguments: str


class ExportedMessage(_Model):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ExportedToolCall] = Field(default_factory=list)
    tool_call_id: str | None = Field(None, max_length=64)
    name: str | None = Field(None, max_length=128)
    tokens: int = Field(0, ge=0, le=_BIG)
    created_at: float = Field(ge=0)


class ExportedBlock(_Model):
    label: str = Field(min_length=1, max_length=64)
    value: str
    limit: int = Field(ge=1, le=_BIG)

    @model_validator(mode="after")
    def _fits(self) -> ExportedBlock:
        if len(self.value) > self.limit:
            raise ValueError(f"block {self.label!r} is longer than its limit")
        return self


class ExportedPassage(_Model):
    text: str = Field(min_length=1)
    source: str | None = Field(None, max_length=512)
    created_at: float = Field(ge=0)


class ExportedAgent(_Model):
    name: str = Field(min_length=1, max_length=128)
    model: str = Field(min_length=1, max_length=256)
    base_url: str | None = Field(None, max_length=512)
    context_window: int = Field(ge=1024, le=_BIG)
    layout: Literal["stable", "classic"] = "stable"
    embedder: str = Field(min_length=1, max_length=256)
    system_prompt: str
    settings: dict[str, Any] = Field(default_factory=dict)
    summary: str = ""
    core_snapshot: str = ""
    #: index into `messages` of the first message in the context window
    window_start_index: int = Field(0, ge=0, le=_BIG)
    created_at: float = Field(ge=0)


class AgentDocument(_Model):
    format: Literal["llmos.agent"]
    version: Literal[1]
    exported_at: float | None = None
    agent: ExportedAgent
    blocks: list[ExportedBlock]
    messages: list[ExportedMessage] = Field(default_factory=list)
    passages: list[ExportedPassage] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> AgentDocument:
        labels = [b.label for b in self.blocks]
        if len(set(labels)) != len(labels):
            raise ValueError("block labels must be unique")
        if self.agent.window_start_index > len(self.messages):
            raise ValueError("agent.window_start_index is past the last message")
        return self


# --- export ---------------------------------------------------------------------


def export_agent(kernel: Kernel, name: str, owner: str) -> dict[str, Any]:
    """The agent as one JSON-ready document. Raises AgentNotFound."""
    agent_id = kernel.get_agent(name, owner)["id"]
    # Reads only, with no await in between: no step of this agent can commit
    # halfway through (the kernel's steps run on this same event loop).
    row, block_rows, msg_rows, passage_rows = kernel.store.dump(agent_id)
    window_start_index = next(
        (i for i, m in enumerate(msg_rows) if m.id >= row.window_start), len(msg_rows)
    )
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": time.time(),
        "agent": {
            "name": row.name,
            "model": row.model,
            "base_url": row.base_url,
            "context_window": row.context_window,
            "layout": row.layout,
            "embedder": row.embedder,
            "system_prompt": row.system_prompt,
            "settings": dict(row.settings or {}),
            "summary": row.summary,
            "core_snapshot": row.core_snapshot,
            "window_start_index": window_start_index,
            "created_at": row.created_at,
        },
        "blocks": [{"label": b.label, "value": b.value, "limit": b.char_limit} for b in block_rows],
        "messages": [
            {
                "role": m.role,
                "content": m.content,
                "tool_calls": list(m.tool_calls or []),
                "tool_call_id": m.tool_call_id,
                "name": m.name,
                "tokens": m.tokens,
                "created_at": m.created_at,
            }
            for m in msg_rows
        ],
        "passages": [
            {"text": p.text, "source": p.source, "created_at": p.created_at} for p in passage_rows
        ],
    }


# --- import ---------------------------------------------------------------------


def parse_document(data: Any) -> AgentDocument:
    """Validate an export document; raises ValueError with a readable reason."""
    try:
        return AgentDocument.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise ValueError(
            f"not an llmos agent export ({where}: {first['msg']}; {err.error_count()} problem(s))"
        ) from None


async def import_agent(
    kernel: Kernel,
    data: dict[str, Any] | AgentDocument,
    owner: str,
    name: str | None = None,
    *,
    embedder: str | None = None,
) -> dict[str, Any]:
    """Create an agent from an export document; returns its description.

    `name` renames it; `embedder` overrides the exported embedder spec.
    Raises AgentExists on a name clash, ValueError for a malformed document.
    """
    doc = data if isinstance(data, AgentDocument) else parse_document(data)
    spec = doc.agent
    # The one validator of settings, as for a create or an update: a document
    # must not make an agent that no request could have made.
    check_settings(dict(spec.settings), spec.context_window)
    new_name = (name if name is not None else spec.name).strip()
    if not new_name or len(new_name) > 128:
        raise ValueError("an agent name must be 1 to 128 characters")
    emb_spec = embedder or spec.embedder
    emb = kernel.embedder(emb_spec)
    if any(a["name"] == new_name for a in kernel.list_agents(owner)):
        raise AgentExists(f"an agent named {new_name!r} already exists")

    texts = [p.text for p in doc.passages]
    vectors: list[Any] = []
    for i in range(0, len(texts), _EMBED_BATCH):
        # Embedding is CPU work: off the event loop, like the kernel's own embeds.
        vectors.extend(await asyncio.to_thread(emb.embed, texts[i : i + _EMBED_BATCH]))

    stored = [
        StoredMessage(
            role=m.role,
            content=m.content,
            tool_calls=[ToolCall(c.id, c.name, c.arguments) for c in m.tool_calls],
            tool_call_id=m.tool_call_id,
            name=m.name,
            tokens=m.tokens,
            created_at=m.created_at,
        )
        for m in doc.messages
    ]
    try:
        with kernel.db.begin() as conn:
            memory = CoreMemory([Block(b.label, b.value, b.limit) for b in doc.blocks])
            agent_id = kernel.store.insert(
                conn,
                owner=owner,
                name=new_name,
                memory=memory,
                model=spec.model,
                base_url=spec.base_url,
                context_window=spec.context_window,
                layout=spec.layout,
                embedder=emb_spec,
                system_prompt=spec.system_prompt,
                settings=dict(spec.settings),
                summary=spec.summary,
                core_snapshot=spec.core_snapshot,
                created_at=spec.created_at,
            )
            # Appended in document order, so new ids keep the exported order.
            kernel.recall.append(conn, agent_id, stored)
            if spec.window_start_index < len(stored):
                window_start = stored[spec.window_start_index].id
            else:  # everything was evicted: the window starts after the last message
                window_start = (stored[-1].id + 1) if stored else 0
            kernel.store.update(conn, agent_id, window_start=window_start)
            if texts:
                ids = kernel.archival.insert(conn, agent_id, emb, texts, vectors=vectors)
                for pid, p in zip(ids, doc.passages, strict=True):
                    conn.execute(
                        update(passages)
                        .where(passages.c.id == pid)
                        .values(source=p.source, created_at=p.created_at)
                    )
    except IntegrityError:
        # Another request took the name between our check and this insert.
        raise AgentExists(f"an agent named {new_name!r} already exists") from None
    return kernel.get_agent(agent_id, owner)
