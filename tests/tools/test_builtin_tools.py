"""Built-in tools: calculate refuses code and huge numbers fast; run_python runs in the
sandbox under its limits; fetch_url honours the operator's allow-list, private
addresses, redirects, size and time limits (against a real HTTP server on
loopback, with loopback allowed explicitly); an agent uses one only once it is
attached, like any tool."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmos import ChatRequest, ChatResponse, Kernel
from llmos.llm.replay import ScriptedCore, call
from llmos.tools import builtin
from llmos.tools.builtin.base import Env, FetchPolicy
from llmos.tools.builtin.calculate import CalcError, evaluate
from llmos.tools.registry import ToolError
from llmos.tools.sandbox import Limits

PAGE = b"""<html><head><title>Test page</title><style>p{color:red}</style></head>
<body><script>var secret = "do not show";</script><h1>Hello</h1><p>Body text.</p></body></html>"""


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # quiet
        pass

    def send(self, code: int, ctype: str, body: bytes, **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        # the client may stop reading: what the limits tests want
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path == "/page":
            self.send(200, "text/html; charset=utf-8", PAGE)
        elif self.path == "/redirect-in":
            self.send(302, "text/plain", b"", Location="/page")
        elif self.path == "/redirect-out":
            self.send(302, "text/plain", b"", Location=f"http://localhost:{port}/page")
        elif self.path == "/loop":
            self.send(302, "text/plain", b"", Location="/loop")
        elif self.path == "/big":
            self.send(200, "text/plain", b"x" * (3 * 1024 * 1024))
        elif self.path == "/slow":
            time.sleep(3)
            self.send(200, "text/plain", b"late")
        elif self.path == "/image":
            self.send(200, "image/png", b"\x89PNG....")
        else:
            self.send(404, "text/plain", b"no such page")


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def fetch_env(**kw: object) -> Env:
    policy = {"hosts": ("127.0.0.1",), "allow_private": True, "timeout": 2.0} | kw
    return Env(fetch=FetchPolicy(**policy))  # type: ignore[arg-type]


# --- calculate ------------------------------------------------------------------------


def test_calculate_evaluates_arithmetic_and_math_functions() -> None:
    assert evaluate("2*(3+4)**2") == 98
    assert evaluate("2^10") == 1024
    assert evaluate("factorial(20)") == 2432902008176640000
    assert evaluate("sqrt(16) + log(1000, 10)") == pytest.approx(7.0)
    assert evaluate("max(1, 7, 3) - min(4, 2)") == 5
    assert evaluate("round(pi, 3)") == 3.142
    assert evaluate("7 // 2 + 7 % 2") == 4


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "(1).__class__",
        "[x for x in range(3)]",
        "lambda: 1",
        "'a' * 3",
        "open('/etc/passwd')",
        "x + 1",
        "globals()",
        "sqrt(x=4)",
        "1 if 1 else 2",
        "True + 1",
    ],
)
def test_calculate_refuses_code(expression: str) -> None:
    with pytest.raises(CalcError):
        evaluate(expression)


def test_calculate_refuses_huge_numbers_quickly() -> None:
    started = time.perf_counter()
    for expression in ("9**9**9", "10**5000", "2**100000 * 2", "factorial(100000)", "1e308 * 10"):
        with pytest.raises(CalcError):
            evaluate(expression)
    with pytest.raises(CalcError, match="division by zero"):
        evaluate("1/0")
    with pytest.raises(CalcError, match="longer than"):
        evaluate("1+" * 600 + "1")
    assert time.perf_counter() - started < 0.5


async def test_calculate_tool_result_and_refusal() -> None:
    ok = await builtin.run("calculate", {"expression": "6*7"}, Env())
    assert ok.ok and ok.result == 42
    bad = await builtin.run("calculate", {"expression": "__import__('os')"}, Env())
    assert not bad.ok and "not an allowed function" in str(bad.error)
    typo = await builtin.run("calculate", {"expr": "1"}, Env())
    assert not typo.ok and "invalid arguments" in str(typo.error)


async def test_current_time() -> None:
    now = await builtin.run("current_time", {"timezone": "Europe/Paris"}, Env())
    assert now.ok and ("CET" in now.result or "CEST" in now.result)
    bad = await builtin.run("current_time", {"timezone": "Mars/Olympus"}, Env())
    assert not bad.ok and "unknown time zone" in str(bad.error)


# --- run_python ---------------------------------------------------------------------


async def test_run_python_returns_output_and_errors() -> None:
    ran = await builtin.run("run_python", {"code": "import math\nprint(math.factorial(5))"}, Env())
    assert ran.ok and ran.result.strip() == "stdout:\n120"
    failed = await builtin.run("run_python", {"code": "print('before')\nx = 1 / 0"}, Env())
    assert not failed.ok
    assert "before" in str(failed.error) and "ZeroDivisionError" in str(failed.error)
    assert "(line 2)" in str(failed.error)


async def test_run_python_honours_the_sandbox_and_its_limits() -> None:
    env = Env(limits=Limits(wall_seconds=3, cpu_seconds=1))
    started = time.perf_counter()
    spin = await builtin.run("run_python", {"code": "while True:\n    pass"}, env)
    assert not spin.ok and time.perf_counter() - started < 10
    hog = await builtin.run("run_python", {"code": "x = bytearray(4 * 1024**3)"}, env)
    assert not hog.ok and "MemoryError" in str(hog.error)
    write = await builtin.run("run_python", {"code": "open('/tmp/../etc/llmos-x', 'w')"}, env)
    assert not write.ok and ("PermissionError" in str(write.error) or "denied" in str(write.error))
    proc = await builtin.run("run_python", {"code": "import os\nos.system('id')"}, env)
    assert not proc.ok and "PermissionError" in str(proc.error)
    long_output = await builtin.run("run_python", {"code": "print('y' * 100000)"}, env)
    assert (
        long_output.ok
        and len(long_output.result) < 7000
        and "more characters" in long_output.result
    )


async def test_run_python_has_no_network(server: str) -> None:
    if builtin.run_python.sandbox.isolation_missing():
        pytest.skip("no OS sandbox here: the plain subprocess has the host's network")
    port = int(server.rsplit(":", 1)[1])
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"
    ran = await builtin.run("run_python", {"code": code}, Env())
    assert not ran.ok and ("Error" in str(ran.error))


# --- fetch_url ----------------------------------------------------------------------


async def test_fetch_url_is_off_by_default(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMOS_FETCH_HOSTS", raising=False)
    off = await builtin.run("fetch_url", {"url": f"{server}/page"}, Env())
    assert not off.ok and "turned off" in str(off.error)


async def test_fetch_url_returns_allowed_pages_as_text(server: str) -> None:
    page = await builtin.run("fetch_url", {"url": f"{server}/page"}, fetch_env())
    assert page.ok, page.error
    assert "Hello" in page.result and "Body text." in page.result and "Test page" in page.result
    assert "do not show" not in page.result and "color:red" not in page.result
    followed = await builtin.run("fetch_url", {"url": f"{server}/redirect-in"}, fetch_env())
    assert followed.ok and "Body text." in followed.result and "/page" in followed.result
    missing = await builtin.run("fetch_url", {"url": f"{server}/nope"}, fetch_env())
    assert not missing.ok and "HTTP 404" in str(missing.error)


async def test_fetch_url_refuses_what_is_not_allowed(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    other_host = await builtin.run(
        "fetch_url", {"url": f"http://localhost:{port}/page"}, fetch_env()
    )
    assert not other_host.ok and "allow-list" in str(other_host.error)
    # userinfo that looks like an allowed host does not make the real host allowed
    trick = f"http://127.0.0.1@localhost:{port}/page"
    tricked = await builtin.run("fetch_url", {"url": trick}, fetch_env())
    assert not tricked.ok and "'localhost' is not on" in str(tricked.error)
    out = await builtin.run("fetch_url", {"url": f"{server}/redirect-out"}, fetch_env())
    assert not out.ok and "'localhost' is not on" in str(out.error)
    # loopback is private: refused unless the operator allows private addresses
    private = await builtin.run(
        "fetch_url", {"url": f"{server}/page"}, fetch_env(allow_private=False)
    )
    assert not private.ok and "private or local" in str(private.error)
    star = fetch_env(hosts=("*",), allow_private=False)
    for url in (f"{server}/page", "http://[::1]/", "http://169.254.169.254/latest/meta-data"):
        refused = await builtin.run("fetch_url", {"url": url}, star)
        assert not refused.ok and "private or local" in str(refused.error), url
    scheme = await builtin.run("fetch_url", {"url": "file:///etc/passwd"}, fetch_env())
    assert not scheme.ok and "only http and https" in str(scheme.error)
    loop = await builtin.run("fetch_url", {"url": f"{server}/loop"}, fetch_env())
    assert not loop.ok and "redirects" in str(loop.error)
    image = await builtin.run("fetch_url", {"url": f"{server}/image"}, fetch_env())
    assert not image.ok and "not a text page" in str(image.error)


async def test_fetch_url_checks_the_address_it_connected_to(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name that resolved to a public address when checked and to a private
    # one when connected (DNS rebinding): the check before the body catches it.
    from llmos.tools.builtin import fetch_url

    async def passes(url: str, policy: FetchPolicy) -> None:
        return None

    monkeypatch.setattr(fetch_url, "_check", passes)
    env = fetch_env(hosts=("*",), allow_private=False)
    rebound = await builtin.run("fetch_url", {"url": f"{server}/page"}, env)
    assert not rebound.ok and "connected to a private address" in str(rebound.error)


async def test_fetch_url_honours_size_and_time_limits(server: str) -> None:
    env = fetch_env(max_bytes=100_000)
    big = await builtin.run("fetch_url", {"url": f"{server}/big", "max_chars": 5000}, env)
    assert big.ok and "[... 95000 more characters]" in big.result
    started = time.perf_counter()
    slow = await builtin.run("fetch_url", {"url": f"{server}/slow"}, fetch_env(timeout=0.5))
    assert not slow.ok and "took over 0.5s" in str(slow.error)
    assert time.perf_counter() - started < 2


async def test_fetch_url_reads_the_operators_environment(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmos.tools.builtin.fetch_url import policy_from_env

    monkeypatch.setenv("LLMOS_FETCH_HOSTS", " Example.org, *.wikipedia.org ,")
    monkeypatch.setenv("LLMOS_FETCH_PRIVATE", "0")
    assert policy_from_env() == FetchPolicy(hosts=("example.org", "*.wikipedia.org"))


# --- through the kernel -------------------------------------------------------------


def tool_policy(name: str, **arguments: object):  # type: ignore[no-untyped-def]
    def policy(req: ChatRequest) -> ChatResponse:
        m = req.messages[-1]
        if m.role == "tool":
            return call("send_message", message=f"said: {json.loads(m.content or '')['message']}")
        return call(name, request_heartbeat=True, **arguments)

    return policy


async def test_an_agent_calls_a_builtin_tool_once_attached(kernel: Kernel) -> None:
    core = ScriptedCore(tool_policy("calculate", expression="6*7"), name="scripted/calc")
    kernel.add_core(core)
    await kernel.create_agent("ann", model=core.name, embedder="test/hash")
    names = [t["name"] for t in kernel.builtin_tools()]
    assert names == ["calculate", "current_time", "fetch_url", "run_python"]
    assert all(t["builtin"] and t["description"] for t in kernel.builtin_tools())

    turn = await kernel.send("ann", "what is 6*7?")
    assert not turn.function_calls[0].ok and "unknown function" in turn.function_calls[0].result
    assert "calculate" not in {t.name for t in core.requests[0].tools}

    kernel.attach_tool("ann", "calculate")
    turn = await kernel.send("ann", "what is 6*7?")
    assert turn.function_calls[0].ok and turn.reply == "said: 42"
    spec = next(t for t in core.requests[-2].tools if t.name == "calculate")
    assert spec.parameters["required"] == ["expression"]
    assert [t["name"] for t in kernel.list_tools(agent="ann")] == ["calculate"]
    assert kernel.audit()[0]["target"] == "calculate" and kernel.audit()[0]["decision"] == "allowed"
    # a user tool cannot take a built-in tool's name
    with pytest.raises(ToolError, match="built-in"):
        await kernel.add_tool('def calculate(x: str) -> str:\n    """Fake."""\n    return x\n')
    assert kernel.detach_tool("ann", "calculate")


async def test_an_agent_fetches_a_page_the_operator_allows(
    kernel: Kernel, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the operator's environment, read by the process running the agents
    monkeypatch.setenv("LLMOS_FETCH_HOSTS", "127.0.0.1")
    monkeypatch.setenv("LLMOS_FETCH_PRIVATE", "1")
    core = ScriptedCore(tool_policy("fetch_url", url=f"{server}/page"), name="scripted/fetch")
    kernel.add_core(core)
    await kernel.create_agent("ann", model=core.name, embedder="test/hash")
    kernel.attach_tool("ann", "fetch_url")
    turn = await kernel.send("ann", "read the page")
    assert turn.function_calls[0].ok and "Body text." in (turn.reply or "")
    monkeypatch.setenv("LLMOS_FETCH_PRIVATE", "0")
    turn = await kernel.send("ann", "read it again")
    assert not turn.function_calls[0].ok and "private or local" in turn.function_calls[0].result
