"""The provider settings a kernel service runs with, as a fingerprint that shows no value.

The local kernel service keeps the environment of the command that started
it: provider keys, `OPENAI_BASE_URL`, AWS credentials, llmos's own settings.
A later command run with other settings would otherwise be served, silently,
with the old ones. So the service records a fingerprint of the variables that
shape what it does (`relevant`) in its state file (`run/kernel.json`, 0600),
and a client whose own fingerprint differs prints one note naming the
variables that differ (names only) and how to pick its settings up.

The fingerprint is, per variable, an HMAC-SHA256 of its name and value under a
random salt the service draws at start (stored beside it): no value, nor a
hash that could be looked up in a table of common values, is ever written.
It is kept out of `/health`, which `llmos serve` answers without a key.

Left out: variables outside the prefixes below (e.g. a provider llmos does not
ship), and noticing a change of files the settings point to.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

#: variables with these prefixes configure llmos or a provider it calls
PREFIXES = ("LLMOS_", "OPENAI_", "ANTHROPIC_", "AWS_", "OLLAMA_", "BEDROCK_")
#: and these (in any case) how it reaches them
NETWORK = frozenset(
    (
        *("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"),
        *("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"),
    )
)
#: llmos's settings of the command itself, which the service does not use: the home
#: is the service's identity (its socket), and the rest choose or reach a service
CLIENT_ONLY = frozenset(
    (
        *("LLMOS_HOME", "LLMOS_IDLE", "LLMOS_NO_DAEMON", "LLMOS_DEBUG"),
        *("LLMOS_URL", "LLMOS_KEY", "LLMOS_API_KEY"),
    )
)


def relevant(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of `env` that change what a kernel service does."""
    return {
        k: v
        for k, v in env.items()
        if (k.startswith(PREFIXES) or k.upper() in NETWORK) and k not in CLIENT_ONLY
    }


def new_salt() -> str:
    return os.urandom(16).hex()


def fingerprint(env: Mapping[str, str], salt: str) -> dict[str, str]:
    """Per relevant variable, an HMAC of its name and value under `salt` (hex)."""
    key = bytes.fromhex(salt)
    return {
        name: hmac.new(
            key, f"{name}\0{value}".encode("utf-8", "surrogateescape"), hashlib.sha256
        ).hexdigest()
        for name, value in sorted(relevant(env).items())
    }


def differing(recorded: object, env: Mapping[str, str]) -> list[str] | None:
    """The names of the variables whose value differs between a service's recorded
    fingerprint and `env` (set in one only counts); None when nothing was recorded."""
    if not isinstance(recorded, dict):
        return None
    salt, prints = recorded.get("salt"), recorded.get("hmac")
    if not isinstance(salt, str) or not isinstance(prints, dict):
        return None
    try:
        mine = fingerprint(env, salt)
    except ValueError:  # not hex: a state file we did not write
        return None
    return sorted(n for n in set(prints) | set(mine) if prints.get(n) != mine.get(n))


def note(names: list[str], pid: object) -> str:
    """The one line a client prints when its settings differ from the service's."""
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return (
        f"note: the kernel service (pid {pid}) runs with other settings than this command "
        f"({shown} differ); `llmos kernel restart` picks up these"
    )
