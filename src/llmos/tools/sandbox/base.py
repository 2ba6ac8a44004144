"""The sandbox's interface: the limits of a call, its result, and what a backend is.

A backend (`Sandbox`) runs one request of the child protocol (`tools/_child.py`:
describe a tool file, or call one of its functions) and returns a
`SandboxResult`; it never raises. `isolated` says whether the operating system
keeps the tool away from the kernel's files, processes, secrets and network
(bubblewrap: yes; the plain subprocess: no). The server refuses to run user
tools on a backend that is not isolated unless its operator said otherwise.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from llmos.errors import LLMOSError


@dataclass(slots=True)
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 5
    memory_bytes: int = 1024 * 1024 * 1024  # address space: Python+pydantic need ~300 MB
    file_bytes: int = 16 * 1024 * 1024  # largest file the tool may write
    output_bytes: int = 1024 * 1024  # stdout (the answer) and stderr (prints), each
    processes: int = 64  # RLIMIT_NPROC (per user; not enforced for root)


@dataclass(slots=True)
class SandboxResult:
    ok: bool
    result: Any = None
    error: str | None = None
    stderr: str = ""
    seconds: float = 0.0
    tools: list[dict[str, Any]] | None = None  # "describe" answers

    def message(self) -> str:
        """The text the model sees."""
        if not self.ok:
            return str(self.error)
        if isinstance(self.result, str):
            return self.result
        return json.dumps(self.result, ensure_ascii=False)


class SandboxUnavailable(LLMOSError):
    """No OS sandbox here, and running user code without one was not allowed.

    The message names what is missing and how to allow the unsafe path."""

    code = "sandbox_unavailable"


class Sandbox(ABC):
    """One way of running user tool code; a backend is one small subclass."""

    #: short name, shown in logs and `llmos` status ("bubblewrap", "subprocess")
    name: str = "sandbox"
    #: true when the operating system, not Python, keeps the tool away from the host
    isolated: bool = False

    @abstractmethod
    def run(self, request: dict[str, Any], limits: Limits) -> SandboxResult:
        """Run one request of the child protocol (blocking). Never raises."""
