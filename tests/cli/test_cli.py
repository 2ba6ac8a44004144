"""The `llmos` command, run as a real executable against a fake OpenAI-compatible server.

The end-to-end tests start the installed `llmos` script (or `python -m
llmos.cli.main`) in subprocesses with `LLMOS_HOME` in a temporary directory,
so what is checked is what a user sees: stdout, stderr, exit codes, and state
that one process leaves for the next. The agents use `openai/fake` on
`FakeOpenAIServer`, whose policy (below) answers from each request's last message.

A process pays one to three seconds of imports on a 2-core machine, so the
end-to-end processes start together in one fixture (`runs`) and each test
checks one of them; checks of the command surface alone (help, listings,
confirmation, argument errors) run in this process with typer's `CliRunner`
on the same home — itself a second process as far as the database knows.

Left out: the embedded local model (its own slow tests), the server probe of
a context window, and archival search (it needs an embedder in the subprocess).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from llmos import Kernel
from llmos.cli.main import app
from tests.fakes.openai_server import Fail, FakeOpenAIServer

Result = subprocess.CompletedProcess[str]

# The fake server embeds too (deterministic vectors); agent creation checks the spec.
EMBEDDER = "openai/text-embedding-3-small"
THOUGHT = "The user told me something worth keeping."
CHAT_SCRIPT = [
    "/memory",
    "/context",
    "remember loves maps",
    "hi there",
    "/search maps",
    "/retry",
    "/rethink I will be brief.",
    "/nonsense",
    "/help",
    "/exit",
    "never sent",
]


def _policy(request: dict[str, Any]) -> Any:
    """'echo: X' for a message X; 'remember X' first appends X to the human block."""
    last = request["messages"][-1]
    if last["role"] == "tool":
        return _say("Noted.")
    text = last.get("content") or ""
    if "FAIL" in text:
        return Fail(400)
    if text.startswith("remember "):
        args = {"label": "human", "content": text[9:], "request_heartbeat": True}
        return {"content": THOUGHT,
                "tool_calls": [{"name": "core_memory_append", "arguments": args}]}  # fmt: skip
    return {"content": "Replying.", **_say(f"echo: {text}")}


def _say(message: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "send_message", "arguments": {"message": message}}]}


def _command() -> list[str]:
    script = shutil.which("llmos", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "llmos.cli.main"]


class CLI:
    """`llmos` with a test home and the fake server's credentials, in a subprocess or here."""

    def __init__(self, home: Path, server: FakeOpenAIServer) -> None:
        self.home = home
        self.server = server
        self.env = {
            **os.environ,
            "LLMOS_HOME": str(home),
            "OPENAI_API_KEY": "test",
            "LLMOS_EMBEDDING_BASE_URL": server.base_url,
            "LLMOS_EMBEDDING_API_KEY": "test",
            "NO_COLOR": "1",
            "COLUMNS": "120",
        }
        self.env.pop("LLMOS_DEBUG", None)
        self._runner = CliRunner()

    def start(self, *args: str, stdin: str = "") -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [*_command(), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env, text=True,
        )  # fmt: skip
        return proc, stdin

    @staticmethod
    def finish(started: tuple[subprocess.Popen[str], str]) -> Result:
        proc, stdin = started
        stdout, stderr = proc.communicate(stdin, timeout=300)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def run(self, *args: str, stdin: str = "") -> Result:
        """In a subprocess, as a user runs it."""
        return self.finish(self.start(*args, stdin=stdin))

    def here(self, *args: str, stdin: str | None = None) -> Result:
        """In this process: the same code and home, without the start-up cost."""
        r = self._runner.invoke(app, ["--home", str(self.home), *args], input=stdin, env=self.env)
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise r.exception  # a bug, not a user error: show its traceback
        return subprocess.CompletedProcess(list(args), r.exit_code, r.stdout, r.stderr)

    def create(self, name: str, *extra: str) -> tuple[str, ...]:
        return ("agent", "create", name, "--model", "openai/fake", "--base-url",
                self.server.base_url, "--embedder", EMBEDDER, "--context-window", "8192",
                *extra)  # fmt: skip


def ok(result: Result) -> Result:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def user_error(result: Result, fragment: str) -> None:
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert fragment in result.stderr


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(policy=_policy) as srv:
        yield srv


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, server: FakeOpenAIServer) -> CLI:
    return CLI(tmp_path_factory.mktemp("llmos-home"), server)


@pytest.fixture(scope="module")
def agents(cli: CLI, tmp_path_factory: pytest.TempPathFactory) -> None:
    """bob (created by a subprocess, persona from a file, an extra block); carol, dave,
    erin and gus (created here)."""
    persona = tmp_path_factory.mktemp("files") / "persona.txt"
    persona.write_text("I am Bob, a terse ship's navigator.\n")
    # The first open makes the database; concurrent first opens would race on the schema.
    assert "No agents yet" in ok(cli.here("agent", "list")).stdout
    bob = cli.start(*cli.create("bob", "--persona", str(persona), "--human", "The user is Ann.",
                                "--block", "notes=sail at dawn"))  # fmt: skip
    for name in ("carol", "dave", "erin", "gus"):
        ok(cli.here(*cli.create(name)))
    created = ok(cli.finish(bob)).stdout
    assert "Created agent bob" in created
    assert "openai/fake" in created and "window 8,192 tokens" in created


@pytest.fixture(scope="module")
def runs(cli: CLI, agents: None) -> dict[str, Result]:
    """The end-to-end processes, started together; each test below checks one."""
    started = {
        "reply": cli.start("send", "bob", "-", stdin="hello there\n"),  # "-": read stdin
        "json": cli.start("send", "carol", "remember has a cat", "--json"),
        "unknown": cli.start("send", "nobody", "hi"),
        "failed": cli.start("send", "dave", "please FAIL"),  # the server answers 400
        "chat": cli.start("chat", "erin", stdin="\n".join(CHAT_SCRIPT) + "\n"),
    }
    return {key: cli.finish(proc) for key, proc in started.items()}


# --- agents ---------------------------------------------------------------------------


def test_create_list_show(cli: CLI, agents: None) -> None:
    listed = ok(cli.here("agent", "list")).stdout
    for name in ("bob", "carol", "dave", "erin", "gus", "openai/fake"):
        assert name in listed
    shown = ok(cli.here("agent", "show", "bob")).stdout
    for expected in ("openai/fake", "Memory blocks", "persona", "notes", "Settings", "stable"):
        assert expected in shown
    desc = json.loads(ok(cli.here("agent", "show", "bob", "--json")).stdout)
    blocks = {b["label"]: b["value"] for b in desc["blocks"]}
    assert blocks == {
        "persona": "I am Bob, a terse ship's navigator.",  # read from the file
        "human": "The user is Ann.",
        "notes": "sail at dawn",
    }
    assert desc["embedder"] == EMBEDDER
    assert desc["base_url"] == cli.server.base_url
    assert desc["context_window"] == 8192


def test_delete_asks_first(cli: CLI, agents: None) -> None:
    declined = cli.here("agent", "delete", "gus", stdin="n\n")
    assert declined.returncode == 1
    assert "Delete agent 'gus'" in declined.stdout
    assert "gus" in cli.here("agent", "list").stdout
    assert "Deleted agent gus" in ok(cli.here("agent", "delete", "gus", "--yes")).stdout
    names = [a["name"] for a in json.loads(cli.here("agent", "list", "--json").stdout)]
    assert "gus" not in names
    user_error(cli.here("agent", "delete", "gus", "--yes"), "no agent named 'gus'")


def test_bad_arguments_are_one_line_errors(cli: CLI, agents: None) -> None:
    user_error(cli.here(*cli.create("bob")), "an agent named 'bob' already exists")
    user_error(cli.here("agent", "create", "x", "--model", "nonsense"), "'nonsense' is not")
    user_error(cli.here(*cli.create("y", "--block", "no-equals-sign")), "LABEL=TEXT")
    user_error(cli.here("send", "bob", "  "), "the message is empty")
    user_error(cli.here("send", "bob", "word " * 20_000), "tokens")  # over half the window
    user_error(cli.here("chat", "nobody"), "no agent named 'nobody'")
    assert cli.here("agent", "create", "z", "--layout", "wavy").returncode == 2  # usage


# --- send -----------------------------------------------------------------------------


def test_send_prints_the_reply(runs: dict[str, Result]) -> None:
    assert ok(runs["reply"]).stdout == "echo: hello there\n"


def test_send_json_has_the_whole_turn(runs: dict[str, Result]) -> None:
    turn = json.loads(ok(runs["json"]).stdout)
    assert turn["reply"] == "Noted."
    assert turn["stop_reason"] == "end_turn"
    assert turn["error"] is None
    assert [c["name"] for c in turn["function_calls"]] == ["core_memory_append", "send_message"]
    assert all(c["ok"] for c in turn["function_calls"])
    assert turn["usage"]["prompt_tokens"] > 0 and turn["usage"]["completion_tokens"] > 0
    assert turn["steps"] == 2


def test_the_next_process_sees_the_turn(cli: CLI, runs: dict[str, Result]) -> None:
    ok(runs["json"])
    desc = json.loads(ok(cli.here("agent", "show", "carol", "--json")).stdout)
    human = next(b["value"] for b in desc["blocks"] if b["label"] == "human")
    assert human.endswith("has a cat")
    # user, assistant (append), tool, assistant (send_message), tool
    assert desc["recall_count"] == desc["messages_in_window"] == 5


def test_failures_exit_1_without_traceback(runs: dict[str, Result]) -> None:
    user_error(runs["unknown"], "no agent named 'nobody'")
    user_error(runs["failed"], "the turn failed (error)")


# --- chat -----------------------------------------------------------------------------


def test_chat_through_stdin(cli: CLI, runs: dict[str, Result]) -> None:
    out = ok(runs["chat"]).stdout
    assert "Chatting with erin" in out
    # /memory
    assert "persona" in out and "human" in out
    # /context: the sections, token counts, and the bar
    for section in ("system", "tools", "core_memory", "summary", "messages"):
        assert section in out
    assert "of 8,192 tokens" in out and "█" in out
    # a turn: thoughts and calls dimmed, then the reply
    assert f"💭 {THOUGHT}" in out
    assert "⚙ core_memory_append" in out
    assert "Noted." in out
    # /search finds the message in recall
    assert "user: remember loves maps" in out
    assert "Rewrote the agent's last inner thoughts" in out
    # /retry ran "hi there" again
    assert out.count("echo: hi there") == 2
    assert "unknown command /nonsense" in out
    assert "/archival QUERY" in out  # /help
    assert "echo: never sent" not in out  # /exit left before it

    desc = json.loads(ok(cli.here("agent", "show", "erin", "--json")).stdout)
    # 5 messages for "remember ...", 3 for "hi there" (the retry replaced the first 3)
    assert desc["recall_count"] == 8
    kernel = Kernel.open(cli.home)
    try:
        newest = kernel.messages("erin", limit=8)
    finally:
        asyncio.run(kernel.close())
    assert [m.role for m in newest[:3]] == ["tool", "assistant", "user"]
    assert newest[1].content == "I will be brief."  # /rethink, stored
    assert newest[2].content == "hi there"


def test_chat_leaves_cleanly_at_end_of_input(cli: CLI, agents: None) -> None:
    assert "Chatting with bob" in ok(cli.here("chat", "bob", stdin="")).stdout  # Ctrl-D


def test_help_explains_commands(cli: CLI) -> None:
    main = ok(cli.here("--help")).stdout
    assert "Examples" in main
    for command in ("send", "chat", "agent"):
        assert command in main
    agent = ok(cli.here("agent", "--help")).stdout
    for command in ("create", "list", "show", "delete"):
        assert command in agent
    assert "--persona" in ok(cli.here("agent", "create", "--help")).stdout
