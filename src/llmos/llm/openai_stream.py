"""Streamed chat completions: `chat.completion.chunk`s folded into one response.

`openai_compat` reads a streamed answer through the SDK's `AsyncStream` (the
chunks as plain dicts) and feeds each to a `ChunkFold`, which returns the
pieces it adds (`Delta`: content, or a tool call's arguments with the call's
name once known) and at the end gives the `chat.completion` body a plain
request would have got, for the same parsing and checks.

Left out: choices other than the first (llmos asks for one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmos.llm.core import Delta

__all__ = ["ChunkFold"]


class ChunkFold:
    """Folds streamed chat.completion.chunk objects into one chat.completion body."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage: Any = None
        self.error: Any = None

    def feed(self, chunk: Any) -> list[Delta]:
        """Take one chunk (a dict); return the pieces of the response it adds."""
        out: list[Delta] = []
        if not isinstance(chunk, Mapping):
            return out
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if chunk.get("error"):
            self.error = chunk["error"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            self.finish = choice.get("finish_reason") or self.finish
            delta = choice.get("delta")
            if not isinstance(delta, Mapping):
                continue
            text = delta.get("content")
            if isinstance(text, str) and text:
                self.content.append(text)
                out.append(Delta(text))
            for raw in delta.get("tool_calls") or []:
                if not isinstance(raw, Mapping):
                    continue
                index = int(raw.get("index") or 0)
                call = self.calls.setdefault(index, {"id": None, "name": "", "arguments": ""})
                call["id"] = raw.get("id") or call["id"]
                fn = raw.get("function") if isinstance(raw.get("function"), Mapping) else {}
                call["name"] += str(fn.get("name") or "")
                piece = fn.get("arguments")
                if isinstance(piece, str) and piece:
                    call["arguments"] += piece
                    out.append(Delta(piece, call=index, name=call["name"] or None))
        return out

    def body(self) -> dict[str, Any]:
        if self.error is not None and not self.content and not self.calls:
            return {"error": self.error}
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) or None}
        if self.calls:
            message["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"] or "{}"},
                }
                for _, c in sorted(self.calls.items())
            ]
        return {
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish or "stop"}],
            "usage": self.usage,
        }
