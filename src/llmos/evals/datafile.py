"""Reading a user's benchmark file: JSON, with one clear error for anything amiss.

Left out: streaming parsers for files larger than memory (LongMemEval_M is
about 2.7 GB; LongMemEval_S and LoCoMo read fine whole).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from llmos.errors import InvalidRequest


class EvalDataError(InvalidRequest):
    """A benchmark data file that cannot be read as the task's format."""

    code = "eval_data_invalid"


def load_json(path: Path, fmt: str) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise EvalDataError(f"{path}: no such file") from None
    except OSError as exc:
        raise EvalDataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise EvalDataError(f"{path}: not a {fmt} file (not valid JSON: {exc})") from None


def digest(path: Path) -> str:
    """A short fingerprint of the file, so a resumed run knows it is the same data."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def need(
    obj: Any, key: str, kind: type | tuple[type, ...], where: str, path: Path, fmt: str
) -> Any:
    """obj[key], which must be of `kind`; else an EvalDataError naming the place."""
    if not isinstance(obj, dict) or key not in obj:
        raise EvalDataError(f"{path}: not {fmt} data ({where} has no {key!r})")
    value = obj[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise EvalDataError(f"{path}: not {fmt} data ({where}.{key} should be a {names})")
    return value


def parse_time(text: str, formats: tuple[str, ...]) -> float:
    """Unix time of a date string in one of `formats`; 0.0 if none fits (order is kept anyway)."""
    for fmt in formats:
        try:
            return datetime.strptime(text.strip(), fmt).timestamp()
        except ValueError:
            continue
    return 0.0
