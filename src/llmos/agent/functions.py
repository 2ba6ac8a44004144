"""The built-in functions every agent has: MemGPT's memory functions, by MemGPT's names.

MemGPT's `pause_heartbeats` is left out: llmos has no timed heartbeats for it
to pause (a heartbeat comes only from a function call's `request_heartbeat`).

Each function is an argument model (pydantic: its JSON schema is what the model
sees; its validation is what catches a bad call) and an async handler. The
executor `execute()` turns one raw `ToolCall` into a `FunctionResult` and never
raises: unknown names, invalid JSON, wrong argument types and handler errors
all become a failed result that goes back to the model, which then gets
another step to fix its call.

Handlers do not touch the database. They change the agent's in-memory image
and queue writes on the step (`StepWrites`), which the agent loop commits in
one transaction with the step's messages; searches are read-only syscalls.

User tools run elsewhere (`tools/executor.py`, in a sandbox); the file
functions are in `file_functions.py` and the agent-to-agent message functions
in `agent_functions.py`, run by this executor on their own tables, as is
`create_tool` (`SELF_TOOL_FUNCTIONS`, for agents with `self_tools`): the
kernel parses, tests and files the agent's tool for its owner's approval
(`KernelInterface.propose_tool`); the turn then waits like an irreversible
call's.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from llmos.agent.syscalls import (
    AgentSyscall,
    FunctionContext,
    MemorySyscall,
    StorageSyscall,
)
from llmos.errors import LLMOSError
from llmos.llm.core import ToolCall, ToolSpec
from llmos.memory.blocks import MemoryEditError

if TYPE_CHECKING:
    from llmos.agent.syscalls import KernelInterface
    from llmos.memory.image import AgentImage

HEARTBEAT_DOC = "true: take another step after this call"
PAGE_SIZE = 5


class FunctionError(LLMOSError):
    """A function could not do what was asked; the message is for the model."""


@dataclass(slots=True)
class FunctionResult:
    name: str
    ok: bool
    message: str
    heartbeat: bool = False
    reply: str | None = None  # what send_message said to the user
    # an irreversible tool's call stored for approval: the turn ends after this step
    waiting_approval: str | None = None

    def to_content(self) -> str:
        status = "OK" if self.ok else "Failed"
        return json.dumps(
            {"status": status, "message": self.message}, ensure_ascii=False, separators=(",", ":")
        )


# --- argument models ---------------------------------------------------------


class _Args(BaseModel):
    request_heartbeat: bool = Field(False, description=HEARTBEAT_DOC)


class SendMessageArgs(_Args):
    message: str


class CoreMemoryAppendArgs(_Args):
    label: str
    content: str


class CoreMemoryReplaceArgs(_Args):
    label: str
    old_content: str = Field(description="exact text")
    new_content: str = Field(description="'' deletes")


class ConversationSearchArgs(_Args):
    query: str
    page: int = Field(0, ge=0)


class ConversationSearchDateArgs(_Args):
    start_date: str = Field(description="YYYY-MM-DD")
    end_date: str = Field(description="YYYY-MM-DD, inclusive")
    page: int = Field(0, ge=0)


class ArchivalMemoryInsertArgs(_Args):
    content: str = Field(description="self-contained text")


class ArchivalMemorySearchArgs(_Args):
    query: str
    page: int = Field(0, ge=0)


class CreateToolArgs(_Args):
    name: str = Field(max_length=64, description="The tool's name = the function's name")
    source: str = Field(
        max_length=20_000,
        description="Python: one function with typed arguments and a docstring (imports allowed)",
    )
    description: str = Field(max_length=500, description="What the tool does, for you later")
    examples: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=3,
        description='Argument objects to test it with, e.g. [{"x": 2}]',
    )


# --- handlers ----------------------------------------------------------------


async def send_message(ctx: FunctionContext, args: SendMessageArgs) -> FunctionResult:
    return FunctionResult("send_message", True, "Sent.", reply=args.message)


def _edited(ctx: FunctionContext, label: str, verb: str) -> str:
    ctx.writes.blocks.add(label)
    block = ctx.agent.memory.blocks[label]
    # In the stable layout core memory in the system message is a snapshot;
    # this event is how the model sees the block's current text until then.
    return (
        f"{verb} core memory block '{label}' "
        f"({len(block.value)}/{block.limit} characters). It now reads:\n{block.value}"
    )


async def core_memory_append(ctx: FunctionContext, args: CoreMemoryAppendArgs) -> FunctionResult:
    ctx.agent.memory.append(args.label, args.content)
    return FunctionResult("core_memory_append", True, _edited(ctx, args.label, "Appended to"))


async def core_memory_replace(ctx: FunctionContext, args: CoreMemoryReplaceArgs) -> FunctionResult:
    ctx.agent.memory.replace(args.label, args.old_content, args.new_content)
    return FunctionResult("core_memory_replace", True, _edited(ctx, args.label, "Edited"))


def _paged(kind: str, page: int, total: int, items: list[str]) -> str:
    if not items:
        return f"No {kind} results" + (f" on page {page}." if page else ".")
    pages = max(1, -(-total // PAGE_SIZE))
    head = f"Showing {len(items)} of {total} {kind} results (page {page} of 0..{pages - 1}):"
    return "\n".join([head, *items])


async def conversation_search(ctx: FunctionContext, args: ConversationSearchArgs) -> FunctionResult:
    found, total = await search_recall(ctx.kernel, ctx.agent, args.query, args.page)
    items = [_recall_line(m) for m in found]
    return FunctionResult("conversation_search", True, _paged("recall", args.page, total, items))


def _parse_date(value: str, end: bool) -> datetime:
    try:
        day = datetime.strptime(value.strip()[:10], "%Y-%m-%d")
    except ValueError:
        raise FunctionError(f"dates must look like 2024-01-31, got {value!r}") from None
    return day + timedelta(days=1, microseconds=-1) if end else day


async def conversation_search_date(
    ctx: FunctionContext, args: ConversationSearchDateArgs
) -> FunctionResult:
    start, end = _parse_date(args.start_date, False), _parse_date(args.end_date, True)
    found, total = await ctx.kernel.syscall(
        MemorySyscall(
            agent_id=ctx.agent.id,
            op="recall_search_date",
            args={"start": start, "end": end, "page": args.page},
        )
    )
    items = [_recall_line(m) for m in found]
    return FunctionResult(
        "conversation_search_date", True, _paged("recall", args.page, total, items)
    )


def _recall_line(m: Any) -> str:
    when = datetime.fromtimestamp(m.created_at).strftime("%Y-%m-%d %H:%M")
    return f"[{when}] {m.line()}"


async def search_recall(
    kernel: KernelInterface,
    agent: AgentImage,
    query: str,
    page: int,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Any:
    """(messages, total) of one page of the agent's recall search by words, optionally
    within dates (a memory syscall)."""
    args = {"query": query, "page": page, "start": start, "end": end}
    return await kernel.syscall(MemorySyscall(agent_id=agent.id, op="recall_search", args=args))


async def embed(kernel: KernelInterface, agent: AgentImage, texts: list[str]) -> Any:
    """The texts' vectors under the agent's embedder (a storage syscall)."""
    return await kernel.syscall(
        StorageSyscall(
            agent_id=agent.id, op="embed", args={"texts": texts, "embedder": agent.embedder}
        )
    )


async def search_archival(
    kernel: KernelInterface, agent: AgentImage, query: str, page: int, page_size: int = PAGE_SIZE
) -> Any:
    """(passages, total) of one page of the agent's archival search (a storage syscall)."""
    return await kernel.syscall(
        StorageSyscall(
            agent_id=agent.id,
            op="archival_search",
            args={"query": query, "page": page, "page_size": page_size, "embedder": agent.embedder},
        )
    )


async def message_agent(
    kernel: KernelInterface, caller: AgentImage, target: str, message: str, *, wait: bool
) -> str:
    """One agent messages another (an agent syscall); raises FunctionError."""
    return await kernel.syscall(
        AgentSyscall(
            agent_id=caller.id,
            op="ask" if wait else "send",
            args={"caller": caller, "target": target, "message": message},
        )
    )


async def archival_memory_insert(
    ctx: FunctionContext, args: ArchivalMemoryInsertArgs
) -> FunctionResult:
    if not args.content.strip():
        raise FunctionError("content is empty; nothing was stored")
    vector = await embed(ctx.kernel, ctx.agent, [args.content])
    ctx.writes.passages.append((args.content, vector[0]))
    return FunctionResult("archival_memory_insert", True, "Stored in archival memory.")


async def archival_memory_search(
    ctx: FunctionContext, args: ArchivalMemorySearchArgs
) -> FunctionResult:
    found, total = await search_archival(ctx.kernel, ctx.agent, args.query, args.page)
    items = [
        f"[{datetime.fromtimestamp(p.created_at).strftime('%Y-%m-%d %H:%M')}] {p.text}"
        for p in found
    ]
    return FunctionResult(
        "archival_memory_search", True, _paged("archival", args.page, total, items)
    )


async def create_tool(ctx: FunctionContext, args: CreateToolArgs) -> FunctionResult:
    ok, message, approval_id = await ctx.kernel.propose_tool(
        ctx.agent, args.name, args.source, args.description, args.examples
    )
    if not ok:
        raise FunctionError(message)  # a failed result with a heartbeat: fix it and retry
    return FunctionResult("create_tool", True, message, waiting_approval=approval_id)


# --- the table and the executor ----------------------------------------------


@dataclass(slots=True, frozen=True)
class Function:
    name: str
    description: str
    args: type[BaseModel]
    handler: Callable[[FunctionContext, Any], Awaitable[FunctionResult]]

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, _clean_schema(self.args.model_json_schema()))


# What a model needs of a property's schema; the rest (pydantic's titles,
# defaults, bounds) costs tokens on every request, and the arguments are
# validated here anyway, a bad one going back to the model as a failed call.
_KEPT = ("type", "description", "enum", "items", "anyOf")


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The compact schema sent to models: property types, needed descriptions, `required`."""
    props = {
        name: {k: v for k, v in prop.items() if k in _KEPT}
        for name, prop in schema.get("properties", {}).items()
    }
    # request_heartbeat last (a model fills the arguments before deciding to
    # chain), and bare: the system prompt says what it does, once.
    if "request_heartbeat" in props:
        props.pop("request_heartbeat")
        props["request_heartbeat"] = {"type": "boolean"}
    out: dict[str, Any] = {"type": "object", "properties": props}
    if schema.get("required"):
        out["required"] = schema["required"]
    return out


BUILTINS: dict[str, Function] = {
    f.name: f
    for f in [
        Function("send_message", "Reply to the user.", SendMessageArgs, send_message),
        Function(
            "core_memory_append",
            "Append to a core memory block.",
            CoreMemoryAppendArgs,
            core_memory_append,
        ),
        Function(
            "core_memory_replace",
            "Replace text in a core memory block.",
            CoreMemoryReplaceArgs,
            core_memory_replace,
        ),
        Function(
            "conversation_search",
            "Search recall memory by words.",
            ConversationSearchArgs,
            conversation_search,
        ),
        Function(
            "conversation_search_date",
            "List recall memory between two dates.",
            ConversationSearchDateArgs,
            conversation_search_date,
        ),
        Function(
            "archival_memory_insert",
            "Save to archival memory.",
            ArchivalMemoryInsertArgs,
            archival_memory_insert,
        ),
        Function(
            "archival_memory_search",
            "Search archival memory.",
            ArchivalMemorySearchArgs,
            archival_memory_search,
        ),
    ]
}

TOOL_SPECS: list[ToolSpec] = [f.spec() for f in BUILTINS.values()]

SELF_TOOL_FUNCTIONS: dict[str, Function] = {
    "create_tool": Function(
        "create_tool",
        "Write yourself a new tool (or a new version of one). The kernel tests it on your "
        "examples in a sandbox, then your owner approves it; after that you can call it.",
        CreateToolArgs,
        create_tool,
    )
}
SELF_TOOL_SPECS: list[ToolSpec] = [f.spec() for f in SELF_TOOL_FUNCTIONS.values()]


def _validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"]) or "arguments"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


async def execute(
    ctx: FunctionContext, call: ToolCall, table: dict[str, Function] | None = None
) -> FunctionResult:
    """Run one call of `table` (default: the built-ins); every failure becomes a
    failed result with a heartbeat."""
    table = BUILTINS if table is None else table
    fn = table.get(call.name)
    if fn is None:
        known = ", ".join(table)
        shown = call.name or "(no function name)"
        return FunctionResult(
            call.name, False, f"unknown function {shown!r}; available: {known}", heartbeat=True
        )
    try:
        raw = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError as e:
        return FunctionResult(
            fn.name,
            False,
            f"arguments are not valid JSON ({e}); send a JSON object",
            heartbeat=True,
        )
    if not isinstance(raw, dict):
        return FunctionResult(fn.name, False, "arguments must be a JSON object", heartbeat=True)
    try:
        args = fn.args.model_validate(raw)
    except ValidationError as e:
        return FunctionResult(
            fn.name, False, f"invalid arguments: {_validation_message(e)}", heartbeat=True
        )
    try:
        result = await fn.handler(ctx, args)
    except (FunctionError, MemoryEditError) as e:
        return FunctionResult(fn.name, False, str(e), heartbeat=True)
    except Exception as e:  # a bug or a backend failure must not kill the turn
        return FunctionResult(
            fn.name, False, f"internal error: {type(e).__name__}: {e}", heartbeat=True
        )
    result.heartbeat = bool(getattr(args, "request_heartbeat", False))
    return result
