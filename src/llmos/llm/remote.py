"""The base of the network cores: what the OpenAI-compatible, Anthropic and Bedrock drivers share.

A remote core sends each request to a model server and must turn every way
that can fail into one of the kernel's error kinds, without ever showing a
secret. `RemoteCore` holds what the three drivers do alike:

* the API key: the one given, else the provider's environment variable, else
  (for a server of the user's own, which may need none) a placeholder the
  SDKs accept; no key for the provider's own endpoint is `AuthenticationFailed`;
* error text: secrets masked (`llmos.redact`) and clipped to 500 characters;
  `status_error` maps an HTTP status, and what the provider said besides, onto
  `RateLimited` (with `retry_after_seconds` of the answer's headers),
  `AuthenticationFailed`, `ContextLengthExceeded` (`CONTEXT_OVERFLOW`: how
  servers phrase "the prompt does not fit"), `CoreUnavailable` or `BadRequest`;
* degrading: a request the server rejected for an optional field the driver
  can stop sending is sent again without it (`_send`, `_degrade`);
* tokens: a `CalibratedEstimate` fed by the prompt tokens each answer reports;
* the window: one given to the constructor wins over what a probe learns.
"""

from __future__ import annotations

import email.utils
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from llmos.llm.core import (
    AuthenticationFailed,
    BadRequest,
    ContextLengthExceeded,
    CoreError,
    CoreUnavailable,
    Message,
    RateLimited,
    ToolSpec,
    Usage,
    tool_spec_chars,
)
from llmos.llm.tokens import MESSAGE_OVERHEAD_TOKENS, CalibratedEstimate
from llmos.redact import redact

__all__ = [
    "CONTEXT_OVERFLOW",
    "MAX_ERROR_TEXT",
    "RemoteCore",
    "as_int",
    "clip",
    "retry_after_seconds",
    "status_error",
]

MAX_ERROR_TEXT = 500

# How servers phrase "your prompt does not fit": OpenAI and vLLM ("maximum
# context length"), Anthropic ("prompt is too long", "input length and
# `max_tokens` exceed context limit"), llama.cpp ("exceeds the available
# context size"), Bedrock and the models behind it ("Input is too long").
CONTEXT_OVERFLOW = re.compile(
    r"context_length_exceeded|maximum context length|maximum context|too many (input )?tokens"
    r"|too long|context size|context (window|length|limit)|exceed context limit"
    r"|exceed_context_size|input length|exceeds? the (maximum|max)|max_tokens.*exceed"
    r"|reduce the length of the messages",
    re.IGNORECASE,
)
# "1m30.5s", "20ms", "6m0s": OpenAI's x-ratelimit-reset-* durations.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")

Body = TypeVar("Body", bound=dict[str, Any])
Answer = TypeVar("Answer")


def clip(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """`text` cut to `limit` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[:limit] + "…"


def as_int(value: Any) -> int:
    """`value` if it is an int (not a bool), else 0: usage fields from untrusted JSON."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def server_side(status: int) -> bool:
    """Whether an HTTP status says the server failed (5xx) or gave up waiting (408)."""
    return status >= 500 or status == 408


def status_error(
    status: int,
    text: str,
    *,
    retry_after: float | None = None,
    rate_limited: bool = False,
    auth: bool = False,
    overflow: bool = False,
    unavailable: bool = False,
) -> CoreError:
    """The kernel's error kind for a failed answer with HTTP `status` and message `text`.

    The flags add what the provider said besides the status (an error type,
    an exception name). First match wins: rate limited (429), refused
    credentials (401, 403), the prompt too long, the server failing (5xx,
    408), else a bad request.
    """
    if rate_limited or status == 429:
        return RateLimited(text, retry_after=retry_after)
    if auth or status in (401, 403):
        return AuthenticationFailed(text)
    if overflow:
        return ContextLengthExceeded(text)
    if unavailable or server_side(status):
        return CoreUnavailable(text)
    return BadRequest(text)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from a 429's headers, or None if they do not say.

    `retry-after-ms` (OpenAI, milliseconds), then `Retry-After` (seconds or an
    HTTP date), then OpenAI's `x-ratelimit-reset-requests/-tokens` ("1m30s").
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(0.0, when.timestamp() - time.time())
    resets = [
        d
        for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
        if (d := _duration(lowered.get(name, ""))) is not None
    ]
    return max(resets) if resets else None


def _duration(text: str) -> float | None:
    parts = _DURATION_PART.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


class RemoteCore:
    """The shared half of a `Core` on a model server; a driver adds the requests.

    `key_env` names the environment variable holding the provider's API key
    (empty for a driver with other credentials, like Bedrock's).
    """

    key_env = ""

    def __init__(
        self,
        name: str,
        *,
        context_window: int | None,
        default_window: int,
        capacity: int,
        timeout: float,
        api_key: str | None = None,
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.timeout = timeout
        self._context_window_given = context_window is not None
        self.context_window = context_window or default_window
        self.estimate = CalibratedEstimate()
        self._api_key = api_key

    # --- credentials and error text ------------------------------------------------

    def _configured_key(self) -> str | None:
        return self._api_key or (os.environ.get(self.key_env) if self.key_env else None)

    def _key(self, own_endpoint: bool) -> str:
        """The API key to send; `own_endpoint`: the user's server, which may need none."""
        key = self._configured_key()
        if key:
            return key
        if not own_endpoint:
            raise AuthenticationFailed(
                f"{self.name}: no API key (pass api_key or set {self.key_env})"
            )
        # Local servers and gateways (vLLM, llama.cpp, Ollama) take any key, but
        # the SDKs refuse to start without one.
        return "no-key"

    def _secrets(self) -> list[str | None]:
        """Exact values never to show in an error message."""
        return [self._configured_key()]

    def _clean(self, text: str) -> str:
        """`text` without the API key or anything that looks like one, shortened."""
        return clip(redact(text, self._secrets(), mask="***"))

    def _not_json(self, text: str) -> CoreUnavailable:
        return CoreUnavailable(
            f"{self.name}: malformed response (not JSON): {self._clean(text[:200])!r}"
        )

    # --- sending -------------------------------------------------------------------

    async def _send(
        self, build: Callable[[], Body], send: Callable[[Body], Awaitable[Answer]]
    ) -> tuple[Body, Answer]:
        """Send what `build()` makes; while the server rejects an optional field
        `_degrade` can drop, build and send again. Returns what was sent and the answer."""
        while True:
            body = build()
            try:
                return body, await send(body)
            except BadRequest as error:
                if not self._degrade(error, body):
                    raise

    def _degrade(self, error: BadRequest, sent: dict[str, Any]) -> bool:
        """Stop sending what the server just rejected; True if worth retrying.

        Only a field the failed request carried counts, so concurrent requests
        failing the same way degrade one step, not one step each.
        """
        return False

    # --- tokens and window ---------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return self.estimate.count(text)

    def _calibrate(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], usage: Usage
    ) -> None:
        """Feed the estimate what the backend counted for what we sent.

        The kernel counts a prompt as `count_tokens` of each message's text plus
        a fixed framing per message, so the framing is taken off the reported
        count before comparing characters with tokens.
        """
        reported = usage.prompt_tokens
        if reported <= 0:
            return
        chars = sum(len(m.text_for_count()) for m in messages) + tool_spec_chars(tools)
        self.estimate.observe(chars, reported - MESSAGE_OVERHEAD_TOKENS * len(messages))

    def _learn_window(self, window: int | None) -> int:
        """Take the window a probe learnt, unless one was given; return the window."""
        if window and not self._context_window_given:
            self.context_window = window
        return self.context_window
