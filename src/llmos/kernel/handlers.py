"""Syscall handlers: what the kernel does for each kind of syscall.

One method per syscall type (`kernel/syscalls.py` maps types to them):
`llm` joins a core's run queue (the least loaded replica's) and accounts the
usage; `memory` searches recall; `storage` embeds or searches archival memory
(embedding is CPU work, so it runs off the event loop); `tool` runs a
kernel-provided function in-process or hands a user tool to the tool
executor; `agent` is served by the messenger (`kernel/messaging.py`). Each
handler stamps `started_at`; the dispatcher stamps the rest and counts it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from llmos.agent import functions as fn
from llmos.agent.catalog import function_table

if TYPE_CHECKING:
    from llmos.agent.syscalls import (
        AgentSyscall,
        FunctionContext,
        LLMSyscall,
        MemorySyscall,
        StorageSyscall,
        ToolSyscall,
    )
    from llmos.kernel.accounting import Accounting
    from llmos.kernel.cores import CoreTable
    from llmos.kernel.messaging import AgentMessenger
    from llmos.llm.core import ChatResponse, ToolCall
    from llmos.memory.archival import ArchivalStorage
    from llmos.memory.recall import RecallStorage
    from llmos.storage.db import Database

#: runs a call of a user tool (grant check, approval, sandbox, audit)
UserToolRunner = Callable[["FunctionContext", "ToolCall"], Awaitable[fn.FunctionResult]]


class SyscallHandlers:
    """The kernel's syscall handlers, over the subsystems they serve from."""

    def __init__(
        self,
        db: Database,
        cores: CoreTable,
        accounting: Accounting,
        recall: RecallStorage,
        archival: ArchivalStorage,
        run_user_tool: UserToolRunner,
        messenger: Callable[[], AgentMessenger],
    ) -> None:
        self.db = db
        self.cores = cores
        self.accounting = accounting
        self.recall = recall
        self.archival = archival
        self.run_user_tool = run_user_tool
        self.messenger = messenger

    async def llm(self, call: LLMSyscall) -> ChatResponse:
        response = await self.cores.pick_queue(call.core).run(call)
        u = response.usage
        call.tokens = u.prompt_tokens + u.completion_tokens
        self.accounting.llm_used(call.agent_id, u)
        return response

    async def memory(self, call: MemorySyscall) -> Any:
        call.started_at = time.perf_counter()
        a = call.args
        with self.db.connect() as conn:
            if call.op == "recall_search":
                return self.recall.search(
                    conn,
                    call.agent_id,
                    a["query"],
                    a["page"],
                    fn.PAGE_SIZE,
                    a.get("start"),
                    a.get("end"),
                )
            if call.op == "recall_search_date":
                return self.recall.search_date(
                    conn, call.agent_id, a["start"], a["end"], a["page"], fn.PAGE_SIZE
                )
        raise ValueError(f"unknown memory syscall {call.op!r}")

    async def storage(self, call: StorageSyscall) -> Any:
        call.started_at = time.perf_counter()
        a = call.args
        emb = self.cores.embedder(a["embedder"])
        if call.op == "embed":
            # Embedding is CPU work: keep the event loop free for other agents.
            return await asyncio.to_thread(emb.embed, a["texts"])
        if call.op == "archival_search":
            qvec = (await asyncio.to_thread(emb.embed, [a["query"]]))[0]
            with self.db.connect() as conn:
                return self.archival.search(
                    conn, call.agent_id, emb, a["query"], a["page"], a.get("page_size", 5), qvec
                )
        raise ValueError(f"unknown storage syscall {call.op!r}")

    async def tool(self, call: ToolSyscall) -> fn.FunctionResult:
        call.started_at = time.perf_counter()
        table = function_table(call.call.name, call.ctx.agent.settings)
        if table is not None:
            return await fn.execute(call.ctx, call.call, table)
        return await self.run_user_tool(call.ctx, call.call)

    async def agent(self, call: AgentSyscall) -> str:
        call.started_at = time.perf_counter()
        return await self.messenger().serve(call)
