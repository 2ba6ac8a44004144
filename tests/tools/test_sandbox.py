"""Each limit of the tool sandbox, tried and shown to hold.

Every test runs real user code in a real subprocess (about half a second of
start-up each), with limits small enough to keep the suite fast.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from llmos.tools import sandbox

LIMITS = sandbox.Limits(wall_seconds=4, cpu_seconds=2, output_bytes=256 * 1024)


def run(
    source: str, name: str = "tool", args: dict | None = None, **limits: float
) -> sandbox.SandboxResult:
    lim = dataclasses.replace(LIMITS, **limits)
    return sandbox.call(source, name, args or {}, lim)


def test_a_good_call_returns_json() -> None:
    src = 'def tool(a: int, b: int = 2) -> dict:\n    """Add."""\n    return {"sum": a + b}\n'
    r = run(src, args={"a": 40})
    assert r.ok and r.result == {"sum": 42}


def test_bad_arguments_are_a_failed_result() -> None:
    src = 'def tool(a: int) -> int:\n    """Echo."""\n    return a\n'
    r = run(src, args={"a": "not a number"})
    assert not r.ok and "invalid arguments" in (r.error or "") and "a:" in (r.error or "")
    r = run(src, args={"a": 1, "b": 2})
    assert not r.ok and "b:" in (r.error or "")  # extra arguments are refused


def test_sleeping_forever_hits_the_wall_clock_limit() -> None:
    src = 'import time\ndef tool() -> int:\n    """Sleep."""\n    time.sleep(3600)\n'
    t0 = time.monotonic()
    r = run(src, wall_seconds=2)
    assert not r.ok and "timed out" in (r.error or "")
    assert time.monotonic() - t0 < 5


def test_spinning_hits_the_cpu_limit() -> None:
    src = 'def tool() -> int:\n    """Spin."""\n    while True:\n        pass\n'
    r = run(src, wall_seconds=20, cpu_seconds=1)
    # SIGXCPU at the soft limit; on a loaded machine the wall clock may win: both hold
    assert not r.ok and ("CPU time" in (r.error or "") or "timed out" in (r.error or ""))


def test_allocating_4_gib_fails_with_memory_error() -> None:
    src = 'def tool() -> int:\n    """Alloc."""\n    return len(bytearray(4 * 2**30))\n'
    r = run(src)
    assert not r.ok and "memory" in (r.error or "").lower()


def test_a_secret_in_the_kernels_environment_is_not_visible(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMOS_TEST_SECRET", "hunter2")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    src = 'import os\ndef tool() -> dict:\n    """Env."""\n    return dict(os.environ)\n'
    r = run(src)
    assert r.ok
    assert "LLMOS_TEST_SECRET" not in r.result and "OPENAI_API_KEY" not in r.result
    assert "hunter2" not in str(r.result)
    assert set(r.result) <= {*sandbox.ENV_ALLOW, "HOME", "TMPDIR", "PYTHONIOENCODING"}


def test_writes_outside_scratch_fail_and_inside_work(tmp_path: Path) -> None:
    target = tmp_path / "outside.txt"
    src = (
        "import os\n"
        "def tool(path: str) -> str:\n"
        '    """Write."""\n'
        "    open('inside.txt', 'w').write('ok')\n"
        "    here = os.getcwd()\n"
        "    open(path, 'w').write('escaped')\n"
        "    return here\n"
    )
    r = run(src, args={"path": str(target)})
    assert not r.ok and "scratch" in (r.error or "")
    assert not target.exists()
    src2 = (
        "import os\n"
        "def tool() -> str:\n"
        '    """Write in scratch."""\n'
        "    open('a.txt', 'w').write('ok')\n"
        "    os.mkdir('sub')\n"
        "    return open('a.txt').read() + ' ' + os.getcwd()\n"
    )
    r = run(src2)
    assert r.ok and r.result.startswith("ok ")
    scratch = r.result.split(" ", 1)[1]
    assert "llmos-tool-" in scratch and not Path(scratch).exists()  # removed after the call


def test_forking_is_refused() -> None:
    src = (
        "import os, subprocess\n"
        "def tool() -> int:\n"
        '    """Fork a lot."""\n'
        "    for _ in range(1000):\n"
        "        os.fork()\n"
        "    return 0\n"
    )
    r = run(src)
    assert not r.ok and "may not start processes" in (r.error or "")
    src2 = (
        'import subprocess\ndef tool() -> str:\n    """Sh."""\n'
        '    return subprocess.run(["true"])\n'
    )
    r = run(src2)
    assert not r.ok and "may not start processes" in (r.error or "")


def _named(name: str) -> list[int]:
    """Host pids of live processes called `name` (a zombie is dead, only not yet reaped)."""
    found = []
    for p in Path("/proc").iterdir():
        try:
            if (
                p.name.isdigit()
                and (p / "comm").read_text().strip() == name
                and "State:\tZ" not in (p / "status").read_text()
            ):
                found.append(int(p.name))
        except OSError:
            continue
    return found


def test_children_that_slip_past_the_hook_die_with_the_call() -> None:
    # ctypes steps around the audit hook; the pid namespace (or, without one,
    # the process group kill) still ends every child when the call ends.
    # RLIMIT_NPROC counts every process of the user, so it is raised here: the
    # forks must succeed for the test to show anything. The pids the tool sees
    # are its pid namespace's, so the children are found by name.
    src = (
        "import ctypes, time\n"
        "def tool() -> list:\n"
        '    """Fork via libc."""\n'
        "    libc = ctypes.CDLL(None)\n"
        "    pids = []\n"
        "    for _ in range(20):\n"
        "        pid = libc.fork()\n"
        "        if pid == 0:\n"
        "            libc.prctl(15, b'llmos-forked', 0, 0, 0)  # PR_SET_NAME\n"
        "            time.sleep(60)\n"
        "            libc._exit(0)\n"
        "        pids.append(pid)\n"
        "    return pids\n"
    )
    r = run(src, processes=1 << 20)
    assert r.ok, r.error
    pids = r.result
    assert len(pids) == 20 and all(p > 0 for p in pids), pids
    deadline = time.monotonic() + 5
    while _named("llmos-forked") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _named("llmos-forked") == []


def test_printing_50_mb_is_stopped() -> None:
    src = (
        "import sys\n"
        "def tool() -> int:\n"
        '    """Print a lot."""\n'
        "    chunk = 'x' * 2**20\n"
        "    for _ in range(50):\n"
        "        sys.stdout.write(chunk)\n"
        "    return 1\n"
    )
    t0 = time.monotonic()
    r = run(src)
    assert not r.ok and "exceeded the limit" in (r.error or "")
    assert time.monotonic() - t0 < 4


def test_writing_to_the_answer_fd_directly_cannot_forge_a_result() -> None:
    src = (
        "import os\n"
        "def tool() -> str:\n"
        '    """Forge."""\n'
        '    os.write(1, b\'{"ok": true, "result": "forged"}\')\n'
        "    return 'real'\n"
    )
    r = run(src)
    assert r.ok and r.result == "real"  # fd 1 was pointed at stderr


def test_an_unserialisable_return_value_is_a_failed_result() -> None:
    src = 'def tool() -> object:\n    """Obj."""\n    return object()\n'
    r = run(src)
    assert not r.ok and "not JSON-serialisable" in (r.error or "")


def test_a_crash_and_an_exception_are_failed_results() -> None:
    src = 'import os\ndef tool() -> int:\n    """Die."""\n    os.abort()\n'
    r = run(src)
    assert not r.ok and "SIGABRT" in (r.error or "")
    src = 'def tool() -> int:\n    """Raise."""\n    raise ValueError("nope")\n'
    r = run(src)
    assert not r.ok and "ValueError: nope" in (r.error or "") and "line 3" in (r.error or "")
    src = 'import sys\ndef tool() -> int:\n    """Exit."""\n    sys.exit(3)\n'
    r = run(src)
    assert not r.ok and "SystemExit" in (r.error or "")


def test_async_tools_and_describe() -> None:
    src = (
        "import asyncio\n"
        "__exclusive__ = {'slow'}\n"
        "__irreversible__ = True\n"
        "async def slow(x: str) -> str:\n"
        '    """Wait, then echo."""\n'
        "    await asyncio.sleep(0.01)\n"
        "    return x\n"
        "def fast() -> int:\n"
        '    """Fast."""\n'
        "    return 1\n"
        "def _private() -> None:\n"
        "    pass\n"
    )
    d = sandbox.describe(src, LIMITS)
    assert d.ok and d.tools is not None
    by = {t["name"]: t for t in d.tools}
    assert set(by) == {"slow", "fast"}
    assert by["slow"]["exclusive"] and not by["fast"]["exclusive"]
    assert by["slow"]["irreversible"] and by["fast"]["irreversible"]
    assert run(src, "slow", {"x": "hi"}).result == "hi"


def test_describe_of_broken_source() -> None:
    d = sandbox.describe("def broken(:\n", LIMITS)
    assert not d.ok and "SyntaxError" in (d.error or "")
    d = sandbox.describe("x = 1\n", LIMITS)
    assert not d.ok and "no public function" in (d.error or "")
    d = sandbox.describe("def f(*args):\n    'Doc.'\n", LIMITS)
    assert not d.ok and "*args" in (d.error or "")


def test_the_kernel_process_is_unharmed_by_what_a_tool_does_to_its_own() -> None:
    """The tool changes its directory, its environment and its limits; the kernel's
    stay as they were (the child is a separate process with its own copies)."""
    import resource

    kinds = ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC")
    cwd, env = os.getcwd(), dict(os.environ)
    limits = {k: resource.getrlimit(getattr(resource, k)) for k in kinds}
    src = (
        "import os, resource\n"
        "def tool() -> list:\n"
        '    """Meddle."""\n'
        "    os.chdir('/')\n"
        "    os.environ.clear()\n"
        "    os.environ['PATH'] = '/nowhere'\n"
        "    resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))\n"
        "    return [os.getcwd(), dict(os.environ)]\n"
    )
    r = run(src)
    assert r.ok and r.result == ["/", {"PATH": "/nowhere"}], r.error
    assert os.getcwd() == cwd
    assert dict(os.environ) == env
    assert {k: resource.getrlimit(getattr(resource, k)) for k in kinds} == limits
