"""What the Anthropic and Bedrock fake servers share: caching rules, turn checks, a common view.

* `BreakpointCache` emulates explicit-breakpoint prompt caching as Anthropic
  and Bedrock describe it: a request is a sequence of segments (tools, then
  system blocks, then message content blocks); a breakpoint after a segment
  asks the provider to cache the prefix ending there. A prefix is *read* from
  the cache when an earlier request wrote exactly that prefix, found by
  looking back at most 20 segments from each breakpoint; each breakpoint of
  at least 1,024 tokens *writes* its prefix. Usage then splits the prompt
  into cache reads, cache writes (from the read prefix up to the last
  breakpoint) and plain input (after the last breakpoint). Tokens are
  4-character chunks, as in `openai_server.py`. Breakpoint markers themselves
  (`cache_control`, `cachePoint`) are not part of what is hashed, so moving a
  breakpoint never changes a prefix.
* `check_turns` enforces the structural rules both APIs reject requests for:
  the first turn is the user's, roles alternate, every tool result answers a
  call of the assistant turn just before it, every call gets its result.
* `anthropic_view` / `converse_view` turn a request into the OpenAI-shaped
  `{"tools", "messages"}` that scripted policies (shared with the OpenAI
  fake) read, so one policy can play the model behind all three servers.
* `Reply` normalises a policy's short form (`{"content", "tool_calls": [{"name",
  "arguments"}]}`) for the servers to render in their own wire format.

Left out: cache expiry (5 minutes on the real services), per-model minimums
other than 1,024 tokens, and the providers' real tokenisers.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

CHARS_PER_TOKEN = 4
CACHE_MIN_TOKENS = 1024
LOOKBACK_SEGMENTS = 20


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


@dataclass(slots=True)
class CacheUsage:
    input_tokens: int  # after the last breakpoint (or everything, with none)
    cache_read: int
    cache_write: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.cache_read + self.cache_write


class BreakpointCache:
    """Prefixes written at breakpoints by earlier requests, as chained digests."""

    def __init__(
        self, min_tokens: int = CACHE_MIN_TOKENS, lookback: int = LOOKBACK_SEGMENTS
    ) -> None:
        self.min_tokens = min_tokens
        self.lookback = lookback
        self._written: set[bytes] = set()
        self._lock = threading.Lock()

    def account(self, segments: Sequence[tuple[str, bool]]) -> CacheUsage:
        """Usage of a request made of (segment text, breakpoint after it) pieces."""
        ends: list[int] = []
        digests: list[bytes] = []
        pos, prev = 0, b""
        for text, _ in segments:
            pos += len(text) + 1  # one separator per segment
            prev = hashlib.blake2b(prev + text.encode("utf-8", "surrogatepass"), digest_size=16)
            prev = prev.digest()
            ends.append(pos)
            digests.append(prev)
        total = tokens(pos)
        points = [i for i, (_, bp) in enumerate(segments) if bp]
        with self._lock:
            read_at = -1
            for bp in points:
                for j in range(bp, max(-1, bp - self.lookback), -1):
                    if digests[j] in self._written:
                        read_at = max(read_at, j)
                        break
            read = tokens(ends[read_at]) if read_at >= 0 else 0
            write_to = -1
            for bp in points:
                if tokens(ends[bp]) >= self.min_tokens:
                    self._written.add(digests[bp])
                    write_to = bp
        write = tokens(ends[write_to]) - read if write_to > read_at else 0
        return CacheUsage(total - read - write, read, write)


class TurnError(ValueError):
    """The request breaks a rule of the Messages / Converse APIs."""


@dataclass(slots=True)
class NeutralTurn:
    role: str
    uses: list[str] = field(default_factory=list)  # tool-use ids
    results: list[str] = field(default_factory=list)  # tool-result ids
    texts: int = 0
    results_after_text: bool = False


def check_turns(turns: Sequence[NeutralTurn]) -> None:
    if not turns:
        raise TurnError("messages: at least one message is required")
    if turns[0].role != "user":
        raise TurnError("A conversation must start with a user message.")
    for prev, turn in itertools.pairwise(turns):
        if prev.role == turn.role:
            raise TurnError("roles must alternate between user and assistant")
    for i, turn in enumerate(turns):
        if not turn.uses and not turn.results and not turn.texts:
            raise TurnError(f"messages.{i}: content must be non-empty")
        if turn.results_after_text:
            raise TurnError(f"messages.{i}: tool results must come before other content")
        if turn.results:
            before = turns[i - 1].uses if i > 0 else []
            stray = [r for r in turn.results if r not in before]
            if stray:
                raise TurnError(f"messages.{i}: unexpected tool result ids {stray}")
        if turn.uses:
            after = turns[i + 1].results if i + 1 < len(turns) else None
            if after is not None and sorted(after) != sorted(turn.uses):
                raise TurnError(f"messages.{i}: tool uses without matching results")


# --- OpenAI-shaped views of provider requests, for shared policies ---------------


def anthropic_view(body: dict[str, Any]) -> dict[str, Any]:
    system = body.get("system") or ""
    if isinstance(system, list):
        system = "\n\n".join(b.get("text", "") for b in system)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    names: dict[str, str] = {}
    for m in body.get("messages") or []:
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if m["role"] == "assistant":
            text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
            calls = []
            for b in blocks:
                if b.get("type") == "tool_use":
                    names[b["id"]] = b["name"]
                    calls.append(_openai_call(b["id"], b["name"], b.get("input")))
            out: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                out["tool_calls"] = calls
            messages.append(out)
            continue
        for b in blocks:
            if b.get("type") == "tool_result":
                result = b.get("content")
                if isinstance(result, list):
                    result = "".join(x.get("text", "") for x in result)
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": b["tool_use_id"],
                        "name": names.get(b["tool_use_id"], ""),
                        "content": result,
                    }
                )
            elif b.get("type") == "text":
                messages.append({"role": "user", "content": b["text"]})
    tools = [
        {
            "type": "function",
            "function": {
                "name": t["name"],
                "description": t.get("description", ""),
                "parameters": t.get("input_schema", {}),
            },
        }
        for t in body.get("tools") or []
    ]
    return {"messages": messages, "tools": tools, "tool_choice": body.get("tool_choice")}


def converse_view(body: dict[str, Any]) -> dict[str, Any]:
    system = "\n\n".join(b["text"] for b in body.get("system") or [] if "text" in b)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    names: dict[str, str] = {}
    for m in body.get("messages") or []:
        blocks = m.get("content") or []
        if m["role"] == "assistant":
            text = "".join(b["text"] for b in blocks if "text" in b)
            calls = []
            for b in blocks:
                if "toolUse" in b:
                    use = b["toolUse"]
                    names[use["toolUseId"]] = use["name"]
                    calls.append(_openai_call(use["toolUseId"], use["name"], use.get("input")))
            out: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                out["tool_calls"] = calls
            messages.append(out)
            continue
        for b in blocks:
            if "toolResult" in b:
                res = b["toolResult"]
                text = "".join(c.get("text", "") for c in res.get("content") or [])
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": res["toolUseId"],
                        "name": names.get(res["toolUseId"], ""),
                        "content": text,
                    }
                )
            elif "text" in b:
                messages.append({"role": "user", "content": b["text"]})
    config = body.get("toolConfig") or {}
    tools = [
        {
            "type": "function",
            "function": {
                "name": t["toolSpec"]["name"],
                "description": t["toolSpec"].get("description", ""),
                "parameters": t["toolSpec"]["inputSchema"]["json"],
            },
        }
        for t in config.get("tools") or []
        if "toolSpec" in t
    ]
    return {"messages": messages, "tools": tools, "tool_choice": config.get("toolChoice")}


def _openai_call(cid: str, name: str, args: Any) -> dict[str, Any]:
    return {
        "id": cid,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args if args is not None else {})},
    }


@dataclass(slots=True)
class Reply:
    """A policy's short-form answer, normalised."""

    text: str | None
    calls: list[tuple[str, dict[str, Any] | str]]  # (name, arguments: object or raw JSON)
    stop: str  # "tool_use", "end_turn" or "max_tokens"

    @classmethod
    def from_short(cls, short: dict[str, Any]) -> Reply:
        calls = [(c["name"], c.get("arguments", {})) for c in short.get("tool_calls") or []]
        stop = short.get("finish_reason")
        if stop == "length":
            stop = "max_tokens"
        return cls(short.get("content"), calls, stop or ("tool_use" if calls else "end_turn"))

    def output_tokens(self) -> int:
        return tokens(len(self.text or "") + sum(len(dumps(a)) + len(n) for n, a in self.calls))
