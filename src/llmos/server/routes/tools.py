"""Tool, grant, approval and audit routes: the AIOS managers over HTTP, per caller.

Everything here is the caller's own: their tools (`POST /v1/tools` registers
every public function of a Python source text; re-adding a name bumps its
version), which of their agents has which tool attached
(`PUT/DELETE /v1/agents/{agent}/tools/{tool}`), their agents' grants, the
calls of irreversible tools waiting for their decision, and their audit log.
Another user's tool, agent or approval is a 404, exactly like one that does
not exist. `GET /v1/tools?builtin=true` lists the built-in tools (calculate,
current_time, fetch_url, run_python), attached like any tool. Every version of
a tool is kept: `GET /v1/tools/{tool}/versions` (source, who wrote it, who
approved it) and `POST /v1/tools/{tool}/rollback` put an older one back. A tool
an agent wrote (setting `self_tools`) waits as an approval of the tool
`create_tool` whose arguments hold its name, description, source and test
results; approving it installs it as a new version attached to that agent.

Deciding an approval (`POST /v1/approvals/{id}`) runs the tool when approved
and then the agent's turn that receives the outcome; that turn runs as a
server task, so a client that disconnects does not cut it short. The answer
carries the decided approval and the turn.

Left out: sharing tools between users, editing a tool's flags without
re-adding its source, and approval by anyone but the owner.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from llmos.server.deps import MAX_INT, APIError, CurrentUser, KernelDep, State, turn_body
from llmos.tools.registry import ToolError
from llmos.tools.sandbox import SandboxUnavailable

router = APIRouter(tags=["tools"])

AgentName = Annotated[str, Path(description="The agent's name or id.", max_length=128)]
ToolName = Annotated[str, Path(description="The tool's name.", max_length=128)]
ApprovalId = Annotated[str, Path(description="The approval's id (appr-...).", max_length=64)]

#: a tool file's largest source text: the body limit (1 MiB) is the real cap
MAX_SOURCE_CHARS = 500_000


class ToolAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=MAX_SOURCE_CHARS, description="Python source")
    exclusive: bool | None = Field(None, description="one call at a time (default: the file's)")
    irreversible: bool | None = Field(
        None, description="every call needs the owner's approval (default: the file's)"
    )


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=MAX_INT, description="the stored version to put back in use")


class GrantAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["agent", "files", "net"]
    target: str = Field(
        min_length=1,
        max_length=128,
        description="a name or '*' (agent, files); a host[:port] its tools may reach (net)",
    )
    mode: Literal["r", "rw"] = "rw"


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: bool
    reason: str | None = Field(None, max_length=2000)


# --- tools --------------------------------------------------------------------------


@router.post("/tools", status_code=201, summary="Register the functions of a Python source")
async def add_tool(body: ToolAdd, user: CurrentUser, kernel: KernelDep) -> dict[str, Any]:
    try:
        added = await kernel.add_tool(
            body.source, user.owner, exclusive=body.exclusive, irreversible=body.irreversible
        )
    except ToolError as e:
        # A built-in's name is a clash with what exists; anything else is a
        # source the sandbox could not make tools of.
        status = 409 if "built-in" in str(e) else 422
        raise APIError(status, str(e), code="tool_error") from None
    except SandboxUnavailable as e:  # no bubblewrap, and no --unsafe-tools
        raise APIError(403, str(e), "permission_error", code=e.code) from None
    return {"tools": added}


@router.get("/tools", summary="Your tools, or the built-in tools")
async def list_tools(
    user: CurrentUser,
    kernel: KernelDep,
    builtin: Annotated[bool, Query(description="list the built-in tools instead")] = False,
) -> dict[str, Any]:
    return {"tools": kernel.builtin_tools() if builtin else kernel.list_tools(user.owner)}


@router.get("/tools/{tool}", summary="One tool, with its source, version and schema")
async def get_tool(tool: ToolName, user: CurrentUser, kernel: KernelDep) -> dict[str, Any]:
    return kernel.get_tool(tool, user.owner)  # ToolNotFound: 404


@router.get("/tools/{tool}/versions", summary="Every version of a tool, oldest first")
async def tool_versions(tool: ToolName, user: CurrentUser, kernel: KernelDep) -> dict[str, Any]:
    return {"versions": kernel.tool_versions(tool, user.owner)}  # ToolNotFound: 404


@router.post("/tools/{tool}/rollback", summary="Put an earlier version of a tool back in use")
async def rollback_tool(
    tool: ToolName, body: Rollback, user: CurrentUser, kernel: KernelDep
) -> dict[str, Any]:
    kernel.rollback_tool(tool, body.version, user.owner)  # ToolNotFound: 404
    return kernel.get_tool(tool, user.owner)


@router.delete("/tools/{tool}", status_code=204, summary="Delete a tool (agents lose it)")
async def delete_tool(tool: ToolName, user: CurrentUser, kernel: KernelDep) -> Response:
    kernel.remove_tool(tool, user.owner)  # ToolNotFound: 404
    return Response(status_code=204)


@router.get("/agents/{agent}/tools", summary="The tools attached to an agent")
async def agent_tools(agent: AgentName, user: CurrentUser, kernel: KernelDep) -> dict[str, Any]:
    return {"tools": kernel.list_tools(user.owner, agent=agent)}


@router.put("/agents/{agent}/tools/{tool}", summary="Attach a tool to an agent (its grant)")
async def attach_tool(
    agent: AgentName, tool: ToolName, user: CurrentUser, kernel: KernelDep
) -> dict[str, Any]:
    kernel.attach_tool(agent, tool, user.owner)  # ToolNotFound: 404
    return {"tools": kernel.list_tools(user.owner, agent=agent)}


@router.delete("/agents/{agent}/tools/{tool}", status_code=204, summary="Detach a tool")
async def detach_tool(
    agent: AgentName, tool: ToolName, user: CurrentUser, kernel: KernelDep
) -> Response:
    if not kernel.detach_tool(agent, tool, user.owner):
        raise APIError(
            404, f"the agent has no tool {tool!r} attached", "not_found_error", code="not_attached"
        )
    return Response(status_code=204)


# --- grants -------------------------------------------------------------------------


@router.get("/agents/{agent}/grants", summary="An agent's grants (other agents, shared files)")
async def list_grants(agent: AgentName, user: CurrentUser, kernel: KernelDep) -> dict[str, Any]:
    return {"grants": kernel.list_grants(agent, user.owner)}


@router.post("/agents/{agent}/grants", status_code=201, summary="Grant an agent access")
async def add_grant(
    agent: AgentName, body: GrantAdd, user: CurrentUser, kernel: KernelDep
) -> dict[str, Any]:
    kernel.grant(agent, body.kind, body.target, body.mode, owner=user.owner)
    return {"grants": kernel.list_grants(agent, user.owner)}


@router.delete("/agents/{agent}/grants/{kind}/{target}", status_code=204, summary="Revoke a grant")
async def remove_grant(
    agent: AgentName,
    kind: Literal["agent", "files", "net"],
    target: Annotated[str, Path(max_length=128)],
    user: CurrentUser,
    kernel: KernelDep,
) -> Response:
    if not kernel.revoke(agent, kind, target, owner=user.owner):
        raise APIError(404, f"the agent has no {kind} grant on {target!r}", "not_found_error")
    return Response(status_code=204)


# --- approvals ----------------------------------------------------------------------


@router.get("/approvals", summary="Calls of irreversible tools waiting for your decision")
async def list_approvals(
    user: CurrentUser,
    kernel: KernelDep,
    status: Annotated[
        Literal["pending", "approved", "denied", "all"], Query(description="which to list")
    ] = "pending",
) -> dict[str, Any]:
    return {"approvals": kernel.approvals(user.owner, None if status == "all" else status)}


@router.get("/approvals/{approval_id}", summary="One approval")
async def get_approval(
    approval_id: ApprovalId, user: CurrentUser, kernel: KernelDep
) -> dict[str, Any]:
    return kernel.approval(approval_id, user.owner)  # ApprovalNotFound: 404


@router.post("/approvals/{approval_id}", summary="Approve or deny a call; the agent gets it")
async def decide(
    approval_id: ApprovalId, body: Decision, user: CurrentUser, kernel: KernelDep, state: State
) -> dict[str, Any]:
    # Check first, so a wrong id is a clean 404 before any task starts.
    kernel.approval(approval_id, user.owner)  # ApprovalNotFound: 404
    task = state.spawn(kernel.decide(approval_id, body.approve, body.reason, owner=user.owner))
    # shield: the decision is taken and its turn runs even if the client leaves
    turn = await asyncio.shield(task)  # AlreadyDecided: 409
    return {
        "approval": kernel.approval(approval_id, user.owner),
        "turn": turn_body(turn),
    }


# --- audit --------------------------------------------------------------------------


@router.get("/audit", summary="Your audit log, newest first, paged by id")
async def audit(
    user: CurrentUser,
    kernel: KernelDep,
    agent: Annotated[
        str | None, Query(max_length=128, description="one agent's name or id")
    ] = None,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_INT, description="only entries with a smaller id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    entries = kernel.audit(user.owner, agent=agent, limit=limit, before=before)
    # the next page starts below the last id of this one
    more = len(entries) == limit
    return {"entries": entries, "next_before": entries[-1]["id"] if more and entries else None}
