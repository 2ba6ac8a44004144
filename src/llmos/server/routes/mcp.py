"""MCP server routes: register the caller's MCP servers, whose tools agents can attach.

| route (under `/v1`)                                     | what                         |
|---------------------------------------------------------|------------------------------|
| `GET /mcp`                                              | the caller's servers, tools  |
| `POST /mcp` `{name, command, args}` or `{name, url}`    | register one (201)           |
| `DELETE /mcp/{name}`                                    | forget one; agents lose them |

They run in the server's kernel, which starts the servers' sessions and
caches agents' tool lists: registered by a command's own kernel beside a
running service, a server's tools did not reach the service's cached lists
(and a removed one's session kept running there). Registering connects once
to list the server's tools (422 with the reason if that fails, and nothing is
stored). A stdio server is a command run on the server's machine and an HTTP
one is reached from it, so registering is refused (403) unless the operator
lets users do that (`server_files`: only the local kernel service, whose one
user is the machine's). Servers are per user, like tools.

Left out: headers or auth for HTTP servers, and a stdio server's environment
(see `tools/mcp.py`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmos.server.deps import APIError, CurrentUser, KernelDep, State

router = APIRouter(tags=["tools"])

ServerName = Annotated[str, Path(description="The MCP server's name.", max_length=64)]


class McpAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="tools are named NAME__tool")
    command: str | None = Field(None, min_length=1, max_length=4096, description="stdio server")
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=256)
    url: str | None = Field(None, min_length=1, max_length=2048, description="streamable HTTP")
    irreversible: bool = Field(False, description="every call of its tools needs approval")

    @model_validator(mode="after")
    def _one(self) -> McpAdd:
        if (self.command is None) == (self.url is None):
            raise ValueError("give a command (stdio) or a url (streamable HTTP), not both")
        return self


@router.get("/mcp", summary="Your MCP servers and their tools")
async def list_servers(user: CurrentUser, kernel: KernelDep) -> dict[str, Any]:
    return {"servers": kernel.mcp.list(user.owner)}


@router.post("/mcp", status_code=201, summary="Register an MCP server and its tools")
async def add_server(
    body: McpAdd, user: CurrentUser, kernel: KernelDep, state: State
) -> dict[str, Any]:
    if not state.config.server_files:
        raise APIError(
            403,
            "this server does not run or reach MCP servers for its users",
            "permission_error",
        )
    return await kernel.mcp.add(
        body.name,
        user.owner,
        command=body.command,
        args=body.args,
        url=body.url,
        irreversible=body.irreversible,
    )


@router.delete(
    "/mcp/{name}", status_code=204, summary="Forget an MCP server; agents lose its tools"
)
async def remove_server(name: ServerName, user: CurrentUser, kernel: KernelDep) -> Response:
    await kernel.mcp.remove(name, user.owner)
    return Response(status_code=204)
