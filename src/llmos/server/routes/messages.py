"""Message routes: send a message and get the turn (whole, or streamed as SSE), history, retry.

`POST /v1/agents/{agent}/messages` runs one turn. With `stream` false it
answers the whole turn (`Turn.as_dict()`); with `stream` true it answers
`text/event-stream`, one event per thing the agent does as it happens:

    event: token            data: {"type": "token", "text": ...}
    event: reasoning        data: {"type": "reasoning", "text": ...}
    event: function_call    data: {"type": "function_call", "id", "name", "arguments"}
    event: function_result  data: {"type": "function_result", "id", "name", "ok", "message"}
    event: reply            data: {"type": "reply", "text": ...}
    event: error            data: {"type": "error", "error": {"type", "message"}}   (failed turn)
    event: done             data: {"type": "done", "turn": {...the whole turn...}}

`token` events carry the reply's text as it is generated, before its
`reply` event; together they are the reply's text (a core that cannot stream
sends it as one token). They are only the text the user reads: never a
function call's JSON, never the inner monologue. Tokens are sent in runs that
end at whitespace, so that `scrub` sees a key-like word whole.

A stream ends with `done`. A client that disconnects mid-stream does not stop
the turn: the message was accepted, and the turn's messages are committed as
usual. A failed turn (its core failed) is a 503 when not streaming; see
`deps.py` for why and what to do.

Left out: sending on behalf of another role than the user, and resuming a
dropped stream (read the history instead).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from llmos.server.deps import (
    APIError,
    CurrentUser,
    KernelDep,
    State,
    TurnRun,
    failed_turn_error,
    scrub,
    turn_body,
)

router = APIRouter(tags=["messages"])

AgentName = Annotated[str, Path(description="The agent's name or id.", max_length=128)]

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
STREAM_DOC = {
    200: {
        "description": "The turn as JSON, or with `stream` an SSE stream of its events.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


class SendMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=1_000_000, description="the user's message")
    stream: bool = Field(False, description="answer with Server-Sent Events as the turn runs")


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.post(
    "/agents/{agent}/messages",
    summary="Send a message; get the agent's whole turn, or stream it",
    responses=STREAM_DOC,
)
async def send_message(
    agent: AgentName,
    body: SendMessage,
    user: CurrentUser,
    kernel: KernelDep,
    state: State,
    stream: Annotated[bool | None, Query(description="same as the body's `stream`")] = None,
) -> Any:
    if not body.text.strip():
        raise APIError(422, "text: the message is empty")
    run = TurnRun(state, kernel, agent, body.text, user.owner)
    if not (stream if stream is not None else body.stream):
        turn = await run.result()
        if turn.stop_reason == "error":
            raise failed_turn_error(turn)
        return turn_body(turn)
    await run.admitted()  # 404 / 422 while a status can still be sent
    return StreamingResponse(_stream(run), media_type="text/event-stream", headers=SSE_HEADERS)


async def _stream(run: TurnRun) -> AsyncIterator[str]:
    held = ""  # token text after the last whitespace: a word may go on
    async for event in run.events():
        if event["type"] == "token":
            held += event["text"]
            cut = max(held.rfind(" "), held.rfind("\n"), held.rfind("\t")) + 1
            if cut:
                yield sse("token", {"type": "token", "text": scrub(held[:cut])})
                held = held[cut:]
            continue
        if held:
            yield sse("token", {"type": "token", "text": scrub(held)})
            held = ""
        yield sse(event["type"], scrub(event))
    if held:  # a turn that ended without its reply (failed, cancelled)
        yield sse("token", {"type": "token", "text": scrub(held)})
    try:
        turn = await run.result()
    except Exception as exc:  # after the stream began: report it in the stream
        yield sse(
            "error",
            {"type": "error", "error": {"type": "server_error", "message": scrub(str(exc))}},
        )
        return
    if turn.stop_reason == "error":
        err = failed_turn_error(turn)
        yield sse("error", {"type": "error", "error": err.body()["error"]})
    yield sse("done", {"type": "done", "turn": turn_body(turn)})


@router.post(
    "/agents/{agent}/messages/retry",
    summary="Run the last user message again, undoing the agent's first answer to it",
    description=(
        "The last user message and everything after it are forgotten, and the turn's "
        "effects undone: core memory blocks get back their values from before the turn, "
        "archival passages it inserted are deleted, files it wrote get back their earlier "
        "version. Then the message runs again. The turn's `not_undone` lists what could "
        "not be undone (a tool's side effect, a message another agent received)."
    ),
)
async def retry(
    agent: AgentName, user: CurrentUser, kernel: KernelDep, state: State
) -> dict[str, Any]:
    task = state.spawn(kernel.retry(agent, owner=user.owner))
    turn = await asyncio.shield(task)
    if turn.stop_reason == "error":
        raise failed_turn_error(turn)
    return turn_body(turn)


@router.get("/agents/{agent}/messages", summary="Message history, newest first, paged")
async def history(
    agent: AgentName,
    user: CurrentUser,
    kernel: KernelDep,
    before: Annotated[
        int | None, Query(ge=0, le=1 << 62, description="only messages with ids below this")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    msgs = kernel.messages(agent, user.owner, before=before, limit=limit)
    return {
        "messages": [scrub(m.as_dict()) for m in msgs],
        # the next (older) page: pass this as `before`
        "next_before": msgs[-1].id if len(msgs) == limit else None,
    }


@router.post(
    "/agents/{agent}/cancel",
    summary="Cancel the agent's running turn (committed steps stay)",
)
async def cancel(agent: AgentName, user: CurrentUser, kernel: KernelDep) -> dict[str, Any]:
    return {"cancelled": kernel.cancel(agent, owner=user.owner)}
