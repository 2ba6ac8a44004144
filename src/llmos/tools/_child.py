"""The sandbox child: runs one user tool call (or describes a tool file) and exits.

Started by `sandbox/process.py` as `python -I -B -c <boot> LIMITS_JSON` (the
boot line puts the kernel's llmos first on the path and calls `main`), inside
bubblewrap's namespaces or as a plain subprocess, in a scratch directory, with
an environment built from nothing. Given a uid (a second argument), it first
becomes that uid (how `bwrap.py` keeps a root kernel's tools unprivileged). Before
it reads any user code it lowers its own resource limits (CPU seconds, address
space, file size, open files, processes), keeps the real stdout for its one
JSON answer and points fd 1 at stderr so the tool's prints cannot corrupt it.
It then installs an audit hook that refuses to open files for writing outside
the scratch directory and refuses to start processes.

Protocol: one JSON object on stdin —
`{"mode": "describe", "source": ...}` or
`{"mode": "call", "source": ..., "function": ..., "args": {...}}` —
and one JSON object on the saved stdout: `{"ok": true, "result": ...}`,
`{"ok": true, "tools": [...]}` or `{"ok": false, "error": "..."}`.

The audit hook is a guard rail that turns a tool's mistakes into clear
errors, not a wall: ctypes or a C extension can step around it. The wall is
the backend's (`sandbox/bwrap.py`); the limits and the parent's timeouts
hold on every backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sys
import traceback
import types
from typing import Any

# Events that create a process; a tool that needs one must be run another way.
_SPAWN_EVENTS = {
    "os.fork",
    "os.forkpty",
    "os.posix_spawn",
    "os.exec",
    "os.spawn",
    "os.system",
    "subprocess.Popen",
    "pty.spawn",
}
# Events that change the file system at a path (first argument).
_PATH_EVENTS = {
    "os.remove",
    "os.rmdir",
    "os.mkdir",
    "os.rename",
    "os.chmod",
    "os.chown",
    "os.link",
    "os.symlink",
    "os.truncate",
    "os.utime",
    "shutil.rmtree",
}


def _set_limits(limits: dict[str, Any]) -> None:
    def lower(which: int, value: int) -> None:
        _soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))

    cpu = int(limits["cpu_seconds"])
    # soft < hard: SIGXCPU at the soft limit (default action: terminate)
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(
        resource.RLIMIT_CPU, (cpu, cpu + 1 if hard == resource.RLIM_INFINITY else hard)
    )
    lower(resource.RLIMIT_AS, int(limits["memory_bytes"]))
    lower(resource.RLIMIT_FSIZE, int(limits["file_bytes"]))
    lower(resource.RLIMIT_NOFILE, 256)
    lower(resource.RLIMIT_CORE, 0)
    # Counted per user and not enforced for root; the audit hook covers that case.
    lower(resource.RLIMIT_NPROC, int(limits["processes"]))
    # A write past RLIMIT_FSIZE should fail with an error, not kill silently.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _inside(path: Any, root: str) -> bool:
    if isinstance(path, int):  # an fd the tool already holds
        return True
    try:
        real = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return real == root or real.startswith(root + os.sep)


def _install_guard(root: str) -> None:
    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in _SPAWN_EVENTS:
            raise PermissionError(f"sandbox: tools may not start processes ({event})")
        if event == "open" and args:
            path, mode, flags = args[0], args[1], args[2] if len(args) > 2 else 0
            writing = (mode and any(c in str(mode) for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            if writing and path is not None and not _inside(path, root):
                raise PermissionError(f"sandbox: writes are confined to the scratch dir ({path})")
        elif event in _PATH_EVENTS and args and not _inside(args[0], root):
            raise PermissionError(f"sandbox: {event} outside the scratch dir ({args[0]})")
        elif event == "os.rename" and len(args) > 1 and not _inside(args[1], root):
            raise PermissionError(f"sandbox: {event} outside the scratch dir ({args[1]})")

    sys.addaudithook(hook)


def _load(source: str) -> types.ModuleType:
    module = types.ModuleType("llmos_user_tool")
    module.__file__ = "<tool>"
    sys.modules[module.__name__] = module
    exec(compile(source, "<tool>", "exec"), module.__dict__)
    return module


def _tool_functions(module: types.ModuleType) -> list[Any]:
    """The public functions defined in the file (not imported into it)."""
    return [
        obj
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and isinstance(obj, types.FunctionType)
        and obj.__module__ == module.__name__
    ]


def _flag(module: types.ModuleType, attr: str, name: str) -> bool:
    # `__exclusive__ = True` marks every tool of the file; a set of names marks some.
    value = getattr(module, attr, False)
    if isinstance(value, bool):
        return value
    return name in value


def _describe(module: types.ModuleType, schema: Any) -> dict[str, Any]:
    tools = []
    for func in _tool_functions(module):
        s = schema.function_schema(func)
        tools.append(
            {
                "name": s.name,
                "description": s.description,
                "parameters": s.parameters,
                "exclusive": _flag(module, "__exclusive__", s.name),
                "irreversible": _flag(module, "__irreversible__", s.name),
            }
        )
    if not tools:
        raise ValueError("the file defines no public function to use as a tool")
    return {"ok": True, "tools": tools}


def _call(module: types.ModuleType, schema: Any, name: str, raw: dict[str, Any]) -> dict[str, Any]:
    import asyncio
    import inspect

    from pydantic import ValidationError
    from pydantic_core import to_jsonable_python

    func = getattr(module, name, None)
    if not isinstance(func, types.FunctionType):
        return {"ok": False, "error": f"the tool's source no longer defines {name!r}"}
    model = schema.args_model(func)
    try:
        args = model.model_validate(raw)
    except ValidationError as e:
        msgs = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'arguments'}: {err['msg']}"
            for err in e.errors()
        )
        return {"ok": False, "error": f"invalid arguments: {msgs}"}
    result = func(**{k: getattr(args, k) for k in type(args).model_fields})
    if inspect.isawaitable(result):
        result = asyncio.run(result)  # type: ignore[arg-type]
    try:
        jsonable = to_jsonable_python(result)
        json.dumps(jsonable)
    except Exception:
        return {
            "ok": False,
            "error": f"the tool returned a {type(result).__name__}, which is not "
            "JSON-serialisable; return str, numbers, lists or dicts",
        }
    return {"ok": True, "result": jsonable}


def _forward(socket_path: str, port: int) -> None:
    """Serve 127.0.0.1:`port` of the sandbox's network namespace, each connection
    piped to the kernel's proxy at `socket_path` (`sandbox/netproxy.py`), and point
    the usual proxy variables at it. One thread; the proxy decides what is reachable."""
    import selectors
    import socket
    import threading

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", port))
    server.listen(16)
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ)

    def drop(s: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(s)
        s.close()

    def loop() -> None:
        while True:
            for key, _ in sel.select():
                s: socket.socket = key.fileobj  # type: ignore[assignment]
                if s is server:
                    inside, _ = server.accept()
                    out = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        out.connect(socket_path)
                    except OSError:
                        inside.close()
                        out.close()
                        continue
                    sel.register(inside, selectors.EVENT_READ, out)
                    sel.register(out, selectors.EVENT_READ, inside)
                    continue
                try:
                    data = s.recv(65536)
                    if data:
                        key.data.sendall(data)
                        continue
                except OSError:
                    pass
                drop(s)
                drop(key.data)

    threading.Thread(target=loop, name="llmos-forwarder", daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ[name] = url
    for name in ("NO_PROXY", "no_proxy"):
        os.environ.pop(name, None)


def _become(uid: int) -> None:
    """Drop from root (bwrap's, in our namespaces) to `uid`: no groups, no capability."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        os._exit(70)


def main() -> None:
    if len(sys.argv) > 2:  # the sandbox's host uid (bwrap.py, when llmos runs as root)
        _become(int(sys.argv[2]))
    limits = json.loads(sys.argv[1])
    os.environ.pop("PWD", None)  # a wrapper's (bwrap sets it); the environment is the parent's
    _set_limits(limits)
    answer = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # the tool's prints go to stderr
    request = json.loads(sys.stdin.read())
    if request.get("proxy"):  # the agent holds network grants (bwrap.py)
        _forward(request["proxy"], int(request.get("proxy_port", 3128)))
    from llmos.tools import schema  # imported before the guard: it reads files

    root = os.path.realpath(os.getcwd())
    _install_guard(root)
    try:
        module = _load(request["source"])
        if request["mode"] == "describe":
            out = _describe(module, schema)
        else:
            out = _call(module, schema, request["function"], request.get("args") or {})
    except MemoryError:
        out = {"ok": False, "error": "MemoryError: the tool exceeded its memory limit"}
    except BaseException as e:  # SystemExit too: the answer must still be written
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"line {f.lineno}" for f in reversed(tb) if f.filename == "<tool>"), "")
        out = {"ok": False, "error": f"{type(e).__name__}: {e}" + (f" ({where})" if where else "")}
    answer.write(json.dumps(out))
    answer.flush()
    os._exit(0)  # skip atexit handlers and finalisers the tool may have registered


if __name__ == "__main__":
    main()
