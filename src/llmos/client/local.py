"""The local kernel service, from the client's side: find it, start it, check it, stop it.

The service is `python -m llmos.server.service` (see that module): the HTTP
app of `llmos serve` on a Unix socket in `LLMOS_HOME/run/` (a 0700 directory;
the socket is 0600), so whoever can connect is the local user, and the app
serves them as the CLI's user "local" without a key. The files:

    run/kernel.sock     the socket (or a short path under /tmp when HOME is too long)
    run/kernel.lock     held (flock) by the running service for its whole life
    run/start.lock      held by a client while it starts a service: two terminals
                        at once start one service, and both use it
    run/kernel.json     the service's pid, version, socket, start time, idle limit,
                        and a fingerprint of its provider settings (`environment.py`)
    kernel.log          the service's log

`ensure()` returns a client of a live service of this llmos version: it
connects and checks `/health`; if nothing answers it takes the start lock,
looks again, removes a stale socket (its service crashed: the kernel lock is
free), stops a service of another version, and starts a new one, waiting
until it answers. A service started with other provider settings than the
command's is used as it is, with one note on stderr (`environment.py`).
Only the standard library is imported here (the client is `unix.UnixClient`),
so a local command never loads httpx.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llmos
from llmos.client import environment
from llmos.client.base import ServerFailed
from llmos.client.unix import UnixClient
from llmos.environ import seconds_from_env

#: the service exits after this long without a request or a running turn
DEFAULT_IDLE_SECONDS = 15 * 60
#: how long a client waits for a new service to answer (it opens the kernel)
START_TIMEOUT = 60.0
# AF_UNIX paths are at most 107 bytes on Linux
_MAX_SOCKET_PATH = 100


class ServiceError(ServerFailed):
    """The local kernel service could not be started, reached or stopped."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


def default_home() -> Path:
    """`$LLMOS_HOME` or ~/.llmos (what the kernel uses; read here without importing it)."""
    return Path(os.environ.get("LLMOS_HOME") or "~/.llmos").expanduser()


def idle_from_env() -> float:
    """The idle limit from `LLMOS_IDLE` (seconds), else the default."""
    try:
        return seconds_from_env("LLMOS_IDLE", DEFAULT_IDLE_SECONDS, 0.1, 366 * 86400)
    except ValueError as e:
        raise ServiceError(str(e)) from None


@dataclass(frozen=True, slots=True)
class Paths:
    """Where one home's service keeps its files."""

    home: Path

    @property
    def run(self) -> Path:
        return self.home / "run"

    @property
    def socket(self) -> Path:
        path = self.run / "kernel.sock"
        if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
            return path
        # Too long for AF_UNIX: a private directory under the runtime dir, one per home.
        import hashlib
        import tempfile

        base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
        digest = hashlib.sha256(os.fsencode(self.home.resolve())).hexdigest()[:20]
        return base / f"llmos-{os.getuid()}" / f"{digest}.sock"

    @property
    def lock(self) -> Path:
        return self.run / "kernel.lock"

    @property
    def start_lock(self) -> Path:
        return self.run / "start.lock"

    @property
    def state(self) -> Path:
        return self.run / "kernel.json"

    @property
    def log(self) -> Path:
        return self.home / "kernel.log"


def private_dir(path: Path) -> Path:
    """Make `path` a directory only its owner can enter, and check it is ours."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ServiceError(f"{path} is not a directory of this user; refusing to use it")
    if stat.S_IMODE(info.st_mode) != 0o700:
        path.chmod(0o700)
    return path


def _check_private(sock: Path) -> None:
    """Refuse a socket that another user could have put there, or could reach: the
    messages a command sends would go to their server."""
    me = os.getuid()
    folder, info = sock.parent.lstat(), sock.lstat()
    if folder.st_uid != me or stat.S_IMODE(folder.st_mode) & 0o077:
        raise ServiceError(f"{sock.parent} is not private to this user; refusing to use it")
    if info.st_uid != me or not stat.S_ISSOCK(info.st_mode):
        raise ServiceError(f"{sock} is not this user's socket; refusing to use it")


def prepare(paths: Paths) -> None:
    private_dir(paths.run)
    private_dir(paths.socket.parent)


@contextlib.contextmanager
def _flock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def running(paths: Paths) -> bool:
    """Whether a service holds this home's kernel lock (alive, even if not answering yet)."""
    if not paths.lock.exists():
        return False
    with _flock(paths.lock, blocking=False) as free:
        return not free


def read_state(paths: Paths) -> dict[str, Any]:
    try:
        data = json.loads(paths.state.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def probe(paths: Paths) -> tuple[UnixClient, dict[str, Any]] | None:
    """A client of the service and its /health, or None if nothing answers on the socket."""
    sock = paths.socket
    if not sock.exists():
        return None
    _check_private(sock)
    client = UnixClient(str(sock))
    try:
        return client, client.health()
    except ServerFailed:
        client.close()
        return None


def ensure(home: Path, idle: float | None = None) -> UnixClient:
    """A client of this home's service, started first if none of this version answers."""
    paths = Paths(home.expanduser().absolute())  # the service runs in /, not here
    found = probe(paths)
    if found and found[1].get("version") == llmos.__version__:
        _note_settings(paths)
        return found[0]
    if found:
        found[0].close()
    prepare(paths)
    with _flock(paths.start_lock):
        found = probe(paths)  # another terminal may have started it meanwhile
        if found:
            client, health = found
            if health.get("version") == llmos.__version__:
                _note_settings(paths)
                return client
            client.close()
            _log(paths, f"restarting the kernel service of llmos {health.get('version')}")
            stop(paths, int(health.get("pid") or 0))
        elif running(paths):
            # Alive but not answering: starting without us (cannot be: we hold the
            # start lock), stopping (idle exit), or hung. Wait for it to go.
            _wait_gone(paths, timeout=15.0)
        if paths.socket.exists() or paths.socket.is_symlink():
            paths.socket.unlink()  # stale: its service is gone
        return _start(paths, idle if idle is not None else idle_from_env())


_noted: list[bool] = []  # the note is printed once per process


def _note_settings(paths: Paths) -> None:
    """Say so on stderr if the service runs with other provider settings than ours."""
    if _noted:
        return
    state = read_state(paths)
    names = environment.differing(state.get("environment"), os.environ)
    if names:
        _noted.append(True)
        print(environment.note(names, state.get("pid")), file=sys.stderr)


def _start(paths: Paths, idle: float) -> UnixClient:
    import subprocess  # here, not above: a command that finds its service never needs it

    cmd = [sys.executable, "-m", "llmos.server.service", "--home", str(paths.home),
           "--idle", repr(idle)]  # fmt: skip
    # The service runs the same llmos as this client, wherever it was imported from.
    env = dict(os.environ)
    here = str(Path(llmos.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    with open(paths.log, "ab") as log:
        os.chmod(paths.log, 0o600)
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not killed with the terminal's process group
            close_fds=True,
            cwd="/",
            env=env,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = probe(paths)
        if found:
            return found[0]
        if proc.poll() is not None:
            raise ServiceError(
                f"the kernel service exited at start (code {proc.returncode}): "
                f"{_last_line(paths.log)} (log: {paths.log})"
            )
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    raise ServiceError(
        f"the kernel service did not answer in {START_TIMEOUT:.0f} s; see {paths.log}"
    )


def stop(paths: Paths, pid: int | None = None, timeout: float = 40.0) -> bool:
    """Ask the service to exit (SIGTERM: it finishes turns in flight) and wait; kill it
    if it has not gone by `timeout`. False if no service was running."""
    pid = pid or int(read_state(paths).get("pid") or 0)
    if not running(paths):
        return False
    if pid <= 0:
        raise ServiceError(f"a kernel service holds {paths.lock} but its pid is unknown")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(paths, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(paths, 5.0)
    return True


def _wait_gone(paths: Paths, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while running(paths):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _log(paths: Paths, line: str) -> None:
    with contextlib.suppress(OSError), open(paths.log, "a", encoding="utf-8") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} client {os.getpid()}: {line}\n")


def _last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no log"
