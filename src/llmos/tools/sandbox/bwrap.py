"""The bubblewrap backend: the tool's process in its own namespaces, seeing almost nothing.

Each call runs the child under `bwrap` (Debian's `bubblewrap`, what Flatpak
uses) with:

- new user, pid, network, IPC, UTS, cgroup and mount namespaces
  (`--unshare-all`), uid and gid 65534 inside, no capabilities, and no
  further user namespaces (`--disable-userns`);
- a root file system built from nothing: read-only binds of the Python
  runtime (`sys.base_prefix`, the venv, its site-packages: what a tool may
  import), of llmos's own source directory (for `llmos.tools._child`) and of
  the shared libraries under /usr/lib; a fresh `/proc` of the new pid
  namespace, a minimal `/dev`, a small tmpfs `/tmp` and, inside it, the
  call's scratch directory bound read-write at its own path; everything else
  read-only;
- no network at all (only the namespace's own loopback);
- `--die-with-parent` and the pid namespace: when the tool's main process
  ends, or the kernel kills the call, every process it started dies with it
  (a `setsid()` does not help); `--new-session` so it cannot push keystrokes
  into a terminal;
- the environment built from nothing (`--clearenv`);
- a seccomp filter (built with libseccomp through `pyseccomp`, handed to
  bwrap as BPF) that refuses ptrace, mount, bpf, keyctl, kernel modules,
  perf events, io_uring and the like with EPERM.

The CPU, memory, file-size and output limits and the wall clock are the
process runner's (`process.py`), as without bubblewrap.

`LLMOS_BWRAP` names the bwrap binary (default: `bwrap` on PATH); a value that
is not an executable turns this backend off, which is how tests simulate a
machine without it.

When llmos runs as root, a user namespace made by bwrap would map the tool's
uid to host root (whatever got out of the namespaces would be root). So as
root bwrap makes the other namespaces itself, with no user namespace, keeps
only CAP_SETUID and CAP_SETGID, and the child's first act, before it reads
any user code, is to become an unprivileged host uid (`LLMOS_SANDBOX_UID`,
default 65534 "nobody"; no supplementary groups), which leaves it no
capability at all; the scratch directory is given to that uid. Being a real
uid, RLIMIT_NPROC (set by the child) holds, so a fork bomb stops at the call's
process limit; the seccomp filter refuses new user namespaces (clone with
CLONE_NEWUSER; clone3 answers ENOSYS so libc falls back to clone).

Network: none but the namespace's loopback, unless the calling agent holds
`net` grants; then the call's proxy (`netproxy.py`) is its one way out, to
those hosts only.

Left out: a cgroup for the whole process tree: memory and pids are per-process rlimits
(this machine's cgroup v2 hierarchy has no memory or pids controller). Every
call shares the one sandbox uid, so concurrent calls share its process count.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import site
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from llmos.tools.sandbox import netproxy
from llmos.tools.sandbox.process import LLMOS_SOURCE, Launch, ProcessSandbox

log = logging.getLogger("llmos.tools.sandbox")

#: uid and gid of the tool inside its user namespace ("nobody")
NOBODY = 65534
CLONE_NEWUSER = 0x10000000
#: size of the sandbox's /tmp (the scratch directory is a host directory bound inside it)
TMP_BYTES = 16 * 1024 * 1024

# Refused with EPERM: what a confined tool has no use for and kernel exploits love.
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "keyctl", "add_key", "request_key",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "syslog", "acct", "quotactl", "lookup_dcookie",
    "open_by_handle_at", "name_to_handle_at", "fanotify_init", "iopl", "ioperm",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "vhangup",
)  # fmt: skip


def host_uid() -> int | None:
    """The host uid tools run as when llmos runs as root; None otherwise."""
    if os.geteuid() != 0:
        return None
    raw = os.environ.get("LLMOS_SANDBOX_UID", str(NOBODY))
    uid = int(raw) if raw.isdigit() else 0
    if not 0 < uid < 2**32 - 1:
        raise ValueError(f"LLMOS_SANDBOX_UID={raw!r}: give a non-zero numeric uid")
    return uid


def binary() -> str | None:
    """The bwrap executable to use, or None."""
    named = os.environ.get("LLMOS_BWRAP")
    if named is not None:
        return named if os.path.isfile(named) and os.access(named, os.X_OK) else None
    return shutil.which("bwrap")


@cache
def _probe(path: str) -> str | None:
    """None if `path` can make the namespaces here, else why not (once per binary)."""
    try:
        done = subprocess.run(
            [path, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],
            capture_output=True,
            timeout=10,
            env={},
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"{path} does not run ({e})"
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip()[:300]
        return f"{path} cannot create namespaces here ({why or done.returncode})"
    return None


def missing() -> str | None:
    """None if bubblewrap works on this machine, else a sentence naming what is missing."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap (Linux only; this is {sys.platform})"
    path = binary()
    if path is None:
        named = os.environ.get("LLMOS_BWRAP")
        where = f"from LLMOS_BWRAP={named} is not an executable" if named else "is not on PATH"
        return f"bubblewrap (`bwrap` {where}; install the `bubblewrap` package)"
    return _probe(path)


@cache
def _seccomp_program() -> bytes | None:
    """The BPF program of the seccomp filter, or None without libseccomp."""
    try:
        import pyseccomp
    except (ImportError, OSError, RuntimeError) as e:  # no libseccomp.so on this machine
        log.warning("tool sandbox: no seccomp filter (%s)", e)
        return None
    import errno
    import tempfile

    rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            rules.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
        except (ValueError, RuntimeError, OSError):  # not a syscall of this architecture
            continue
    # No new user namespace (root's sandbox has no --disable-userns): clone's
    # flags are checked; clone3's are behind a pointer, so it is refused whole
    # with ENOSYS, on which libc falls back to clone.
    with contextlib.suppress(ValueError, RuntimeError, OSError):
        rules.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    with contextlib.suppress(ValueError, RuntimeError, OSError):
        new_user = pyseccomp.Arg(0, pyseccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER)
        rules.add_rule(pyseccomp.ERRNO(errno.EPERM), "clone", new_user)
    with tempfile.TemporaryFile() as f:
        rules.export_bpf(f)
        f.seek(0)
        return f.read()


def _read_only_roots() -> list[str]:
    """The host directories the child needs, outermost first, none inside another."""
    wanted = {sys.base_prefix, sys.prefix, LLMOS_SOURCE, *site.getsitepackages()}
    wanted |= {"/usr/lib", "/usr/lib64", "/usr/lib32"}
    # a symlinked venv or prefix needs its target too
    dirs = {p for p in wanted | {os.path.realpath(p) for p in wanted} if os.path.isdir(p)}
    kept: list[str] = []
    for p in sorted(dirs, key=len):
        if not any(p.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(p)
    return kept


@cache
def _fixed_args(as_root: bool = False) -> tuple[str, ...]:
    if as_root:
        # Root makes the namespaces without a user namespace; the child drops
        # to the sandbox uid itself, with the only two capabilities left.
        args = [
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
        ]  # fmt: skip
    else:
        args = [
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--uid", str(NOBODY),
            "--gid", str(NOBODY),
            "--cap-drop", "ALL",
        ]  # fmt: skip
    # The tmpfs first: the runtime binds below may live under /tmp (a checkout
    # or venv there) and must land on top of it, not be hidden by it.
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", str(TMP_BYTES), "--perms", "1777", "--tmpfs", "/tmp"]
    for top in ("/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    roots = _read_only_roots()
    if as_root:
        # bwrap as root makes the directories above a bind 0700: the sandbox
        # uid could not reach the runtime through them
        made: set[str] = {"/", "/tmp"}
        for root in roots:
            parents = list(Path(root).parents)[::-1]
            for parent in (str(p) for p in parents):
                if parent not in made:
                    made.add(parent)
                    args += ["--perms", "0755", "--dir", parent]
    for root in roots:
        args += ["--ro-bind", root, root]
    return tuple(args)


class Bubblewrap(ProcessSandbox):
    """User code in bubblewrap's namespaces, read-only runtime, no network, seccomp."""

    name = "bubblewrap"
    isolated = True

    def __init__(self, path: str) -> None:
        self.path = path

    @contextlib.contextmanager
    def network(self, request: dict[str, Any], scratch: str) -> Iterator[dict[str, Any]]:
        """With `net` grants: a proxy for this call on a socket in scratch (`netproxy.py`)."""
        hosts = list(request.get("hosts") or ())
        if not hosts:
            yield request
            return
        uid = host_uid()
        if uid is not None:  # the socket goes in scratch, which is the sandbox uid's
            os.chown(scratch, uid, uid)
            os.chmod(scratch, 0o711)
        proxy = netproxy.Proxy(os.path.join(scratch, netproxy.SOCKET_NAME), hosts, uid)
        try:
            yield {**request, "proxy": proxy.path, "proxy_port": netproxy.PROXY_PORT}
        finally:
            proxy.close()

    def wrap(self, child: list[str], scratch: str, env: dict[str, str]) -> Launch:
        uid = host_uid()
        if uid is not None:
            os.chown(scratch, uid, uid)
            # bwrap's chdir runs as root without CAP_DAC_OVERRIDE: it needs the x bit
            os.chmod(scratch, 0o711)
            child = [*child, str(uid)]  # the child becomes this uid before user code
        argv = [self.path, *_fixed_args(uid is not None)]
        argv += ["--bind", scratch, scratch, "--remount-ro", "/", "--chdir", scratch]
        argv.append("--clearenv")
        for key, value in env.items():
            argv += ["--setenv", key, value]
        close: list[int] = []
        program = _seccomp_program()
        if program is not None:
            fd = os.memfd_create("llmos-seccomp", 0)
            os.write(fd, program)
            os.lseek(fd, 0, os.SEEK_SET)
            argv += ["--seccomp", str(fd)]
            close.append(fd)
        return Launch([*argv, "--", *child], pass_fds=tuple(close), close=close, signal_offset=True)
