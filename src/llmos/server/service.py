"""The local kernel service: `llmos serve`'s app on an owner-only Unix socket, in the background.

    python -m llmos.server.service --home DIR [--idle SECONDS]

The first `llmos` command that needs a kernel starts this process
(`llmos.client.local.ensure`); later commands talk to it over
`LLMOS_HOME/run/kernel.sock`. The socket is bound here (not by uvicorn, which
would make it world-writable for a moment) with mode 0600 inside a 0700
directory, so only the user who owns LLMOS_HOME can connect, and the app
serves every connection on it as the CLI's user "local" without a key
(`create_app(local_user=...)`). The service holds `run/kernel.lock` for its
whole life (how clients tell a live service from a stale socket), writes
`run/kernel.json` (with a fingerprint of its provider settings, never their
values: `client/environment.py`), logs to `LLMOS_HOME/kernel.log`, and exits
after `--idle` seconds with no request in flight, no turn running and no
request arriving.
SIGTERM (what `llmos kernel stop` sends) lets turns in flight finish first.

Every command that changes what a kernel holds in memory runs in the
service, through a route (`set-embedder`, `load`: `routes/bulk.py`; `mcp`:
`routes/mcp.py`; `files search`), rather than in a kernel of its own beside
it that would then tell the service to drop its cached agents: the service's
kernel holds the agent while the work runs, so no turn there sees a half-made
change (a passage embedded with the old embedder after the re-embedding read
it), and there is no moment in which the service's images are stale. Only
`serve`, `user` and `models` still open a kernel in the command.

`in_process(home)` runs the same app on a private socket in a thread of the
calling process, for `llmos --no-daemon`: the commands are the same HTTP
client either way.

It lives in `server/` rather than `kernel/` (where DESIGN.md drew it): it
serves the HTTP app, and the kernel must not import the server.

Left out: socket activation (systemd), and serving more than one home.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

import llmos
from llmos.client import environment
from llmos.client.local import DEFAULT_IDLE_SECONDS, Paths, prepare
from llmos.server.app import create_app
from llmos.server.deps import ServerConfig

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from llmos.server.deps import ServerState

log = logging.getLogger("llmos.service")

#: the CLI's user: the owner of the agents `llmos` commands make
LOCAL_USER = "local"


def local_config() -> ServerConfig:
    """The operator's settings for a server whose only user is its operator: any model,
    base_url or embedder, no rate limit, tools as the CLI always ran them, and the
    machine's files and commands (`llmos load`, `llmos mcp add`)."""
    return ServerConfig(
        max_body_bytes=256 << 20,
        max_import_bytes=1 << 30,
        rate=0.0,
        models=("*",),
        allow_base_url=True,
        unsafe_tools=True,
        server_files=True,
    )


class _Server(uvicorn.Server):
    """uvicorn's server, but SIGTERM/SIGINT only ask it to stop: uvicorn would raise the
    signal again once it has stopped, killing the process before the service removes
    its socket and state file."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


def bind_private(path: Path) -> socket.socket:
    """A listening Unix socket at `path` that only this user can connect to."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # born 0600: never a moment with wider permissions
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


class Activity:
    """ASGI wrapper that knows when the service last did anything."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.active = 0
        self.last = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            self.last = time.monotonic()

    def idle_for(self) -> float:
        """Seconds with nothing to do: no request, no turn; 0 while busy."""
        if self.active or self.state.tasks or _kernel_busy(self.state):
            self.last = time.monotonic()
            return 0.0
        return time.monotonic() - self.last


def _kernel_busy(state: ServerState) -> bool:
    kernel = state.kernel
    if kernel is None:
        return False
    try:
        procs = kernel.kernel_stats().get("processes", [])
    except Exception:  # a status read must never keep the service from exiting
        return False
    # an agent mid-step, or with events queued (e.g. another agent's message), is work;
    # "ready" and "waiting_approval" wait for someone else
    return any(
        p.get("state") not in ("ready", "waiting_approval") or p.get("waiting") for p in procs
    )


async def run_kernel(
    home: Path | None,
    sock: socket.socket,
    *,
    idle: float | None = None,
    log_level: str | None = "info",
    log_config: Any = uvicorn.config.LOGGING_CONFIG,
    on_server: Any = None,
) -> None:
    """Open the kernel on this event loop, serve the app on `sock` until told to stop
    (or idle for `idle` seconds), then close the kernel. Errors opening the kernel
    (a bad home, a broken database) raise before anything is served."""
    from llmos.kernel.kernel import Kernel

    kernel = Kernel.open(home)
    try:
        app = create_app(kernel, local_config(), local_user=LOCAL_USER)
        activity = Activity(app, app.state.llmos)
        config = uvicorn.Config(
            activity,
            log_level=log_level,
            log_config=log_config,
            lifespan="on",
            timeout_graceful_shutdown=30,
            access_log=False,
            # A chat keeps one connection while its user types: with uvicorn's 5 s the
            # server closes it between messages, and a message sent as it closes is
            # reset. Local clients are few; idle connections may stay.
            timeout_keep_alive=600,
        )
        server = _Server(config)
        if on_server is not None:
            on_server(server)

        async def watch(limit: float) -> None:
            while not server.should_exit:
                await asyncio.sleep(min(1.0, limit / 4))
                if server.started and activity.idle_for() >= limit:
                    log.info("idle for %.0f s: exiting", limit)
                    server.should_exit = True

        watcher = asyncio.ensure_future(watch(idle)) if idle else None
        try:
            await server.serve(sockets=[sock])
        finally:
            if watcher is not None:
                watcher.cancel()
    finally:
        await kernel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmos.server.service")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE_SECONDS)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    home: Path = args.home.expanduser()
    paths = Paths(home)
    prepare(paths)
    lock_fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        import fcntl

        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another kernel service runs on %s; exiting", home)
        return 0
    sock_path = paths.socket
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()  # we hold the kernel lock: any socket here is stale
    sock = bind_private(sock_path)
    inode = sock_path.stat().st_ino
    # The kernel's default home (and the embedded model's kv/agents, by default_kv_dir)
    # is LLMOS_HOME: make it this service's home, even when started with --home alone.
    os.environ["LLMOS_HOME"] = str(home)
    salt = environment.new_salt()
    state = {
        "pid": os.getpid(),
        "version": llmos.__version__,
        "socket": str(sock_path),
        "started_at": time.time(),
        "idle_seconds": args.idle,
        "home": str(home),
        # provider settings as HMACs, never values (client/environment.py)
        "environment": {"salt": salt, "hmac": environment.fingerprint(os.environ, salt)},
    }
    paths.state.write_text(json.dumps(state), encoding="utf-8")
    log.info("llmos %s kernel service pid %d on %s", llmos.__version__, os.getpid(), sock_path)
    failure: Exception | None = None
    try:
        asyncio.run(run_kernel(home, sock, idle=args.idle))
    except Exception as exc:
        log.exception("the kernel service failed")
        failure = exc
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            if sock_path.stat().st_ino == inode:
                sock_path.unlink()
        with contextlib.suppress(OSError):
            paths.state.unlink()
        log.info("kernel service pid %d stopped", os.getpid())
        # lock_fd stays open: the lock goes with the process itself, so a client that
        # sees it free knows the process is gone
    if failure is not None:
        print(f"error: {failure}", file=sys.stderr)  # the log's last line: the client shows it
        return 1
    return 0


@contextlib.contextmanager
def in_process(home: Path | None) -> Iterator[str]:
    """Serve the app in a thread of this process on a private socket; yield its path."""
    tmp = tempfile.mkdtemp(prefix="llmos-")  # 0700
    path = Path(tmp) / "kernel.sock"
    sock = bind_private(path)
    servers: list[uvicorn.Server] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            # no log config or levels: leave the calling program's logging as it is
            asyncio.run(
                run_kernel(home, sock, log_level=None, log_config=None, on_server=servers.append)
            )
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="llmos-kernel", daemon=True)
    thread.start()
    try:
        while not (servers and servers[0].started):
            if not thread.is_alive():
                if failure:
                    raise failure[0]
                raise RuntimeError("the in-process kernel stopped before it served")
            time.sleep(0.002)
        yield str(path)
    finally:
        if servers:
            servers[0].should_exit = True
        thread.join()
        sock.close()
        with contextlib.suppress(OSError):
            path.unlink()
            os.rmdir(tmp)


def status_extra(state: dict[str, Any]) -> dict[str, Any]:
    """Fields of kernel.json worth showing in `llmos kernel status`."""
    return {k: state[k] for k in ("idle_seconds", "started_at") if k in state}


if __name__ == "__main__":
    sys.exit(main())
