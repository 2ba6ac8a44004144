"""How a turn asks the model, and the transcript protocol's side of a step.

`shape_turn` decides, before a turn's first step, how its steps ask the
model (the profile's protocol, the agent's memory mode) and does the memory
work the mode gives the kernel: paging in, and extracting a fact the user
stated (`agent/paging.py`). `transcript_reply` turns a transcript step's text
into the calls a capable model would have made, with the repetition guard.
The step loop itself is `agent/loop.py`.

Left out: streaming (the reply is handled whole).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmos.agent.paging import extract_fact, memory_calls, memory_mode, page_in
from llmos.agent.syscalls import LLMSyscall
from llmos.llm.core import ChatResponse, CoreError, ToolCall, Usage
from llmos.llm.models import ModelInfo, lookup
from llmos.memory.transcript import MemoryLine, ban_first, exchanges, parse_reply

if TYPE_CHECKING:
    from llmos.agent.syscalls import KernelInterface as Kernel
    from llmos.llm.core import ChatRequest, Core
    from llmos.memory.image import AgentImage


@dataclass(slots=True)
class StepShape:
    """How this turn's steps ask the model: its protocol, memory mode, paged-in memory."""

    transcript: bool = False  # the window as a transcript, the reply as text
    chat_template: bool = True
    mode: str = "self"
    paged: list[str] = field(default_factory=list)
    memory_lines: bool = False  # the model may write memory lines after its reply
    facts: list[str] = field(default_factory=list)  # extracted from the user's message
    usage: Usage = field(default_factory=Usage)  # of the steps that shaped the turn


def profile_of(core: Core) -> ModelInfo:
    """The core's model profile; a malformed overrides file is reported where
    it is read (`llmos models`), not by failing every turn."""
    try:
        return lookup(core.name)
    except ValueError:
        return ModelInfo(core.name)


async def shape_turn(kernel: Kernel, image: AgentImage, core: Core) -> StepShape:
    """The turn's step shape, paging memory in for its newest user message if the mode says so."""
    info = profile_of(core)
    shape = StepShape(
        transcript=info.reply_protocol == "transcript",
        chat_template=info.chat_template,
        mode=memory_mode(image, info.default_memory_mode),
    )
    shape.memory_lines = shape.transcript and shape.mode != "auto"
    if shape.mode != "self":
        query = next((m for m in reversed(image.window) if m.role == "user"), None)
        if query is not None:
            shape.paged = await page_in(kernel, image, query, include_window=shape.transcript)
            if shape.transcript and image.setting("extract_facts"):
                fact, shape.usage = await extract_fact(kernel, image, core, query)
                shape.facts = [fact] if fact else []
    return shape


REPEAT_LOOKBACK = 4  # a reply is checked against the agent's last this many
REPEAT_RATIO = 0.9  # difflib similarity from which a reply counts as a repeat
#: re-decoding a repeat: the same request, its reply's first character banned
#: by the grammar, sampled at these temperatures in turn
REDECODE_TEMPERATURES = (0.0, 0.8)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def repeats(reply: str, earlier: list[str]) -> bool:
    """Whether `reply` is (nearly) one of the `earlier` replies."""
    mine = _norm(reply)
    for other in map(_norm, earlier):
        if mine == other or difflib.SequenceMatcher(None, mine, other).ratio() >= REPEAT_RATIO:
            return True
    return False


async def transcript_reply(
    kernel: Kernel,
    image: AgentImage,
    core: Core,
    request: ChatRequest,
    response: ChatResponse,
    usage: Usage,
    shape: StepShape,
) -> ChatResponse:
    """A transcript step's output as the calls a capable model would have made:
    `send_message` with the reply, then its memory lines and the turn's
    extracted facts as memory calls; all run through the executor and are
    stored like any other.

    A small model over a long, samey history repeats its own replies word for
    word (Gemma 3 270M did): a reply like one of the last REPEAT_LOOKBACK is
    decoded again with the first characters of the replies it repeated banned
    (`ban_first`), at each of REDECODE_TEMPERATURES until one is not a
    repeat; if none is, the last is kept."""
    names = {s.name for s in kernel.tool_specs(image)}
    reply, lines = parse_reply(response.content, names)
    earlier = [t for who, t in exchanges(image.window) if who != "User:"][-REPEAT_LOOKBACK:]
    grammar = request.grammar
    for temperature in REDECODE_TEMPERATURES:
        if not repeats(reply, earlier):
            break
        if grammar is None and temperature == request.temperature:
            continue  # nothing to ban (a core without grammars): the same request
        grammar = ban_first(grammar, reply) if grammar else None
        # Not streamed: the user saw the first decode; the `reply` event corrects it.
        again = dataclasses.replace(
            request, temperature=temperature, grammar=grammar, on_delta=None
        )
        try:
            retry = await kernel.syscall(LLMSyscall(agent_id=image.id, core=core, request=again))
        except CoreError:
            break  # the first answer stands
        usage += retry.usage  # in place: the turn's usage
        reply, lines = parse_reply(retry.content, names)
    calls = [ToolCall(_call_id(), "send_message", json.dumps({"message": reply}))]
    if not shape.memory_lines:
        lines = []  # a core that ignores the grammar may write them anyway
    facts = [MemoryLine("core", f) for f in shape.facts]
    calls += memory_calls(image, [*lines, *facts], _call_id)
    return ChatResponse(None, calls, response.usage, "tool_calls")


def _call_id() -> str:
    return f"call_{secrets.token_hex(6)}"
