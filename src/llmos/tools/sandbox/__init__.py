"""The tool sandbox: user tool code runs behind an operating-system boundary.

Every request of the child protocol (`tools/_child.py`: describe a tool file
at registration, or call one of its functions) runs through one backend, a
`Sandbox` (`base.py`) with one method, `run(request, limits) -> SandboxResult`:

- `bwrap.Bubblewrap`: namespaces, a read-only runtime, no network, seccomp;
  what every call uses when bubblewrap works on this machine;
- `process.PlainProcess`: the same child as a plain subprocess (rlimits, a
  timeout, an audit hook), with no isolation from the kernel's user.

`select(allow_unsafe)` picks one: the first isolated backend that works here
(those given to `register()`, newest first, then bubblewrap); otherwise the
plain one if allowed (with a warning, once per process), else it
raises `SandboxUnavailable` naming what is missing. The CLI, a single user on
their own machine, allows it; `llmos serve` does not unless started with
`--unsafe-tools`.

`run()` blocks; `arun()` runs it in a worker thread so other agents' tool
calls and LLM steps go on meanwhile. Those threads are the sandbox's own pool
(`LLMOS_SANDBOX_WORKERS`, default the number of CPUs, at least 2), not the
event loop's default executor: a flood of tool runs queues there, and never
in front of the embeddings, model calls and other work of the default pool
(issue 11: 30 registrations by one user stalled another's search 14.8 s).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llmos.tools.sandbox import bwrap
from llmos.tools.sandbox.base import Limits, Sandbox, SandboxResult, SandboxUnavailable
from llmos.tools.sandbox.process import ENV_ALLOW, PlainProcess, ProcessSandbox

__all__ = [
    "ENV_ALLOW",
    "Limits",
    "PlainProcess",
    "ProcessSandbox",
    "Sandbox",
    "SandboxResult",
    "SandboxUnavailable",
    "arun",
    "call",
    "describe",
    "isolation_missing",
    "register",
    "run",
    "select",
]

log = logging.getLogger("llmos.tools.sandbox")
_warned = False


def _workers() -> int:
    raw = os.environ.get("LLMOS_SANDBOX_WORKERS", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else max(2, os.cpu_count() or 2)


#: the threads that wait for sandboxed runs (each waits on one child process)
_POOL = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="llmos-sandbox")


#: makers of isolated backends, tried in order: each returns a Sandbox, or None
#: where it cannot work on this machine
Factory = Callable[[], "Sandbox | None"]
_factories: list[Factory] = []


def register(factory: Factory) -> Callable[[], None]:
    """Offer another isolated backend (a container runtime, a remote runner), tried
    before those registered earlier and before bubblewrap; returns its undo."""
    _factories.insert(0, factory)
    return lambda: _factories.remove(factory)


def _bubblewrap() -> Sandbox | None:
    path = bwrap.binary()
    return bwrap.Bubblewrap(path) if path is not None and bwrap.missing() is None else None


def _isolated() -> Sandbox | None:
    for factory in [*_factories, _bubblewrap]:
        backend = factory()
        if backend is not None and backend.isolated:
            return backend
    return None


def isolation_missing() -> str | None:
    """None if an OS sandbox works here, else what is missing, e.g. "bubblewrap (...)"."""
    return None if _isolated() is not None else (bwrap.missing() or "an isolated backend")


def select(allow_unsafe: bool = True) -> Sandbox:
    """The backend for the next call. Raises SandboxUnavailable (see the module's doc)."""
    global _warned
    backend = _isolated()
    if backend is not None:
        return backend
    missing = bwrap.missing() or "an isolated backend"
    if not allow_unsafe:
        raise SandboxUnavailable(
            f"user tools are turned off: this server has no OS sandbox to run them in "
            f"(missing: {missing}). The operator can install it, or start the server "
            "with --unsafe-tools to run tools without one (any user could then take "
            "over the server's account)."
        )
    if not _warned:
        _warned = True
        log.warning(
            "tools run WITHOUT an OS sandbox (missing: %s): a tool can read and "
            "change anything this user can",
            missing,
        )
    return PlainProcess()


def run(
    request: dict[str, Any], limits: Limits | None = None, backend: Sandbox | None = None
) -> SandboxResult:
    """Run one request (see `_child.py` for the protocol) in a fresh sandbox. Never raises
    (except SandboxUnavailable from `select`, when no backend is given)."""
    return (backend or select()).run(request, limits or Limits())


async def arun(
    request: dict[str, Any], limits: Limits | None = None, backend: Sandbox | None = None
) -> SandboxResult:
    """`run()` off the event loop, in the sandbox's own pool of threads."""
    chosen = backend or select()
    return await asyncio.get_running_loop().run_in_executor(_POOL, run, request, limits, chosen)


def describe(
    source: str, limits: Limits | None = None, backend: Sandbox | None = None
) -> SandboxResult:
    """The tools a source file defines (names, docstrings, schemas, flags), found in the sandbox."""
    return run({"mode": "describe", "source": source}, limits, backend)


def call(
    source: str,
    function: str,
    args: dict[str, Any],
    limits: Limits | None = None,
    backend: Sandbox | None = None,
) -> SandboxResult:
    request = {"mode": "call", "source": source, "function": function, "args": args}
    return run(request, limits, backend)
