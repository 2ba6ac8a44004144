"""Process backends: the tool runs in a short-lived child process, fed and read by pipes.

`ProcessSandbox.run` starts the child (`python -I -B` running
`llmos.tools._child`) through its backend's `wrap()`, in a fresh scratch
directory that is deleted afterwards, with an environment built from nothing
(PATH, LANG, and HOME and TMPDIR pointing at the scratch directory). The child
lowers its own rlimits before reading user code (CPU seconds, address space,
file size, open files, processes) and installs an audit hook that refuses
writes outside the scratch directory and new processes, so that a tool's
mistakes get a clear error. The parent sends JSON on stdin, reads JSON from
stdout, caps what it reads from stdout and stderr, enforces a wall-clock
timeout, and kills the child's process group when the call ends, whatever
happened. Every failure (timeout, crash, signal, too much output, bad JSON, an
unserialisable return value) becomes a `SandboxResult(ok=False, error=...)`
with a sentence for the model.

`PlainProcess` wraps nothing: the child runs as the kernel's user, sees its
files and network, and can step around the audit hook with ctypes. It holds
against accidents (loops, runaway memory, floods of output), not against an
attacker; `bwrap.py` is the backend that does.
"""

from __future__ import annotations

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
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmos.tools.sandbox.base import Limits, Sandbox, SandboxResult

#: the only variables a tool's environment has (their values are fixed, never inherited)
ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ")

#: the directory holding the `llmos` package the kernel runs, put first on the child's path
LLMOS_SOURCE = str(Path(__file__).resolve().parents[3])

# -I ignores PYTHONPATH, so the child finds this llmos (not another install) explicitly.
_BOOT = (
    f"import sys; sys.path.insert(0, {LLMOS_SOURCE!r}); from llmos.tools._child import main; main()"
)


def child_env(scratch: str) -> dict[str, str]:
    """The tool's whole environment: nothing of the kernel's."""
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": scratch,
        "TMPDIR": scratch,
        "PYTHONIOENCODING": "utf-8",
    }


@dataclass(slots=True)
class Launch:
    """How to start the child: the command, the fds it inherits, and what to close after."""

    argv: list[str]
    pass_fds: tuple[int, ...] = ()
    close: list[int] = field(default_factory=list)
    #: a wrapper reports the child's death by signal N as exit status 128 + N
    signal_offset: bool = False
    #: host uid and gid to start the command as (no supplementary groups); None: ours
    user: int | None = None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.kill()


class ProcessSandbox(Sandbox):
    """A backend that runs the child as a local process, wrapped by `wrap()`."""

    @abstractmethod
    def wrap(self, child: list[str], scratch: str, env: dict[str, str]) -> Launch:
        """The command that runs `child` (argv) confined as this backend confines it."""

    @contextlib.contextmanager
    def network(self, request: dict[str, Any], scratch: str) -> Iterator[dict[str, Any]]:
        """Set up the call's network for `request["hosts"]` (its agent's `net` grants);
        yields the request to send. Here: nothing (a plain process has the host's network)."""
        yield request

    def run(self, request: dict[str, Any], limits: Limits) -> SandboxResult:
        started = time.monotonic()
        scratch = os.path.realpath(tempfile.mkdtemp(prefix="llmos-tool-"))
        try:
            with self.network(request, scratch) as sent:
                return self._run(sent, limits, scratch, started)
        except Exception as e:  # the kernel must survive whatever the child does
            return SandboxResult(False, error=f"sandbox error: {type(e).__name__}: {e}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _run(
        self, request: dict[str, Any], limits: Limits, scratch: str, started: float
    ) -> SandboxResult:
        child = [sys.executable, "-I", "-B", "-c", _BOOT, json.dumps(asdict(limits))]
        env = child_env(scratch)
        launch = self.wrap(child, scratch, env)
        try:
            proc = subprocess.Popen(
                launch.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=scratch,
                env=env,
                start_new_session=True,  # its own process group: one killpg ends every child
                close_fds=True,
                pass_fds=launch.pass_fds,
                # set in the forked child before exec (no preexec_fn: threads)
                user=launch.user,
                group=launch.user,
                extra_groups=None if launch.user is None else [],
            )
        finally:
            for fd in launch.close:
                os.close(fd)
        deadline = started + limits.wall_seconds
        out, errb = bytearray(), bytearray()
        failure = _pump(proc, request, limits, deadline, out, errb)
        seconds = time.monotonic() - started
        stderr = errb[-4000:].decode("utf-8", "replace")
        if failure:
            return SandboxResult(False, error=failure, stderr=stderr, seconds=seconds)
        rc = proc.returncode
        if launch.signal_offset and rc is not None and rc > 128:
            rc = -(rc - 128)
        if rc and rc < 0:
            return SandboxResult(
                False,
                error=f"the tool failed: {_signal_text(-rc, limits)}",
                stderr=stderr,
                seconds=seconds,
            )
        return _answer(out, rc, stderr, seconds)


def _pump(
    proc: subprocess.Popen[bytes],
    request: dict[str, Any],
    limits: Limits,
    deadline: float,
    out: bytearray,
    errb: bytearray,
) -> str | None:
    """Feed the request, read both pipes within the limits; the failure's text, or None."""
    failure: str | None = None
    timed_out = f"the tool timed out after {limits.wall_seconds:g} s (wall clock)"
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
                failure = timed_out
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
                failure = timed_out
    finally:
        _kill_group(proc)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
        for pipe in (proc.stdout, proc.stderr):
            with contextlib.suppress(Exception):
                pipe.close()  # type: ignore[union-attr]
    return failure


def _signal_text(signum: int, limits: Limits) -> str:
    try:
        sig = signal.Signals(signum)
    except ValueError:
        return f"it was killed by signal {signum}"
    return {
        signal.SIGXCPU: f"it used more than its {limits.cpu_seconds} s of CPU time",
        signal.SIGKILL: "it was killed (out of memory or a limit)",
        signal.SIGSEGV: "it crashed (segmentation fault)",
        signal.SIGSYS: "it made a system call the sandbox forbids",
    }.get(sig, f"it was killed by {sig.name}")


def _answer(out: bytearray, rc: int | None, stderr: str, seconds: float) -> SandboxResult:
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


class PlainProcess(ProcessSandbox):
    """The child as a plain subprocess of the kernel's user: limits, no isolation."""

    name = "subprocess"
    isolated = False

    def wrap(self, child: list[str], scratch: str, env: dict[str, str]) -> Launch:
        return Launch(child)
