"""A cap on the size of a model server's reply, so a hostile or broken server
cannot fill the kernel's memory.

A remote core reads a reply through `read_capped(response, name)` (a whole
HTTP body, read in chunks and abandoned once past the cap) or counts a stream
with `ReplyBudget(name).add(piece)`; either raises `ReplyTooLarge`, a
`CoreError` (so a `BackendError`) naming the core and the cap. The cap is
`LLMOS_MAX_REPLY_BYTES`, default 8 MiB: a chat completion is kilobytes.

`STREAM_BODY` is the request option that makes the OpenAI and Anthropic SDKs
hand back the unread HTTP response (their "raw response, streamed" header),
for `read_capped`.

Left out: capping error bodies (the SDKs read those themselves before they
raise) and the Bedrock SDK's replies (botocore reads them whole).
"""

from __future__ import annotations

import os
from typing import Any

from llmos.llm.core import CoreError, CoreUnavailable

__all__ = ["STREAM_BODY", "ReplyBudget", "ReplyTooLarge", "max_reply_bytes", "read_capped"]

DEFAULT_MAX_REPLY_BYTES = 8 * 1024 * 1024

#: request options for the SDKs' `post(...)`: return the response with its body unread
STREAM_BODY: dict[str, Any] = {"headers": {"X-Stainless-Raw-Response": "stream"}}


class ReplyTooLarge(CoreError):
    """The model server's reply passed the size cap; it was abandoned unread."""

    code = "reply_too_large"


def max_reply_bytes() -> int:
    """The cap in bytes (`LLMOS_MAX_REPLY_BYTES`, else 8 MiB)."""
    raw = os.environ.get("LLMOS_MAX_REPLY_BYTES", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_REPLY_BYTES


def _too_large(name: str, limit: int) -> ReplyTooLarge:
    return ReplyTooLarge(
        f"{name}: the model server's reply is larger than {limit} bytes "
        "(LLMOS_MAX_REPLY_BYTES); it was not read"
    )


class ReplyBudget:
    """Counts the bytes of a streamed reply; `add` raises once they pass the cap."""

    def __init__(self, name: str, limit: int | None = None) -> None:
        self.name = name
        self.limit = limit or max_reply_bytes()
        self.used = 0

    def add(self, piece: str | bytes | None) -> None:
        if piece:
            self.used += len(piece.encode() if isinstance(piece, str) else piece)
            if self.used > self.limit:
                raise _too_large(self.name, self.limit)


async def read_capped(response: Any, name: str, limit: int | None = None) -> bytes:
    """The body of an unread httpx response, at most `limit` bytes; closes it.

    Raises ReplyTooLarge past the cap (a declared Content-Length past it is
    refused before any byte is read)."""
    budget = ReplyBudget(name, limit)
    try:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > budget.limit:
            raise _too_large(name, budget.limit)
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                budget.add(chunk)
                body += chunk
        except ReplyTooLarge:
            raise
        except Exception as e:  # the connection broke off mid-body
            raise CoreUnavailable(f"{name}: the reply broke off ({type(e).__name__})") from None
        return bytes(body)
    finally:
        await response.aclose()
