"""Long operations on an agent's archival memory, with their progress: a new embedder, documents.

| route (under `/v1`)                              | what                                   |
|--------------------------------------------------|----------------------------------------|
| `POST /agents/{agent}/embedder` `{embedder}`     | switch the embedder, re-embed passages |
| `POST /agents/{agent}/documents` `{paths, ...}`  | load files into archival memory        |

Both run in the server's kernel, which holds the agent meanwhile (its turns
wait) and whose cached image of it they update: run in a command's own
kernel beside a running service, they left the service with the old
embedder in memory. Without `stream` they answer the result; with `stream`
they answer `text/event-stream`, `progress` events as the work goes on, then
`done` with the result (or `error`):

    event: progress  data: {"type": "progress", "done": 10, "total": 40, ...}
    event: done      data: {"type": "done", "result": {...}}
    event: error     data: {"type": "error", "error": {"type", "message"}}

A client that disconnects mid-stream stops the work: a re-embedding changes
nothing until its last transaction, and a load resumes where it stopped when
asked again. `documents` names files on the server's own disk, so it is
refused (403) unless the operator lets users do that (`server_files`, which
only the local kernel service sets: its one user is the machine's).

Left out: uploading documents' contents over HTTP (so `llmos load` needs
the local service, not `--url`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from llmos.memory.embedders import EmbeddingError
from llmos.server.deps import APIError, CurrentUser, KernelDep, State, check_choices, scrub
from llmos.server.routes.messages import SSE_HEADERS, STREAM_DOC, sse

router = APIRouter(tags=["memory"])

AgentName = Annotated[str, Path(description="The agent's name or id.", max_length=128)]
Report = Callable[[dict[str, Any]], None]


class EmbedderSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    embedder: str = Field(min_length=1, max_length=256, description="e.g. openai/MODEL")
    stream: bool = Field(False, description="answer with Server-Sent Events of the progress")


class DocumentLoad(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        min_length=1, max_length=10_000, description="absolute paths of files or directories"
    )
    chunk_size: int = Field(800, ge=1, le=1_000_000, description="characters per chunk")
    overlap: int = Field(100, ge=0, le=1_000_000, description="characters repeated between chunks")
    batch_size: int = Field(32, ge=1, le=1024, description="chunks embedded per batch")
    stream: bool = Field(False, description="answer with Server-Sent Events of the progress")


@router.post(
    "/agents/{agent}/embedder",
    summary="Switch the agent's embedder and re-embed its archival passages",
    responses=STREAM_DOC,
)
async def set_embedder(
    agent: AgentName, body: EmbedderSwitch, user: CurrentUser, kernel: KernelDep, state: State
) -> Any:
    kernel.process(agent, user.owner)  # 404 first, and while a status can still be sent
    check_choices(state.config, embedder=body.embedder)
    kernel.embedder(body.embedder)  # an unknown spec: 400

    async def work(report: Report) -> dict[str, Any]:
        def progress(done: int, total: int) -> None:
            report({"done": done, "total": total})

        return await kernel.set_embedder(agent, body.embedder, owner=user.owner, progress=progress)

    return await _answer(work, body.stream)


@router.post(
    "/agents/{agent}/documents",
    summary="Load files of the server's disk into the agent's archival memory",
    responses=STREAM_DOC,
)
async def load_documents(
    agent: AgentName, body: DocumentLoad, user: CurrentUser, kernel: KernelDep, state: State
) -> Any:
    kernel.process(agent, user.owner)  # 404 first: another user's agent is not there
    if not state.config.server_files:
        raise APIError(
            403,
            "this server does not load files from its own disk for its users; insert the "
            "text with POST /v1/agents/{agent}/archival instead",
            "permission_error",
        )
    paths = [FsPath(p) for p in body.paths]
    relative = [str(p) for p in paths if not p.is_absolute()]
    if relative:
        raise APIError(422, f"paths must be absolute: {', '.join(relative)}")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise APIError(422, f"no such file or directory: {', '.join(missing)}")

    async def work(report: Report) -> dict[str, Any]:
        try:
            loaded = await kernel.load_documents(
                agent,
                list(paths),
                user.owner,
                progress=lambda p: report(dataclasses.asdict(p)),
                chunk_size=body.chunk_size,
                overlap=body.overlap,
                batch_size=body.batch_size,
            )
        except EmbeddingError as e:  # what was committed stays: the same load resumes
            raise EmbeddingError(f"{e} (the load stopped; load again to resume)") from e
        return loaded.as_dict()

    return await _answer(work, body.stream)


async def _answer(work: Callable[[Report], Awaitable[dict[str, Any]]], stream: bool) -> Any:
    if not stream:
        return scrub(await work(lambda _p: None))
    return StreamingResponse(_events(work), media_type="text/event-stream", headers=SSE_HEADERS)


async def _events(work: Callable[[Report], Awaitable[dict[str, Any]]]) -> AsyncIterator[str]:
    """The work's progress as it reports it, then its result or error."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.ensure_future(work(queue.put_nowait))
    try:
        while not task.done():
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield sse("progress", {"type": "progress", **getter.result()})
            else:
                getter.cancel()
        while not queue.empty():
            yield sse("progress", {"type": "progress", **queue.get_nowait()})
        try:
            result = task.result()
        except Exception as exc:  # after the stream began: report it in the stream
            kind = "invalid_request_error" if isinstance(exc, ValueError) else "server_error"
            message = str(exc.args[0]) if isinstance(exc, LookupError) and exc.args else str(exc)
            yield sse(
                "error", {"type": "error", "error": {"type": kind, "message": scrub(message)}}
            )
            return
        yield sse("done", {"type": "done", "result": scrub(result)})
    finally:
        if not task.done():  # the client went away: stop the work
            task.cancel()
