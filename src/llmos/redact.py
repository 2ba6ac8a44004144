"""Secret scrubbing: `redact()` masks what looks like a credential in text shown or logged.

One pattern covers what llmos may carry in an error message, a log line or an
API response: its own user keys (`llmos-…`), provider keys in the OpenAI,
Anthropic, Groq and Stripe styles (`sk-…`, `sk-ant-…`, `gsk_…`, `pk-…`,
`rk-…`, also when the provider echoes them partly masked with `*`), bearer
tokens, AWS access key ids, and the user:password part of a URL
(`https://user:pw@host` keeps its host). Exact values the caller knows to be
secret (the configured API key, the AWS secret) are masked too, whatever they
look like.

The module imports nothing of llmos: every layer may use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import overload

__all__ = ["redact"]

_SECRET = re.compile(
    r"llmos-[A-Za-z0-9_\-]{4,}"
    r"|\b(?i:sk|pk|rk|gsk)[-_][A-Za-z0-9_\-*.]{4,}"
    r"|(?i:bearer)\s+[A-Za-z0-9_\-.~+/=*]{8,}"
    r"|\b(?:AKIA|ASIA)[A-Z0-9]{12,}"
    # URL userinfo: what lies between "//" and "@" with no "/" in between.
    r"|(?<=//)[^/@\s]+(?=@)"
)


@overload
def redact(text: str, secrets: Iterable[str | None] = (), *, mask: str = ...) -> str: ...
@overload
def redact(text: None, secrets: Iterable[str | None] = (), *, mask: str = ...) -> None: ...
def redact(
    text: str | None, secrets: Iterable[str | None] = (), *, mask: str = "[redacted]"
) -> str | None:
    """`text` with every exact value in `secrets` and anything key-like replaced by `mask`.

    Empty or None secrets are skipped; None or "" text is returned as it is.
    """
    if not text:
        return text
    for secret in secrets:
        if secret:
            text = text.replace(secret, mask)
    return _SECRET.sub(mask, text)
