"""Agent routes: create, list, show, update, delete, and export/import as one JSON file.

Every route acts for the calling user only: the kernel's `owner` is the
user's name, so another user's agent is simply not found (404).

Left out: renaming an agent, changing its model or window after creation
(an import with a new name does the first), and cloning.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from llmos.kernel import portable
from llmos.kernel.settings import AgentSettings
from llmos.server.deps import (
    AGENT_NAME_PATTERN,
    APIError,
    CurrentUser,
    KernelDep,
    State,
    check_choices,
)

router = APIRouter(tags=["agents"])

AgentName = Annotated[str, Path(description="The agent's name or id.", max_length=128)]
BlockLabel = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")]
BlockText = Annotated[str, StringConstraints(max_length=100_000)]
NewName = Annotated[str, StringConstraints(pattern=AGENT_NAME_PATTERN)]


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: NewName
    model: str | None = Field(
        None, min_length=1, max_length=256, description="e.g. openai/gpt-4o-mini"
    )
    base_url: str | None = Field(None, max_length=512)
    persona: BlockText | None = None
    human: BlockText | None = None
    blocks: dict[BlockLabel, BlockText] | None = Field(None, max_length=32)
    block_limit: int = Field(2000, ge=1, le=100_000)
    context_window: int | None = Field(None, ge=1024, le=1 << 24)
    layout: Literal["stable", "classic"] = "stable"
    embedder: str | None = Field(None, min_length=1, max_length=256)
    system_prompt: Annotated[str, StringConstraints(min_length=1, max_length=100_000)] | None = None
    settings: AgentSettings | None = None


class AgentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    persona: BlockText | None = None
    human: BlockText | None = None
    blocks: dict[BlockLabel, BlockText] | None = Field(None, max_length=32)
    settings: AgentSettings | None = None


@router.get("/agents", summary="List your agents")
async def list_agents(user: CurrentUser, kernel: KernelDep) -> dict[str, Any]:
    return {"agents": kernel.list_agents(user.owner)}


@router.post("/agents", status_code=201, summary="Create an agent")
async def create_agent(
    body: AgentCreate, user: CurrentUser, kernel: KernelDep, state: State
) -> dict[str, Any]:
    from llmos.kernel.agents import default_embedder
    from llmos.llm.registry import DEFAULT_MODEL

    cfg = state.config
    model = body.model or cfg.default_model or DEFAULT_MODEL
    embedder = body.embedder or cfg.default_embedder or default_embedder()
    check_choices(cfg, model=model, base_url=body.base_url, embedder=embedder)
    kernel.embedder(embedder)  # an unknown spec fails now (400), not at first use
    settings = body.settings.model_dump(exclude_none=True) if body.settings else {}
    return await kernel.create_agent(
        body.name,
        model=model,
        base_url=body.base_url,
        persona=body.persona,
        human=body.human,
        blocks_=body.blocks,
        block_limit=body.block_limit,
        context_window=body.context_window,
        layout=body.layout,
        embedder=embedder,
        system_prompt=body.system_prompt,
        settings=settings,
        owner=user.owner,
    )


@router.get("/agents/{agent}", summary="Show an agent: model, blocks, counts, settings")
async def get_agent(agent: AgentName, user: CurrentUser, kernel: KernelDep) -> dict[str, Any]:
    return kernel.get_agent(agent, user.owner)


@router.patch("/agents/{agent}", summary="Update an agent's blocks and settings")
async def update_agent(
    agent: AgentName, body: AgentUpdate, user: CurrentUser, kernel: KernelDep
) -> dict[str, Any]:
    edits = dict(body.blocks or {})
    if body.persona is not None:
        edits["persona"] = body.persona
    if body.human is not None:
        edits["human"] = body.human
    settings = body.settings.model_dump(exclude_unset=True) if body.settings else None
    return await kernel.update_agent(agent, user.owner, blocks=edits, settings=settings)


@router.delete("/agents/{agent}", status_code=204, summary="Delete an agent and all its memory")
async def delete_agent(agent: AgentName, user: CurrentUser, kernel: KernelDep) -> Response:
    await kernel.delete_agent(agent, owner=user.owner)
    return Response(status_code=204)


@router.get(
    "/agents/{agent}/export",
    summary="Export an agent as one JSON document (blocks, messages, summary, passages)",
)
async def export_agent(agent: AgentName, user: CurrentUser, kernel: KernelDep) -> JSONResponse:
    doc = portable.export_agent(kernel, agent, user.owner)
    filename = re.sub(r"[^A-Za-z0-9_.-]", "_", doc["agent"]["name"]) or "agent"
    return JSONResponse(
        doc, headers={"content-disposition": f'attachment; filename="{filename}.llmos.json"'}
    )


@router.post(
    "/agents/import",
    status_code=201,
    summary="Import an agent from an export document",
    description="Passages are embedded again with the new agent's embedder. "
    "A name already taken is a 409; pass `name` to import under another name.",
)
async def import_agent(
    doc: portable.AgentDocument,
    user: CurrentUser,
    kernel: KernelDep,
    state: State,
    name: Annotated[NewName | None, Query(description="import under this name")] = None,
    embedder: Annotated[
        str | None, Query(min_length=1, max_length=256, description="embedder for the new agent")
    ] = None,
) -> dict[str, Any]:
    if name is None and not re.match(AGENT_NAME_PATTERN, doc.agent.name):
        raise APIError(422, "the exported name cannot be used in URLs; pass ?name= to rename")
    emb = embedder or doc.agent.embedder
    check_choices(state.config, model=doc.agent.model, base_url=doc.agent.base_url, embedder=emb)
    return await portable.import_agent(kernel, doc, user.owner, name, embedder=embedder)
