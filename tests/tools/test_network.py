"""Network grants: a tool reaches the hosts its agent was granted, and nothing else.

The sandbox has no network but its own loopback; with `net` grants the call
gets a proxy (tools/sandbox/netproxy.py) in the kernel's process on a Unix
socket in scratch, and a forwarder inside at 127.0.0.1:3128 set as
HTTP(S)_PROXY. Tried for real with local HTTP servers: the granted one
answers; another port, the llmos server's own port, an ungranted name and a
direct connection around the proxy do not.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from llmos.access.grants import parse_net_target
from llmos.tools import sandbox
from llmos.tools.sandbox.netproxy import destination

FETCH = (
    "import socket, urllib.request, urllib.error\n"
    "def fetch(url: str) -> str:\n"
    '    """GET url through whatever proxy the environment names."""\n'
    "    try:\n"
    "        with urllib.request.urlopen(url, timeout=5) as r:\n"
    "            return f'{r.status} ' + r.read().decode()\n"
    "    except urllib.error.HTTPError as e:\n"
    "        return f'{e.code} ' + e.read().decode()\n"
    "    except Exception as e:\n"
    "        return f'error {type(e).__name__}: {e}'\n"
    "def direct(host: str, port: int) -> str:\n"
    '    """Connect without the proxy."""\n'
    "    try:\n"
    "        socket.create_connection((host, port), timeout=3).close()\n"
    "        return 'connected'\n"
    "    except OSError as e:\n"
    "        return f'error {e}'\n"
)
needs_sandbox = pytest.mark.skipif(
    sandbox.isolation_missing() is not None, reason="no OS sandbox on this machine"
)


@pytest.fixture(autouse=True)
def private_net(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's switch for loopback destinations: the test servers are local."""
    monkeypatch.setenv("LLMOS_SANDBOX_PRIVATE_NET", "1")


# The web server runs in its own process: ports of the test's own process are
# "llmos's own" to the proxy (the kernel runs in this process) and refused.
_SERVER = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {self.server.server_address[1]} {self.path}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *_):
        pass
httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
"""


@pytest.fixture
def web() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


web2 = web


def _call(function: str, args: dict, hosts: list[str] | None) -> str:
    request = {"mode": "call", "source": FETCH, "function": function, "args": args}
    if hosts is not None:
        request["hosts"] = hosts
    r = sandbox.run(request, sandbox.Limits(wall_seconds=15, cpu_seconds=5))
    assert r.ok, r
    return str(r.result)


@needs_sandbox
def test_a_granted_host_is_reachable_and_nothing_else(web: int, web2: int) -> None:
    grants = [f"127.0.0.1:{web}"]
    assert _call("fetch", {"url": f"http://127.0.0.1:{web}/x?y=1"}, grants) == (
        f"200 hello from {web} /x?y=1"
    )
    other = _call("fetch", {"url": f"http://127.0.0.1:{web2}/"}, grants)
    assert other.startswith("403 ") and "not granted" in other, other
    named = _call("fetch", {"url": "http://example.com/"}, grants)
    assert named.startswith("403 "), named
    # around the proxy: the sandbox's loopback is its own
    assert _call("direct", {"host": "127.0.0.1", "port": web}, grants).startswith("error")


@needs_sandbox
def test_without_a_grant_there_is_no_network_at_all(web: int) -> None:
    out = _call("fetch", {"url": f"http://127.0.0.1:{web}/"}, [])
    assert out.startswith("error"), out
    assert _call("fetch", {"url": f"http://127.0.0.1:{web}/"}, None).startswith("error")


@needs_sandbox
def test_loopback_needs_the_operators_switch(web: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMOS_SANDBOX_PRIVATE_NET")
    out = _call("fetch", {"url": f"http://127.0.0.1:{web}/"}, [f"127.0.0.1:{web}"])
    assert out.startswith("403 ") and "LLMOS_SANDBOX_PRIVATE_NET" in out, out


def test_a_port_this_process_listens_on_is_refused_even_when_granted() -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as own:
        port = own.getsockname()[1]
        grant = [f"127.0.0.1:{port}"]
        address, why = destination("127.0.0.1", port, grant)
        assert address is None and "llmos's own" in why
    assert destination("127.0.0.1", port, grant)[0] == "127.0.0.1"  # closed: not ours now


def test_a_granted_name_that_resolves_to_a_private_address_is_refused() -> None:
    def resolve_to(address: str):  # type: ignore[no-untyped-def]
        return lambda _host, _port: [address]

    assert destination("intranet.example", 80, ["intranet.example"], resolve_to("10.1.2.3")) == (
        None,
        "intranet.example resolves only to non-public addresses; grant the address itself",
    )
    assert destination("api.example", 443, ["api.example"], resolve_to("93.184.215.14"))[0]
    assert (
        destination("api.example", 80, ["api.example:443"], resolve_to("93.184.215.14"))[0] is None
    )
    assert destination("10.1.2.3", 80, ["10.1.2.3"], resolve_to("10.1.2.3"))[0] == "10.1.2.3"
    assert destination("localhost", 8080, ["localhost:8080"], resolve_to("127.0.0.1"))[0]


@pytest.mark.parametrize(
    ("target", "parsed"),
    [
        ("Example.COM", ("example.com", None)),
        ("example.com:443", ("example.com", 443)),
        ("[::1]:8080", ("::1", 8080)),
        ("10.0.0.5", ("10.0.0.5", None)),
    ],
)
def test_net_targets(target: str, parsed: tuple[str, int | None]) -> None:
    assert parse_net_target(target) == parsed


@pytest.mark.parametrize("bad", ["*", "a b", "host:x", "host:0", "http://x/", ""])
def test_bad_net_targets_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_net_target(bad)


TUNNEL = (
    "import http.client, os\n"
    "def tunnel(port: int) -> str:\n"
    '    """GET / through a CONNECT tunnel (how HTTPS goes through a proxy)."""\n'
    "    proxy = os.environ['HTTPS_PROXY'].rsplit(':', 1)\n"
    "    conn = http.client.HTTPConnection('127.0.0.1', int(proxy[1]), timeout=5)\n"
    "    conn.set_tunnel('127.0.0.1', port)\n"
    "    try:\n"
    "        conn.request('GET', '/tunnelled')\n"
    "        r = conn.getresponse()\n"
    "        return f'{r.status} ' + r.read().decode()\n"
    "    except OSError as e:\n"
    "        return f'error {e}'\n"
)


@needs_sandbox
def test_connect_tunnels_reach_the_granted_port_only(web: int, web2: int) -> None:
    def tunnel(port: int) -> str:
        request = {"mode": "call", "source": TUNNEL, "function": "tunnel", "args": {"port": port}}
        r = sandbox.run({**request, "hosts": [f"127.0.0.1:{web}"]}, sandbox.Limits(wall_seconds=15))
        assert r.ok, r
        return str(r.result)

    assert tunnel(web) == f"200 hello from {web} /tunnelled"
    assert "403" in tunnel(web2)
