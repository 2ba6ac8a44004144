"""Numbers read from environment variables, checked, with errors that name the variable.

At the bottom of the package (like `errors.py`): any layer may read its
settings this way. Only seconds so far; what a variable means is its caller's.
"""

from __future__ import annotations

import os


def seconds_from_env(name: str, default: float, low: float, high: float) -> float:
    """Seconds from the environment variable `name` (unset or empty: `default`), which
    must lie in [low, high]. Raises ValueError naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g} seconds, not {raw}")
    return value
