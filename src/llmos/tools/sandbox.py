"""The tool sandbox: user tool code runs in a limited, short-lived subprocess.

Each call starts `python -I -B -m llmos.tools._child` in its own session
(process group), in a fresh scratch directory that is deleted afterwards, with
an environment built from an allow-list (PATH, LANG, LC_*, TZ) plus HOME and
TMPDIR pointing at the scratch directory — none of the kernel's secrets. The
child lowers its own rlimits before reading user code (CPU seconds, address
space, file size, open files, processes) and refuses, via an audit hook, to
open files for writing outside its scratch directory or to start processes.
The parent sends JSON on stdin, reads JSON from stdout, caps what it reads
from stdout and stderr, enforces a wall-clock timeout, and kills the whole
process group when the call ends, whatever happened. Every failure — timeout,
crash, signal, too much output, bad JSON, an unserialisable return value —
becomes a `SandboxResult(ok=False, error=...)` with a sentence for the model.

`run()` blocks; `arun()` runs it in a worker thread so other agents' tool
calls and LLM steps go on meanwhile.

What this is not: without namespaces or a separate user it is not a security
boundary against a determined attacker. Code in the child runs as the
kernel's user, can read what that user can read, can reach the network, and
can step around the audit hook with ctypes; a process that calls setsid()
leaves the process group. The limits, timeouts and the group kill do hold
against accidents (infinite loops, runaway memory, fork loops, floods of
output), which is what a tool manager must survive. For isolation run llmos
under its own unprivileged user, or in a container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ")


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


def _env(scratch: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ENV_ALLOW}
    env.setdefault("PATH", "/usr/bin:/bin")
    env.update(HOME=scratch, TMPDIR=scratch, PYTHONIOENCODING="utf-8")
    return env


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.kill()


def run(request: dict[str, Any], limits: Limits | None = None) -> SandboxResult:
    """Run one request (see `_child.py` for the protocol) in a fresh sandbox. Never raises."""
    limits = limits or Limits()
    started = time.monotonic()
    scratch = tempfile.mkdtemp(prefix="llmos-tool-")
    try:
        return _run(request, limits, scratch, started)
    except Exception as e:  # the kernel must survive whatever the child does
        return SandboxResult(False, error=f"sandbox error: {type(e).__name__}: {e}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(request: dict[str, Any], limits: Limits, scratch: str, started: float) -> SandboxResult:
    argv = [sys.executable, "-I", "-B", "-m", "llmos.tools._child", json.dumps(asdict(limits))]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=scratch,
        env=_env(scratch),
        start_new_session=True,  # its own process group: one killpg ends every child
        close_fds=True,
    )
    deadline = started + limits.wall_seconds
    out, errb = bytearray(), bytearray()
    failure: str | None = None
    try:
        assert proc.stdin and proc.stdout and proc.stderr
        try:
            proc.stdin.write(json.dumps(request).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died first; its exit status says why
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, errb)
        open_pipes = 2
        while open_pipes and failure is None:
            left = deadline - time.monotonic()
            if left <= 0:
                failure = f"the tool timed out after {limits.wall_seconds:g} s (wall clock)"
                break
            if proc.poll() is not None:
                # It has answered and exited; children it left behind hold the
                # pipes open, so end the group now and read to EOF.
                _kill_group(proc)
            for key, _ in sel.select(timeout=min(left, 0.2)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
                    continue
                key.data.extend(chunk)
                if len(key.data) > limits.output_bytes:
                    which = "output" if key.data is out else "printed output"
                    failure = (
                        f"the tool's {which} exceeded the limit of "
                        f"{limits.output_bytes} bytes; it was stopped"
                    )
                    break
        sel.close()
        if failure is None:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                failure = f"the tool timed out after {limits.wall_seconds:g} s (wall clock)"
    finally:
        _kill_group(proc)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
        for pipe in (proc.stdout, proc.stderr):
            with contextlib.suppress(Exception):
                pipe.close()  # type: ignore[union-attr]
    seconds = time.monotonic() - started
    stderr = errb[-4000:].decode("utf-8", "replace")
    if failure:
        return SandboxResult(False, error=failure, stderr=stderr, seconds=seconds)
    rc = proc.returncode
    if rc and rc < 0:
        sig = signal.Signals(-rc)
        why = {
            signal.SIGXCPU: f"it used more than its {limits.cpu_seconds} s of CPU time",
            signal.SIGKILL: "it was killed (out of memory or a limit)",
            signal.SIGSEGV: "it crashed (segmentation fault)",
        }.get(sig, f"it was killed by {sig.name}")
        return SandboxResult(False, error=f"the tool failed: {why}", stderr=stderr, seconds=seconds)
    try:
        answer = json.loads(out.decode("utf-8"))
        if not isinstance(answer, dict):
            raise ValueError("not an object")
    except ValueError:
        tail = stderr.strip().splitlines()[-1:] or ["no output"]
        return SandboxResult(
            False,
            error=f"the tool crashed (exit status {rc}): {tail[0][:300]}",
            stderr=stderr,
            seconds=seconds,
        )
    return SandboxResult(
        bool(answer.get("ok")),
        result=answer.get("result"),
        error=answer.get("error"),
        stderr=stderr,
        seconds=seconds,
        tools=answer.get("tools"),
    )


async def arun(request: dict[str, Any], limits: Limits | None = None) -> SandboxResult:
    """`run()` off the event loop."""
    return await asyncio.to_thread(run, request, limits)


def describe(source: str, limits: Limits | None = None) -> SandboxResult:
    """The tools a source file defines (names, docstrings, schemas, flags), found in the sandbox."""
    return run({"mode": "describe", "source": source}, limits)


def call(
    source: str, function: str, args: dict[str, Any], limits: Limits | None = None
) -> SandboxResult:
    return run({"mode": "call", "source": source, "function": function, "args": args}, limits)
