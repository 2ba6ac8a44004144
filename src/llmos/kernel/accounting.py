"""Accounting: what each agent and each kind of syscall has cost.

Two ledgers. Syscall statistics (count, seconds, tokens per kind and per
agent, with the prompt tokens a provider served from its cache) live for the
kernel's session and feed `/v1/kernel`. An agent's LLM usage over its lifetime
(`UsageTotals`) is stored in `agent_usage`: what a step used is pending until
that step's commit writes it (`write` inside the step's transaction, then
`committed` once it is durable), so usage is never counted twice nor lost
with a committed step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, select, update

from llmos.storage.models import agent_usage

if TYPE_CHECKING:
    from llmos.agent.syscalls import Syscall
    from llmos.llm.core import Usage
    from llmos.storage.db import Database


@dataclass(slots=True)
class SyscallStats:
    count: int = 0
    seconds: float = 0.0
    tokens: int = 0
    # llm syscalls only: prompt tokens and the part the provider served from its cache
    prompt_tokens: int = 0
    cached_tokens: int = 0


@dataclass(slots=True)
class UsageTotals:
    """An agent's LLM usage summed over requests; persisted in `agent_usage`."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, usage: Usage | UsageTotals, requests: int = 1) -> None:
        self.requests += usage.requests if isinstance(usage, UsageTotals) else requests
        self.prompt_tokens += usage.prompt_tokens
        self.cached_prompt_tokens += usage.cached_prompt_tokens
        self.completion_tokens += usage.completion_tokens

    @property
    def cache_hit_rate(self) -> float | None:
        """Share of prompt tokens read from the provider's cache (None: no requests yet)."""
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else None

    def as_dict(self) -> dict[str, Any]:
        rate = self.cache_hit_rate
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cache_hit_rate": None if rate is None else round(rate, 4),
        }


# Statements of the per-step path, built once (building one costs more than
# running it on SQLite).
_USAGE_ADD = (
    update(agent_usage)
    .where(agent_usage.c.agent_id == bindparam("aid"))
    .values(
        requests=agent_usage.c.requests + bindparam("requests"),
        prompt_tokens=agent_usage.c.prompt_tokens + bindparam("prompt_tokens"),
        cached_prompt_tokens=agent_usage.c.cached_prompt_tokens + bindparam("cached_prompt_tokens"),
        completion_tokens=agent_usage.c.completion_tokens + bindparam("completion_tokens"),
    )
)
_USAGE_NEW = agent_usage.insert().values(agent_id=bindparam("aid"))


def ratio(part: int, whole: int) -> float | None:
    """`part / whole` to 4 places; None when `whole` is 0."""
    return round(part / whole, 4) if whole else None


class Accounting:
    """The kernel's ledgers: syscall statistics and per-agent LLM usage."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.by_kind: dict[str, SyscallStats] = {}
        self.by_agent: dict[str, SyscallStats] = {}
        # Per-agent LLM usage: totals as stored (loaded on first need) and what
        # is not stored yet; the next commit of that agent writes it.
        self._saved: dict[str, UsageTotals] = {}
        self._pending: dict[str, UsageTotals] = {}

    # --- syscall statistics -------------------------------------------------------

    def _stats(self, table: dict[str, SyscallStats], key: str) -> SyscallStats:
        s = table.get(key)
        if s is None:
            s = table[key] = SyscallStats()
        return s

    def syscall_done(self, call: Syscall) -> None:
        """Count a finished syscall under its kind and its agent."""
        elapsed = call.finished_at - call.queued_at
        for s in (self._stats(self.by_kind, call.kind), self._stats(self.by_agent, call.agent_id)):
            s.count += 1
            s.seconds += elapsed
            s.tokens += call.tokens

    def llm_used(self, agent_id: str, usage: Usage) -> None:
        """An llm syscall's usage: into the session's statistics and the agent's pending usage."""
        stats = self._stats(self.by_agent, agent_id)
        stats.prompt_tokens += usage.prompt_tokens
        stats.cached_tokens += usage.cached_prompt_tokens
        pending = self._pending.get(agent_id)
        if pending is None:
            pending = self._pending[agent_id] = UsageTotals()
        pending.add(usage)

    def of(self, agent_id: str) -> SyscallStats:
        return self.by_agent.get(agent_id, SyscallStats())

    def report(self) -> dict[str, Any]:
        """The syscall and per-agent cache statistics of `Kernel.kernel_stats`."""
        return {
            "syscalls": {
                k: {"count": s.count, "seconds": round(s.seconds, 4), "tokens": s.tokens}
                for k, s in self.by_kind.items()
            },
            # This session's LLM prompt tokens per agent and the share served from cache.
            "agents": {
                agent_id: {
                    "prompt_tokens": s.prompt_tokens,
                    "cached_prompt_tokens": s.cached_tokens,
                    "cache_hit_rate": ratio(s.cached_tokens, s.prompt_tokens),
                }
                for agent_id, s in self.by_agent.items()
                if s.prompt_tokens
            },
        }

    # --- lifetime usage -----------------------------------------------------------

    def usage(self, agent_id: str) -> UsageTotals:
        """The agent's LLM usage over its lifetime (stored totals plus this session's)."""
        saved = self._saved.get(agent_id)
        if saved is None:
            with self.db.connect() as conn:
                row = conn.execute(
                    select(agent_usage).where(agent_usage.c.agent_id == agent_id)
                ).first()
            saved = UsageTotals()
            if row is not None:
                saved = UsageTotals(
                    row.requests, row.prompt_tokens, row.cached_prompt_tokens, row.completion_tokens
                )
            self._saved[agent_id] = saved
        total = UsageTotals()
        total.add(saved)
        pending = self._pending.get(agent_id)
        if pending is not None:
            total.add(pending)
        return total

    def write(self, conn: Connection, agent_id: str) -> UsageTotals | None:
        """Add the agent's pending usage to its stored totals (inside `conn`'s
        transaction); returns what it wrote, for `committed`."""
        pending = self._pending.get(agent_id)
        if pending is None or not pending.requests:
            return None
        row = {
            "aid": agent_id,
            "requests": pending.requests,
            "prompt_tokens": pending.prompt_tokens,
            "cached_prompt_tokens": pending.cached_prompt_tokens,
            "completion_tokens": pending.completion_tokens,
        }
        if not conn.execute(_USAGE_ADD, row).rowcount:
            conn.execute(_USAGE_NEW, row)
        return pending

    def committed(self, agent_id: str, written: UsageTotals | None) -> None:
        """The usage `write` wrote is stored now: it is no longer pending."""
        if written is None:
            return
        if self._pending.get(agent_id) is written:
            del self._pending[agent_id]
        saved = self._saved.get(agent_id)
        if saved is not None:
            saved.add(written)

    def flush(self) -> None:
        """Store every agent's pending usage (at shutdown)."""
        for agent_id in list(self._pending):
            # suppress: e.g. the agent was deleted meanwhile
            with contextlib.suppress(Exception):
                with self.db.begin() as conn:
                    written = self.write(conn, agent_id)
                self.committed(agent_id, written)

    def forget(self, agent_id: str) -> None:
        self._saved.pop(agent_id, None)
        self._pending.pop(agent_id, None)
