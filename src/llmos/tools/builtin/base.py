"""What every built-in tool is: an argument model, a description, and an async `run`.

A built-in tool (`calculate.py`, `current_time.py`, `fetch_url.py`,
`run_python.py`) is one small module defining a `Builtin`: its name, the
description the model reads, a pydantic model of its arguments (whose JSON
schema is what the model sees, and whose validation catches a bad call), and
`run(args, env) -> SandboxResult`. `Env` is what a run may use of the tool
manager: the sandbox limits and whether an unsandboxed run is allowed
(`run_python`), and the operator's fetch policy (`fetch_url`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from llmos.tools.sandbox import Limits, SandboxResult


@dataclass(slots=True, frozen=True)
class FetchPolicy:
    """Which pages `fetch_url` may get: host patterns (fnmatch; none: the tool is off)."""

    hosts: tuple[str, ...] = ()
    allow_private: bool = False  # private, loopback and link-local addresses
    timeout: float = 10.0  # seconds for the whole fetch, redirects included
    max_bytes: int = 2 * 1024 * 1024  # of the body read; the rest is not downloaded
    max_redirects: int = 5


@dataclass(slots=True)
class Env:
    limits: Limits = field(default_factory=Limits)
    allow_unsafe: bool = True
    fetch: FetchPolicy = field(default_factory=FetchPolicy)


@dataclass(slots=True, frozen=True)
class Builtin:
    name: str
    description: str
    args: type[BaseModel]
    run: Callable[[Any, Env], Awaitable[SandboxResult]]


def failed(message: str) -> SandboxResult:
    return SandboxResult(False, error=message)


def done(result: Any) -> SandboxResult:
    return SandboxResult(True, result=result)
