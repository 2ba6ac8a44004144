"""OpenAI-compatible routes: any OpenAI client talks to a stateful agent.

`POST /v1/chat/completions` treats `model` as the name of one of the caller's
agents. The agent is stateful — it keeps the whole conversation in its own
memory — so only the *last user message* of `messages` is delivered to it;
earlier messages, system prompts and sampling parameters (temperature, tools,
…) are accepted and ignored. The agent's reply (everything it said with
`send_message` in the turn, joined by newlines) is the assistant message.
With `stream: true` the reply comes as `chat.completion.chunk` events and ends
with `data: [DONE]`: on a core that streams, as the tokens are generated (the
turn's `token` events, in runs that end at whitespace so `scrub` sees a
key-like word whole); else each reply at once. The agent's inner thoughts
travel as `reasoning_content` deltas, which OpenAI clients ignore and
reasoning-aware ones show.

finish_reason is "stop" for a turn that ended normally and "length" for one
cut by the step cap or the window. A turn whose core failed is a 503 with
`x-should-retry: false` (the SDK must not resend: the agent already has the
message); in a stream, an `{"error": ...}` event, which OpenAI SDKs raise.

`GET /v1/models` lists the caller's agents as models.

Left out: n > 1, logprobs, tool calls to the client's own tools (an agent
calls its own functions), the legacy completions and the Responses API.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from llmos.kernel.kernel import AgentNotFound
from llmos.server.deps import (
    APIError,
    CurrentUser,
    KernelDep,
    State,
    TurnRun,
    failed_turn_error,
    scrub,
)

router = APIRouter(tags=["openai"])

FINISH = {"end_turn": "stop", "max_steps": "length", "context_overflow": "length"}
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(max_length=64)
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=256)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # Sampling and tool parameters of OpenAI's API are accepted and ignored.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=128, description="the name of one of your agents")
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return "\n".join(p.text for p in message.content or [] if p.type == "text" and p.text)


def _agent_or_404(kernel: Any, model: str, owner: str) -> dict[str, Any]:
    try:
        return kernel.get_agent(model, owner)
    except AgentNotFound:
        raise APIError(
            404,
            f"The model '{model}' does not exist: name one of your agents (GET /v1/models)",
            "invalid_request_error",
            code="model_not_found",
        ) from None


@router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completion; `model` names one of your agents",
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def chat_completions(
    body: ChatCompletionRequest, user: CurrentUser, kernel: KernelDep, state: State
) -> Any:
    agent = _agent_or_404(kernel, body.model, user.owner)
    last = next((m for m in reversed(body.messages) if m.role == "user"), None)
    if last is None:
        raise APIError(
            400, "messages has no user message to send the agent", code="no_user_message"
        )
    text = _text(last)
    if not text.strip():
        raise APIError(400, "the last user message is empty", code="empty_message")
    run = TurnRun(state, kernel, agent["id"], text, user.owner)
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not body.stream:
        turn = await run.result()
        if turn.stop_reason == "error":
            raise failed_turn_error(turn)
        usage = turn.usage
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": agent["name"],
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": scrub(turn.reply), "refusal": None},
                    "logprobs": None,
                    "finish_reason": FINISH.get(turn.stop_reason, "stop"),
                }
            ],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            },
        }
    await run.admitted()
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        _chunks(run, cid, created, agent["name"], include_usage),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def _chunks(
    run: TurnRun, cid: str, created: int, model: str, include_usage: bool
) -> AsyncIterator[str]:
    def chunk(
        delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None
    ) -> str:
        body: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": []
            if usage is not None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(scrub(body), ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    replies = 0  # replies begun: the second and later start on a new line
    streamed = ""  # the current reply's text sent as tokens
    held = ""  # token text after the last whitespace: a word may go on (see scrub)
    lead = ""  # what the streamed reply began with: a newline after an earlier reply
    in_reply = False  # tokens of a reply have come, and its `reply` event has not
    async for event in run.events():
        kind = event["type"]
        if kind == "token":
            if not in_reply:
                held = lead = "\n" if replies else ""
                replies, in_reply = replies + 1, True
            held += event["text"]
            cut = max(held.rfind(" "), held.rfind("\n"), held.rfind("\t")) + 1
            if cut:
                streamed += held[:cut]
                yield chunk({"content": held[:cut]})
                held = held[cut:]
        elif kind == "reply":
            if in_reply:  # the reply was streamed: send only what is missing
                sent = (streamed + held)[len(lead) :]
                rest = event["text"][len(sent) :] if event["text"].startswith(sent) else ""
                if held + rest:
                    yield chunk({"content": held + rest})
                streamed = held = ""
                in_reply = False
            else:
                yield chunk({"content": event["text"] if not replies else "\n" + event["text"]})
                replies += 1
        elif kind == "reasoning":
            yield chunk({"reasoning_content": event["text"]})
    if held:  # a turn that ended without its reply (failed, cancelled)
        yield chunk({"content": held})
    try:
        turn = await run.result()
    except Exception as exc:
        yield _error_event(scrub(str(exc)) or "internal error", "server_error")
    else:
        if turn.stop_reason == "error":
            err = failed_turn_error(turn).body()["error"]
            yield _error_event(err["message"], err["type"])
        else:
            yield chunk({}, FINISH.get(turn.stop_reason, "stop"))
            if include_usage:
                u = turn.usage
                yield chunk(
                    {},
                    usage={
                        "prompt_tokens": u.prompt_tokens,
                        "completion_tokens": u.completion_tokens,
                        "total_tokens": u.prompt_tokens + u.completion_tokens,
                    },
                )
    yield "data: [DONE]\n\n"


def _error_event(message: str, type_: str) -> str:
    return f"data: {json.dumps({'error': {'message': message, 'type': type_}})}\n\n"


def _model_card(agent: dict[str, Any], owner: str) -> dict[str, Any]:
    return {
        "id": agent["name"],
        "object": "model",
        "created": int(agent["created_at"]),
        "owned_by": owner,
    }


@router.get("/models", summary="Your agents, as OpenAI models")
async def list_models(user: CurrentUser, kernel: KernelDep) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [_model_card(a, user.owner) for a in kernel.list_agents(user.owner)],
    }


@router.get("/models/{model}", summary="One of your agents, as an OpenAI model")
async def get_model(
    model: Annotated[str, Path(max_length=128)], user: CurrentUser, kernel: KernelDep
) -> dict[str, Any]:
    return _model_card(_agent_or_404(kernel, model, user.owner), user.owner)
