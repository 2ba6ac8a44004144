"""The agent step loop: MemGPT's semantics, one turn at a time.

A turn starts with an event (a user message) that is committed to recall
storage before anything else, so a crash never loses it. Then steps run until
one ends the turn:

1. compile the window (flushing memory first if it is above the flush
   fraction; adding a memory-pressure alert above the warning fraction);
2. an `llm` syscall runs it on the agent's core;
3. each function call goes through a `tool` syscall (validated, executed,
   failures returned to the model);
4. the step's messages and memory effects commit in one transaction;
5. `request_heartbeat` or a failed call chains another step; otherwise the
   turn ends. A step cap ends runaway chains.

With an event sink, each step's request streams (`ChatRequest.on_delta`):
the reply's text reaches the sink as `token` events while it is generated
(`agent/stream.py`), before the step's `reply` event, and adds up to it.

A backend's "context length exceeded" flushes the window and retries once.
Every turn ends with a stop reason: `end_turn`, `max_steps`, `repeated_call`,
`error`, `context_overflow`, `cancelled` (set by the kernel), `waiting_approval`
(an irreversible tool's call waits for its owner; the decision comes back as a
new event).

How a step asks the model follows the model's profile (`llm/models.py`):
capable chat models get MemGPT's function-calling window; small and base
models get the window as a transcript to continue (`memory/transcript.py`),
and their text reply becomes a `send_message` call run like any other, so
the turn's reply and stored messages look the same either way; its memory
lines become core memory and archival calls run the same way, and a reply
that repeats one of the agent's last few is decoded again, differently
(`agent/shape.py`). Before the first step, the agent's memory mode may
page relevant memory into the window and extract a fact the user stated
(`agent/paging.py`).

The loop sees the kernel only through `agent/syscalls.py`'s
`KernelInterface`; the kernel's process table tracks the agent's state from
the syscalls it makes (waiting for a core, running a tool).

Left out: timers (heartbeats come only from function calls).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmos.agent.paging import offered
from llmos.agent.shape import StepShape, shape_turn, transcript_reply
from llmos.agent.shape import profile_of as profile_of  # the kernel reads profiles here
from llmos.agent.stream import ReplyStream
from llmos.agent.syscalls import FunctionContext, LLMSyscall, StepWrites, ToolSyscall
from llmos.llm.core import ChatResponse, ContextLengthExceeded, CoreError, Usage
from llmos.memory.recall import StoredMessage
from llmos.memory.summarize import summarize
from llmos.memory.transcript import compile_transcript
from llmos.memory.window import (
    CompiledWindow,
    ContextOverflow,
    compile_window,
    eviction_point,
    message_tokens,
)

if TYPE_CHECKING:
    from llmos.agent.syscalls import KernelInterface as Kernel
    from llmos.llm.core import ChatRequest, Core
    from llmos.memory.image import AgentImage

PRESSURE_ALERT = (
    "Memory pressure: {pct}% of your context window is in use. The oldest messages "
    "will soon be evicted to recall memory and replaced by a summary. Save anything "
    "important to core memory or archival memory now."
)
#: receives {"type": "token"|"reasoning"|"function_call"|"function_result"|"reply", ...}
EventSink = Callable[[dict[str, Any]], None]


def _ignore(_event: dict[str, Any]) -> None:
    return None


NO_CALL_ALERT = "You must act by calling a function; to answer the user, call send_message."
PAGED_ALERT = "Memory paged in for this message (from recall and archival storage):\n{items}"


@dataclass(slots=True)
class FunctionCallRecord:
    name: str
    arguments: str
    ok: bool
    result: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arguments": self.arguments,
            "ok": self.ok,
            "result": self.result,
        }


@dataclass(slots=True)
class Turn:
    """Everything one turn did: new messages, calls, replies, usage, why it stopped."""

    agent: str
    messages: list[StoredMessage] = field(default_factory=list)
    function_calls: list[FunctionCallRecord] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    steps: int = 0
    flushes: int = 0
    stop_reason: str = ""
    error: str | None = None
    not_undone: list[str] = field(default_factory=list)  # a retry's effects that stayed

    @property
    def reply(self) -> str:
        return "\n".join(self.replies)

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "reply": self.reply,
            "replies": list(self.replies),
            "stop_reason": self.stop_reason,
            "error": self.error,
            "steps": self.steps,
            "flushes": self.flushes,
            "usage": self.usage.as_dict(),
            "function_calls": [c.as_dict() for c in self.function_calls],
            "messages": [m.as_dict() for m in self.messages],
            "not_undone": list(self.not_undone),
        }


async def run_turn(
    kernel: Kernel,
    image: AgentImage,
    core: Core,
    events: list[StoredMessage],
    turn: Turn,
    on_event: EventSink | None = None,
) -> None:
    """Commit the turn's events, then run steps until one ends the turn, filling `turn`.

    A cancel (from the kernel) may land anywhere, even while the events' write
    waits for its group commit: the write goes ahead and the events are kept;
    the step in flight is dropped whole, having committed nothing."""
    emit = on_event or _ignore
    await kernel.commit_step(image, events)
    emit({"type": "stored"})  # the events are durable: a server may now answer 200
    turn.messages.extend(events)
    shape = await shape_turn(kernel, image, core)
    turn.usage += shape.usage
    await _steps(kernel, image, core, turn, emit, shape)


async def _steps(
    kernel: Kernel, image: AgentImage, core: Core, turn: Turn, emit: EventSink, shape: StepShape
) -> None:
    alerts: list[str] = []
    previous_calls: list[tuple[str, str]] = []
    overflow_retried = False
    max_steps = int(image.setting("max_steps"))

    while True:
        if turn.steps >= max_steps:
            turn.stop_reason = "max_steps"
            break
        turn.steps += 1
        try:
            window = await _prepare_window(kernel, image, core, turn, alerts, shape)
        except ContextOverflow as err:
            turn.stop_reason, turn.error = "context_overflow", str(err)
            break
        alerts = []
        stream = ReplyStream(emit, shape.transcript) if emit is not _ignore else None
        window.request.on_delta = stream

        try:
            response = await kernel.syscall(
                LLMSyscall(
                    agent_id=image.id,
                    core=core,
                    request=window.request,
                    priority=float(image.setting("priority")),
                )
            )
        except ContextLengthExceeded as err:
            if overflow_retried:
                turn.stop_reason, turn.error = "context_overflow", str(err)
                break
            # Our count said it fits and the backend disagrees: evict down to
            # the target and try once more (the step does not count).
            overflow_retried = True
            await flush(kernel, image, core, turn, force=True, shape=shape)
            turn.steps -= 1
            continue
        except CoreError as err:
            turn.stop_reason, turn.error = "error", str(err)
            break
        turn.usage += response.usage
        if shape.transcript:
            response = await transcript_reply(
                kernel, image, core, window.request, response, turn.usage, shape
            )

        chain, failed = await _run_step(kernel, image, core, response, turn, emit, stream)
        if failed == "no_call":
            alerts = [NO_CALL_ALERT]
        if failed == "waiting_approval":
            # the decision arrives later as its own event (Kernel.decide)
            turn.stop_reason = "waiting_approval"
            break
        calls = [(c.name, c.arguments) for c in response.tool_calls]
        if chain and calls and calls == previous_calls:
            # The same calls twice in a row cannot make progress (a weak model
            # echoing itself, or a retry of an identical failing call): stop
            # rather than burn the remaining steps.
            turn.stop_reason = "repeated_call"
            break
        previous_calls = calls
        if not chain or shape.transcript:  # a transcript step is the whole turn
            turn.stop_reason = "end_turn"
            break


def _compile(
    kernel: Kernel,
    image: AgentImage,
    core: Core,
    alerts: list[str],
    shape: StepShape | None,
    *,
    trim: bool = True,
) -> CompiledWindow:
    """The step's window in the shape's protocol (MemGPT's without a shape)."""
    if shape is not None and shape.transcript:
        return compile_transcript(
            image,
            core,
            shape.paged,
            image.max_tokens,
            chat_template=shape.chat_template,
            trim=trim,
            memory_lines=shape.memory_lines,
            paging=shape.mode != "self",
        )
    specs = kernel.tool_specs(image)  # built-ins + the agent's attached tools
    if shape is not None:
        specs = offered(specs, shape.mode)
        if shape.paged:
            items = "\n".join(f"- {p}" for p in shape.paged)
            alerts = [*alerts, PAGED_ALERT.format(items=items)]
    return compile_window(image, core, specs, alerts, image.max_tokens, trim=trim)


async def _prepare_window(
    kernel: Kernel,
    image: AgentImage,
    core: Core,
    turn: Turn,
    alerts: list[str],
    shape: StepShape | None = None,
) -> CompiledWindow:
    """The step's window: flushed first above the flush fraction, with a
    memory-pressure alert the first time it passes the warning fraction."""
    window = _compile(kernel, image, core, alerts, shape, trim=False)
    if window.total > image.setting("flush_fraction") * window.budget:
        await flush(kernel, image, core, turn, shape=shape)
    elif not image.warned and window.total > image.setting("warning_fraction") * window.budget:
        image.warned = True
        pct = round(100 * window.total / window.budget)
        alerts = [*alerts, PRESSURE_ALERT.format(pct=pct)]
    elif window.total <= window.budget:
        # The common step: nothing changed since measuring, and it fits.
        window.request.temperature = float(image.setting("temperature"))
        return window
    window = _compile(kernel, image, core, alerts, shape)
    window.request.temperature = float(image.setting("temperature"))
    return window


async def _run_step(
    kernel: Kernel,
    image: AgentImage,
    core: Core,
    response: ChatResponse,
    turn: Turn,
    emit: EventSink,
    stream: ReplyStream | None = None,
) -> tuple[bool, str | None]:
    """Execute the response's calls and commit the step. Returns (chain, failure)."""
    assistant = StoredMessage("assistant", response.content, list(response.tool_calls))
    assistant.tokens = message_tokens(core, assistant.to_message())
    text = (response.content or "").strip()
    if not response.tool_calls:
        await kernel.commit_step(image, [assistant])
        turn.messages.append(assistant)
        if text:
            # A model that answers in plain text (some servers ignore
            # tool_choice) has still answered the user.
            turn.replies.append(text)
            if stream is not None:
                stream.finish(text, 0)
            emit({"type": "reply", "text": text})
            return False, None
        return True, "no_call"

    writes = StepWrites()
    ctx = FunctionContext(kernel, image, writes)
    results: list[StoredMessage] = []
    chain = False
    waiting = False
    if text:
        emit({"type": "reasoning", "text": text})
    for index, call in enumerate(response.tool_calls):
        emit(
            {"type": "function_call", "id": call.id, "name": call.name, "arguments": call.arguments}
        )
        result = await kernel.syscall(ToolSyscall(agent_id=image.id, ctx=ctx, call=call))
        emit(
            {
                "type": "function_result",
                "id": call.id,
                "name": call.name,
                "ok": result.ok,
                "message": result.message,
            }
        )
        chain = chain or result.heartbeat
        waiting = waiting or result.waiting_approval is not None
        if result.reply is not None:
            turn.replies.append(result.reply)
            if stream is not None:
                stream.finish(result.reply, index)
            emit({"type": "reply", "text": result.reply})
        turn.function_calls.append(
            FunctionCallRecord(call.name, call.arguments, result.ok, result.message)
        )
        msg = StoredMessage("tool", result.to_content(), tool_call_id=call.id, name=call.name)
        msg.tokens = message_tokens(core, msg.to_message())
        results.append(msg)
    await kernel.commit_step(image, [assistant, *results], writes)
    turn.messages.extend([assistant, *results])
    if waiting:
        return False, "waiting_approval"
    return chain, None


async def flush(
    kernel: Kernel,
    image: AgentImage,
    core: Core,
    turn: Turn | None,
    force: bool = False,
    shape: StepShape | None = None,
) -> int:
    """Evict the oldest messages down to the flush target, folding them into the summary.

    Returns how many messages left the window. `force` evicts even when the
    window looks small enough (the backend said otherwise). The window is
    measured in `shape`'s protocol (MemGPT's without one).
    """
    window = _compile(kernel, image, core, [], shape, trim=False)
    fixed = window.total - window.sections["messages"]
    # The target is a share of the room left for messages, not of the whole
    # budget: on a small window the fixed part alone may be half of it.
    target = fixed + int(image.setting("flush_target") * (window.budget - fixed))
    if force:
        target = min(target, int((window.total - 1) * 0.75))
    n = eviction_point(image.window, fixed, target)
    if n == 0:
        return 0
    evicted = image.window[:n]
    max_summary = max(64, min(512, window.budget // 8))
    if shape is not None and shape.transcript:
        # A small model's "summary" echoes its instructions (Gemma 3 270M
        # repeated them whole) and would then sit in every prompt: keep the
        # old one. What was evicted stays in recall, where paging finds it.
        summary = image.summary
    else:
        summary = await _summary(kernel, image, core, evicted, max_summary)
    summary = _cap(summary, core, max_summary)
    image.summary = summary
    image.window = image.window[n:]
    image.window_start = image.window[0].id
    image.core_snapshot = image.memory.render()
    image.warned = False
    await kernel.commit_step(
        image,
        [],
        agent_fields={
            "summary": image.summary,
            "window_start": image.window_start,
            "core_snapshot": image.core_snapshot,
        },
    )
    if turn is not None:
        turn.flushes += 1
    return n


async def _summary(
    kernel: Kernel, image: AgentImage, core: Core, evicted: list[StoredMessage], max_summary: int
) -> str:
    """The summary with `evicted` folded in, written by the agent's own core."""

    async def llm(request: ChatRequest) -> ChatResponse:
        return await kernel.syscall(LLMSyscall(agent_id=image.id, core=core, request=request))

    try:
        return await summarize(
            llm,
            core.count_tokens,
            image.summary,
            evicted,
            image.context_window,
            max_summary,
            cache_key=image.id,
        )
    except CoreError:
        # Never lose the window to a failed summary: keep the old one and
        # note what was evicted; the messages themselves stay in recall.
        return image.summary + f"\n({len(evicted)} older messages were evicted without a summary.)"


def _cap(text: str, core: Core, max_tokens: int) -> str:
    """A summary may not outgrow its budget, whatever the model wrote."""
    while text and core.count_tokens(text) > max_tokens:
        text = text[: int(len(text) * 0.8)]
    return text
