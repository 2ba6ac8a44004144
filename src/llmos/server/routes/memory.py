"""Memory routes: core memory blocks, archival passages, recall search, the context window.

A user's edit of a block goes through `Kernel.update_block`, so the agent
sees it as an event in its window (and the prompt prefix stays cacheable).
Archival inserts embed with the agent's embedder; search is the kernel's
hybrid (vector + keyword) search. `GET .../context` is the window the
agent's next step would see, section by section, with token counts.

Left out: creating or deleting blocks after the agent exists, changing a
block's limit, and editing passages in place (delete and insert).

Recall search takes a date range (`start`, `end`: a day or an ISO time), and
`GET .../recall/date` lists a range's messages oldest first, as the agent's
`conversation_search_date` does.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from llmos.server.deps import APIError, CurrentUser, KernelDep

router = APIRouter(tags=["memory"])

AgentName = Annotated[str, Path(description="The agent's name or id.", max_length=128)]
Label = Annotated[str, Path(description="The block's label.", max_length=64)]
SearchQuery = Annotated[str, Query(min_length=1, max_length=10_000, description="what to look for")]
# The vector index answers at most 4,096 nearest neighbours, and the kernel
# asks for twice the depth of the page it returns.
MAX_ARCHIVAL_DEPTH = 2000
PassageText = Annotated[str, StringConstraints(min_length=1, max_length=100_000)]


class BlockSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(max_length=100_000, description="the block's new text")


class BlockPatch(BaseModel):
    """Exactly one of `value` (replace the text) or `append` (add a line)."""

    model_config = ConfigDict(extra="forbid")

    value: str | None = Field(None, max_length=100_000)
    append: str | None = Field(None, min_length=1, max_length=100_000)

    @model_validator(mode="after")
    def _one(self) -> BlockPatch:
        if (self.value is None) == (self.append is None):
            raise ValueError("give exactly one of value or append")
        return self


class ArchivalInsert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[PassageText] = Field(min_length=1, max_length=256)
    source: str | None = Field(None, max_length=512, description="where the texts came from")


# --- blocks -------------------------------------------------------------------------


def _block_dict(label: str, value: str, limit: int) -> dict[str, Any]:
    return {"label": label, "value": value, "limit": limit, "chars": len(value)}


@router.get("/agents/{agent}/blocks", summary="The agent's core memory blocks")
async def list_blocks(agent: AgentName, user: CurrentUser, kernel: KernelDep) -> dict[str, Any]:
    _, image = kernel.process(agent, user.owner)
    return {
        "blocks": [_block_dict(b.label, b.value, b.limit) for b in image.memory.blocks.values()]
    }


def _block(kernel: Any, agent: str, label: str, owner: str) -> Any:
    _, image = kernel.process(agent, owner)
    block = image.memory.blocks.get(label)
    if block is None:
        raise APIError(404, f"the agent has no block labelled {label!r}", "not_found_error")
    return image, block


@router.get("/agents/{agent}/blocks/{label}", summary="One core memory block")
async def get_block(
    agent: AgentName, label: Label, user: CurrentUser, kernel: KernelDep
) -> dict[str, Any]:
    _, block = _block(kernel, agent, label, user.owner)
    return _block_dict(block.label, block.value, block.limit)


@router.put("/agents/{agent}/blocks/{label}", summary="Set a block's text")
async def put_block(
    agent: AgentName, label: Label, body: BlockSet, user: CurrentUser, kernel: KernelDep
) -> dict[str, Any]:
    return await _set_block(kernel, agent, label, body.value, user.owner, None)


@router.patch("/agents/{agent}/blocks/{label}", summary="Replace or append to a block's text")
async def patch_block(
    agent: AgentName, label: Label, body: BlockPatch, user: CurrentUser, kernel: KernelDep
) -> dict[str, Any]:
    return await _set_block(kernel, agent, label, body.value, user.owner, body.append)


async def _set_block(
    kernel: Any, agent: str, label: str, value: str | None, owner: str, append: str | None
) -> dict[str, Any]:
    image, block = _block(kernel, agent, label, owner)
    if append is not None:
        value = f"{block.value}\n{append}" if block.value else append
    assert value is not None
    if len(value) > block.limit:
        raise APIError(
            422,
            f"block {label!r} allows {block.limit} characters; the new text has {len(value)}",
            code="memory_edit",
        )
    if value != block.value:
        await kernel.update_block(image.id, label, value, owner=owner)
    _, block = _block(kernel, image.id, label, owner)
    return _block_dict(block.label, block.value, block.limit)


# --- archival -----------------------------------------------------------------------


@router.post("/agents/{agent}/archival", status_code=201, summary="Insert archival passages")
async def insert_archival(
    agent: AgentName, body: ArchivalInsert, user: CurrentUser, kernel: KernelDep
) -> dict[str, Any]:
    ids = await kernel.insert_archival(
        agent, list(body.texts), owner=user.owner, source=body.source
    )
    return {"ids": ids}


@router.get("/agents/{agent}/archival", summary="List archival passages, oldest first")
async def list_archival(
    agent: AgentName,
    user: CurrentUser,
    kernel: KernelDep,
    offset: Annotated[int, Query(ge=0, le=1 << 40)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    found, total = kernel.list_archival(agent, user.owner, offset=offset, limit=limit)
    return {"passages": [p.as_dict() for p in found], "total": total, "offset": offset}


@router.get("/agents/{agent}/archival/search", summary="Search archival memory (hybrid)")
async def search_archival(
    agent: AgentName,
    query: SearchQuery,
    user: CurrentUser,
    kernel: KernelDep,
    page: Annotated[int, Query(ge=0, le=10_000)] = 0,
    page_size: Annotated[int, Query(ge=1, le=50)] = 5,
) -> dict[str, Any]:
    if (page + 1) * page_size > MAX_ARCHIVAL_DEPTH:
        raise APIError(422, f"search results go {MAX_ARCHIVAL_DEPTH} deep; ask for an earlier page")
    found, total = await kernel.search_archival(
        agent, query, page, owner=user.owner, page_size=page_size
    )
    return {"results": [p.as_dict() for p in found], "total": total, "page": page}


@router.delete("/agents/{agent}/archival/{passage_id}", status_code=204, summary="Delete a passage")
async def delete_archival(
    agent: AgentName,
    passage_id: Annotated[int, Path(ge=0, le=1 << 62)],
    user: CurrentUser,
    kernel: KernelDep,
) -> Response:
    kernel.delete_archival(agent, passage_id, user.owner)  # PassageNotFound: 404
    return Response(status_code=204)


# --- recall and the window ---------------------------------------------------------


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
DateParam = Annotated[
    str | None,
    Query(
        max_length=40,
        description=(
            "A day (2024-01-31: from its start, or to its end for `end`) or an ISO 8601 "
            "time (2024-01-31T14:00, with an offset such as +02:00; without one, the "
            "server's local time)"
        ),
    ),
]


def _when(value: str | None, name: str, end: bool) -> datetime | None:
    if value is None:
        return None
    value = value.strip()
    try:
        if _DAY.fullmatch(value):
            day = datetime.strptime(value, "%Y-%m-%d")
            return day + timedelta(days=1, microseconds=-1) if end else day
        return datetime.fromisoformat(value)
    except ValueError:
        raise APIError(
            422, f"{name} must be a day like 2024-01-31 or a time like 2024-01-31T14:00"
        ) from None


def _range(start: str | None, end: str | None) -> tuple[datetime | None, datetime | None]:
    t0, t1 = _when(start, "start", False), _when(end, "end", True)
    if t0 is not None and t1 is not None and t0.timestamp() > t1.timestamp():
        raise APIError(422, "start is after end")
    return t0, t1


def _results(found: list[Any], total: int, page: int) -> dict[str, Any]:
    # `line` is the message for people: a message that only called functions
    # shows its calls ("assistant called core_memory_append(...)").
    return {
        "results": [m.as_dict() | {"line": m.line()} for m in found],
        "total": total,
        "page": page,
    }


@router.get(
    "/agents/{agent}/recall/search",
    summary="Search the conversation history by words, optionally within dates",
)
async def search_recall(
    agent: AgentName,
    query: SearchQuery,
    user: CurrentUser,
    kernel: KernelDep,
    page: Annotated[int, Query(ge=0, le=10_000)] = 0,
    start: DateParam = None,
    end: DateParam = None,
) -> dict[str, Any]:
    t0, t1 = _range(start, end)
    found, total = await kernel.search_recall(
        agent, query, page, owner=user.owner, start=t0, end=t1
    )
    return _results(found, total, page)


@router.get(
    "/agents/{agent}/recall/date",
    summary="What the user and the agent said between two dates, oldest first",
)
async def search_recall_date(
    agent: AgentName,
    user: CurrentUser,
    kernel: KernelDep,
    start: DateParam = None,
    end: DateParam = None,
    page: Annotated[int, Query(ge=0, le=10_000)] = 0,
) -> dict[str, Any]:
    if start is None and end is None:
        raise APIError(422, "give start, end or both (e.g. start=2024-01-31)")
    t0, t1 = _range(start, end)
    found, total = await kernel.search_recall_date(
        agent, t0 or datetime.fromtimestamp(0), t1 or datetime.now(), page, owner=user.owner
    )
    return _results(found, total, page)


@router.get(
    "/agents/{agent}/context",
    summary="The compiled context window: sections and token counts",
)
async def context(agent: AgentName, user: CurrentUser, kernel: KernelDep) -> dict[str, Any]:
    return kernel.context(agent, user.owner).as_dict()


class Rethink(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thought: str = Field(min_length=1, max_length=100_000, description="the new inner thoughts")


@router.post(
    "/agents/{agent}/rethink",
    summary="Rewrite the inner thoughts of the agent's last answer",
)
async def rethink(
    agent: AgentName, body: Rethink, user: CurrentUser, kernel: KernelDep
) -> dict[str, Any]:
    await kernel.rethink(agent, body.thought, owner=user.owner)  # no answer yet: 400
    return {"rethought": True}
