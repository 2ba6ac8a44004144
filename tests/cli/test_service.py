"""The local kernel service: `llmos` commands as clients of one background kernel.

Real processes throughout: each command is `python -m llmos` (what the
`llmos` executable runs: a plain `send` in the launcher, the rest in the
typer app) in a subprocess with its own LLMOS_HOME and LLMOS_NO_DAEMON unset, so the first
command starts `python -m llmos.server.service` and later ones talk to it on
its Unix socket. Agents use `openai/fake` on the fake OpenAI-compatible
server. Every home's service is stopped in the fixture's teardown, and the
teardown checks that none is left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

import llmos
from llmos.client.local import Paths, running, stop
from llmos.server.app import create_app
from llmos.server.service import bind_private
from tests.fakes.openai_server import FakeOpenAIServer

LLMOS = [sys.executable, "-m", "llmos"]
SRC = str(Path(llmos.__file__).resolve().parents[1])
#: what a client command must not import (the kernel, the server, providers, numpy)
HEAVY = ("llmos.kernel", "llmos.server", "llmos.agent", "llmos.memory", "llmos.storage",
         "openai", "anthropic", "boto3", "numpy", "llama_cpp", "sqlalchemy", "fastapi")  # fmt: skip


def _policy(request: dict[str, Any]) -> Any:
    text = request["messages"][-1].get("content") or ""
    return {"tool_calls": [{"name": "send_message", "arguments": {"message": f"echo: {text}"}}]}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(policy=_policy) as srv:
        yield srv


class Home:
    """One LLMOS_HOME and the `llmos` commands run on it, in subprocesses."""

    def __init__(self, path: Path, server: FakeOpenAIServer) -> None:
        self.path = path
        self.paths = Paths(path)
        self.server = server
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOS_")}
        self.env.update(
            LLMOS_HOME=str(path),
            OPENAI_API_KEY="test",
            LLMOS_EMBEDDING_BASE_URL=server.base_url,
            LLMOS_EMBEDDING_API_KEY="test",
            PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p),
            NO_COLOR="1",
            COLUMNS="120",
        )

    def start(self, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*LLMOS, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=self.env, text=True, cwd=cwd,
        )  # fmt: skip

    @staticmethod
    def finish(proc: subprocess.Popen[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
        out, err = proc.communicate(stdin, timeout=120)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return self.finish(self.start(*args), stdin)

    def ok(self, *args: str, stdin: str = "") -> str:
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr
        return done.stdout

    def create(self, name: str) -> str:
        return self.ok("agent", "create", name, "--model", "openai/fake", "--base-url",
                       self.server.base_url, "--context-window", "8192",
                       "--embedder", "openai/text-embedding-3-small")  # fmt: skip

    def status(self) -> dict[str, Any]:
        done = self.run("kernel", "status", "--json")
        return json.loads(done.stdout)

    def pid(self) -> int:
        status = self.status()
        assert status["running"], status
        return int(status["pid"])


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie no longer does: in a container nobody may reap it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@pytest.fixture
def home(tmp_path: Path, server: FakeOpenAIServer) -> Iterator[Home]:
    h = Home(tmp_path / "home", server)
    yield h
    stop(h.paths, timeout=20)
    assert not running(h.paths), "a kernel service was left running"


# --- the service ----------------------------------------------------------------------


def test_first_command_starts_the_service_and_later_ones_use_it(home: Home) -> None:
    assert "Created agent bob" in home.create("bob")
    pid = home.pid()
    # owner-only: the socket 0600 in a 0700 directory
    sock = home.paths.socket
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert home.ok("send", "bob", "hello there").strip() == "echo: hello there"
    assert home.pid() == pid  # the same kernel served both
    status = home.status()
    assert status["version"] == llmos.__version__ and status["agents_in_memory"] == 1
    assert "openai/fake" in status["models_loaded"]
    assert status["uptime_seconds"] > 0 and status["socket"] == str(sock)
    # the nodes on its database: the service itself, live
    (node,) = status["nodes"]
    assert node["this"] and node["status"] == "live" and node["pid"] == pid
    shown = home.ok("kernel", "status")
    assert "nodes" in shown and node["id"] in shown and "live" in shown
    assert "kernel service pid" in home.paths.log.read_text()
    # the whole turn as JSON, and a failed command's one-line error
    turn = json.loads(home.ok("send", "bob", "again", "--json"))
    assert turn["reply"] == "echo: again" and turn["stop_reason"] == "end_turn"
    missing = home.run("send", "nobody", "hi")
    assert missing.returncode == 1 and missing.stderr.startswith("error: ")
    assert missing.stderr.count("\n") == 1 and "nobody" in missing.stderr
    # kernel stop, then status says so (exit 3)
    assert "stopped the kernel service" in home.ok("kernel", "stop")
    assert not _alive(pid) or not running(home.paths)
    assert home.run("kernel", "status").returncode == 3
    assert not sock.exists()


def test_a_client_command_imports_no_kernel(home: Home) -> None:
    home.ok("kernel", "start")
    code = (
        "import json, sys\n"
        "from llmos.cli.main import app\n"
        "try:\n"
        "    app(['agent', 'list', '--json'], prog_name='llmos')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=home.env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout.splitlines()[-1])
    loaded = [m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]
    assert loaded == []
    # on the service's Unix socket the client is the standard library's
    assert "llmos.client.unix" in modules and "httpx" not in modules


def _modules_after(home: Home, *argv: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the `llmos` launcher on `argv` in a fresh process; the modules it loaded."""
    code = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
        f"sys.argv = ['llmos', *{list(argv)!r}]\n"
        "from llmos.cli.launch import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=home.env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    *said, modules = done.stderr.splitlines()
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout,
                                       "\n".join(said)), set(json.loads(modules))  # fmt: skip


def test_a_plain_send_loads_no_cli_framework(home: Home) -> None:
    home.create("bob")
    done, modules = _modules_after(home, "send", "bob", "quick one")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "echo: quick one\n"
    heavy = ("typer", "click", "rich", "httpx", "pydantic", *HEAVY)
    assert sorted(m for m in modules if m.split(".")[0] in heavy or m.startswith(HEAVY)) == []
    # an option the launcher does not take sends the command through the typer app
    done, modules = _modules_after(home, "--home", str(home.path), "send", "bob", "slow one")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "echo: slow one\n" and "typer" in modules


def test_the_launcher_and_the_typer_app_print_the_same(home: Home) -> None:
    """Each way into `llmos send` gives the same output, errors and exit codes."""
    home.create("bob")
    typer_app = ("--home", str(home.path))
    for argv in (("send", "bob", "same words"), ("send", "nobody", "hi"),
                 ("send", "bob", "   "), ("send", "bob", "-")):  # fmt: skip
        fast = home.run(*argv, stdin="from stdin\n")
        slow = home.run(*typer_app, *argv, stdin="from stdin\n")
        assert (fast.returncode, fast.stdout, fast.stderr) == (
            slow.returncode, slow.stdout, slow.stderr), argv  # fmt: skip
    assert home.ok("send", "bob", "-", stdin="from stdin\n") == "echo: from stdin\n"
    fast = json.loads(home.ok("send", "bob", "as json", "--json"))
    slow = json.loads(home.ok(*typer_app, "send", "--json", "bob", "as json"))
    assert fast.keys() == slow.keys() and fast["reply"] == slow["reply"] == "echo: as json"


def test_two_terminals_at_once_share_one_kernel(home: Home) -> None:
    procs = [home.start("agent", "create", name, "--model", "openai/fake", "--base-url",
                        home.server.base_url, "--embedder", "openai/text-embedding-3-small",
                        "--context-window", "8192") for name in ("ann", "ben")]  # fmt: skip
    for p in procs:
        done = home.finish(p)
        assert done.returncode == 0, done.stderr
    log = home.paths.log.read_text()
    assert log.count("kernel service pid") == 1, log  # one service was started
    listed = json.loads(home.ok("agent", "list", "--json"))
    assert {a["name"] for a in listed} == {"ann", "ben"}
    # both terminals talk to the one kernel: its process table has both agents
    sends = [home.start("send", name, "hi") for name in ("ann", "ben")]
    assert [home.finish(p).stdout.strip() for p in sends] == ["echo: hi", "echo: hi"]
    ps = json.loads(home.ok("ps", "--json"))
    assert {p["name"] for p in ps["processes"]} == {"ann", "ben"}
    assert [n["this"] for n in ps["nodes"]] == [True]


def test_idle_service_exits(home: Home) -> None:
    home.ok("--idle", "1", "agent", "list")
    # (on a busy machine it may be gone before a `kernel status` could ask it)
    pid = int(re.findall(r"kernel service pid (\d+)", home.paths.log.read_text())[0])
    deadline = time.monotonic() + 30
    while (running(home.paths) or _alive(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(home.paths) and not _alive(pid)
    assert not home.paths.socket.exists()
    assert "idle for" in home.paths.log.read_text()
    home.ok("agent", "list")  # and the next command starts a new one
    assert home.pid() != pid


def test_a_stale_socket_is_replaced(home: Home) -> None:
    # a socket file left by a service that is gone: nothing listens on it
    home.paths.run.mkdir(parents=True, mode=0o700)
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(home.paths.socket))
    left.close()
    assert home.paths.socket.exists()
    assert "No agents yet" in home.ok("agent", "list")
    assert home.status()["running"]


def test_a_crashed_service_is_restarted(home: Home) -> None:
    home.create("cat")
    pid = home.pid()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while running(home.paths) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert home.paths.socket.exists()  # it had no chance to clean up
    assert home.ok("send", "cat", "still there?").strip() == "echo: still there?"
    assert home.pid() != pid


def test_a_service_of_another_version_is_restarted(home: Home) -> None:
    home.paths.run.mkdir(parents=True, mode=0o700)
    code = (
        "import sys, llmos\n"
        "llmos.__version__ = '0.0.0-old'\n"
        "from llmos.server.service import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    log = open(home.paths.log, "ab")  # noqa: SIM115 - the old service's log, closed below
    old = subprocess.Popen([sys.executable, "-c", code, "--home", str(home.path), "--idle", "60"],
                           env=home.env, stdout=log, stderr=log)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while home.status().get("version") != "0.0.0-old":
            assert old.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        home.ok("agent", "list")
        status = home.status()
        assert status["version"] == llmos.__version__ and status["pid"] != old.pid
        assert old.wait(timeout=30) == 0  # it was asked to stop, and did
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()
        log.close()


def test_no_daemon_leaves_no_service(home: Home) -> None:
    home.env["LLMOS_NO_DAEMON"] = "1"
    home.create("dan")
    assert home.ok("send", "dan", "in process").strip() == "echo: in process"
    assert home.ok("--no-daemon", "agent", "list").count("dan") == 1
    assert not running(home.paths) and not home.paths.socket.exists()
    assert home.run("kernel", "status").returncode == 3


def test_export_import_and_tool_list_through_the_service(home: Home, tmp_path: Path) -> None:
    home.create("eve")
    home.ok("send", "eve", "remember this")
    doc = tmp_path / "eve.json"
    home.ok("agent", "export", "eve", "-o", str(doc))
    exported = json.loads(doc.read_text())
    assert exported["agent"]["name"] == "eve"
    taken = home.run("agent", "import", str(doc))
    assert taken.returncode == 1 and taken.stderr.startswith("error: ")
    assert "Created agent eve2" in home.ok("agent", "import", str(doc), "--name", "eve2")
    shown = json.loads(home.ok("agent", "show", "eve2", "--json"))
    assert (
        shown["recall_count"]
        == json.loads(home.ok("agent", "show", "eve", "--json"))["recall_count"]
    )
    assert "no tools" in home.ok("tool", "list", "eve2")
    assert "no tools" in home.ok("tool", "list", "-a", "eve2")


# --- who the socket lets in ------------------------------------------------------------


def _serve(app: Any, **where: Any) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on", **where))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    return server, thread


def test_only_a_unix_socket_peer_is_the_local_user(tmp_path: Path) -> None:
    """The key-less local user exists only on a Unix socket of an app made with
    `local_user`: over TCP the same app wants a key, and an ordinary server wants
    one on a Unix socket too."""
    local = create_app(home=tmp_path / "a", local_user="local")
    tcp, t1 = _serve(local, host="127.0.0.1", port=0)
    try:
        port = tcp.servers[0].sockets[0].getsockname()[1]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/agents").status_code == 401
    finally:
        tcp.should_exit = True
        t1.join(timeout=30)
    path = tmp_path / "s.sock"
    sock = tmp_path / "l.sock"
    plain, t2 = _serve(create_app(home=tmp_path / "b"), uds=str(path))
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as c:
            assert c.get("http://x/v1/agents").status_code == 401
    finally:
        plain.should_exit = True
        t2.join(timeout=30)
    mine, t3 = _serve(create_app(home=tmp_path / "c", local_user="local"), uds=str(sock))
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock))) as c:
            assert c.get("http://x/v1/agents").json() == {"agents": []}
            assert c.get("http://x/v1/me").json()["name"] == "local"
            # a wrong key is not the local user: it is refused, not ignored
            bad = c.get("http://x/v1/agents", headers={"authorization": "Bearer llmos-nope"})
            assert bad.status_code == 401
    finally:
        mine.should_exit = True
        t3.join(timeout=30)


def test_bind_private_makes_an_owner_only_socket(tmp_path: Path) -> None:
    sock = tmp_path / "p.sock"
    listener = bind_private(sock)
    try:
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    finally:
        listener.close()


def test_a_socket_others_could_reach_is_refused(home: Home) -> None:
    """A socket in a directory other users can write is not trusted: a command would
    send its messages to whoever put it there."""
    home.ok("kernel", "start")
    home.paths.run.chmod(0o777)
    try:
        refused = home.run("agent", "list")
        assert refused.returncode == 1 and "not private" in refused.stderr
        assert refused.stderr.count("\n") == 1
    finally:
        home.paths.run.chmod(0o700)
    assert home.run("agent", "list").returncode == 0


def test_a_relative_home_is_the_same_home_for_the_service(home: Home) -> None:
    """The service runs in /, so a home given relative to the command's directory
    must reach it as the same directory."""
    home.path.mkdir(parents=True)
    home.env["LLMOS_HOME"] = "home"
    done = home.finish(home.start("--home", "home", "agent", "list", cwd=home.path.parent))
    assert done.returncode == 0, done.stderr
    assert home.paths.socket.exists() and (home.path / "llmos.db").exists()


def test_chat_through_the_service(home: Home) -> None:
    home.create("fay")
    script = "/memory\nhello fay\n/search hello\n/context\n/retry\n/rethink Be brief.\n/exit\n"
    shown = home.ok("chat", "fay", stdin=script)
    assert "Chatting with fay" in shown and "Memory blocks" in shown
    assert shown.count("echo: hello fay") >= 2  # the reply, then the retried reply
    found = shown.split("/search hello", 1)[1].split("/context", 1)[0]
    assert "user: hello fay" in found  # recall search, through the service
    assert "Rewrote the agent's last inner thoughts" in shown


def test_recall_by_words_and_dates(home: Home) -> None:
    home.create("gil")
    home.ok("send", "gil", "the harbour at dawn")
    by_words = home.ok("recall", "gil", "harbour")
    assert "user: the harbour at dawn" in by_words
    today = time.strftime("%Y-%m-%d")
    by_date = json.loads(home.ok("recall", "gil", "--start", today, "--json"))
    assert any("harbour" in (m.get("content") or "") for m in by_date["results"])
    assert json.loads(home.ok("recall", "gil", "--end", "2000-01-01", "--json"))["total"] == 0
    nothing = home.run("recall", "gil")
    assert nothing.returncode == 1 and "--start" in nothing.stderr
