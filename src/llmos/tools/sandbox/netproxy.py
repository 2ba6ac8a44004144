"""Network grants: the only way out of the sandbox is a proxy that knows them.

A tool's sandbox has a network namespace with nothing but loopback. When the
calling agent holds `net` grants (`access/grants.py`: a host name or address,
optionally with a port), the bubblewrap backend starts a `Proxy` for that
call: an HTTP proxy in the kernel's process, listening on a Unix socket in the
call's scratch directory (so bound into the sandbox, owned by the sandbox's
uid). Inside, the child runs a small forwarder on 127.0.0.1:`PROXY_PORT` and
sets HTTP_PROXY / HTTPS_PROXY to it (`tools/_child.py`), so urllib, requests
and httpx go through it without any change to the tool.

The proxy takes `CONNECT host:port` (HTTPS, any TCP) and absolute-form HTTP
requests (`GET http://host:port/path`). It answers 403 unless the host (and
port, when the grant names one) is granted, resolves the name itself and
connects to the address it checked (no second lookup a tool could race). An
address that is loopback, private, link-local or otherwise not global is
refused unless (a) the operator allows such destinations at all
(`LLMOS_SANDBOX_PRIVATE_NET=1`: on a shared server any user could otherwise
grant their agent the machine's own database or admin ports) and (b) the
grant names that address itself (`127.0.0.1:8080`) or `localhost` (a granted
name that resolves into private networks is refused). The kernel's own
listening ports (the llmos server's) are refused always. Each connection is
then a plain byte pipe to that one host.

Left out: per-call byte or connection-time limits beyond the call's own wall
clock (every connection is closed when the call ends), UDP, and wildcard
grants (`*.example.com`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import selectors
import socket
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from llmos.access.grants import is_ip as _is_ip
from llmos.access.grants import parse_net_target as parse_grant

#: the port of the forwarder inside the sandbox (its own network namespace)
PROXY_PORT = 3128
#: name of the proxy's socket in the scratch directory
SOCKET_NAME = ".llmos-proxy.sock"
MAX_HEAD = 16 * 1024
MAX_CONNECTIONS = 16
CONNECT_TIMEOUT = 10.0

Resolver = Callable[[str, int], list[str]]


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def destination(
    host: str, port: int, grants: list[str], resolve: Resolver = _resolve
) -> tuple[str | None, str]:
    """(address to connect to, "") when `host:port` may be reached, else (None, why not)."""
    host = host.strip().lower().strip("[]")
    granted = []
    for g in grants:
        with contextlib.suppress(ValueError):
            granted.append(parse_grant(g))
    match = [(h, p) for h, p in granted if h == host and p in (None, port)]
    if not match:
        return None, f"{host}:{port} is not granted to this agent"
    literal = _is_ip(host) or host == "localhost"
    try:
        addresses = resolve(host, port)
    except OSError as e:
        return None, f"{host} does not resolve ({e})"
    private_ok = os.environ.get("LLMOS_SANDBOX_PRIVATE_NET", "") == "1"
    why = f"{host} resolves only to non-public addresses; grant the address itself"
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.is_global:
            return address, ""
        if not literal:
            continue
        if not private_ok:
            why = (
                f"{host} is a loopback or private address, which this server does not "
                "let tools reach (the operator allows it with LLMOS_SANDBOX_PRIVATE_NET=1)"
            )
        elif port in own_listening_ports():
            why = f"port {port} is llmos's own; tools may not reach it"
        else:
            return address, ""
    return None, why


def own_listening_ports() -> set[int]:
    """TCP ports this process listens on (the llmos server's), from /proc (Linux)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/self/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.read().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


class Proxy:
    """One call's proxy: a Unix socket at `path`, serving until `close()`."""

    def __init__(
        self, path: str, grants: list[str], uid: int | None = None, resolve: Resolver = _resolve
    ) -> None:
        self.path = path
        self.grants = list(grants)
        self.resolve = resolve
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        if uid is not None:
            os.chown(path, uid, uid)
        os.chmod(path, 0o600)
        self._server.listen(MAX_CONNECTIONS)
        self._thread = threading.Thread(target=self._accept, name="llmos-netproxy", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        with self._lock:
            for s in list(self._open):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        self._thread.join(timeout=2)

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            if self._closed:
                s.close()
                raise OSError("proxy closed")
            self._open.add(s)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                busy = len(self._open) >= 2 * MAX_CONNECTIONS
            if busy:
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            self._track(client)
            client.settimeout(CONNECT_TIMEOUT)
            head, rest = _read_head(client)
            method, target, version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method == "CONNECT":
                host, _, p = target.rpartition(":")
                port = int(p) if p.isdigit() else 443
                first = b""
            else:
                url = urlsplit(target)
                if url.scheme != "http" or not url.hostname:
                    _reply(client, 400, "only CONNECT and absolute http:// requests")
                    return
                host, port = url.hostname, url.port or 80
                path = (url.path or "/") + (f"?{url.query}" if url.query else "")
                lines = head.split(b"\r\n")[1:]
                kept = [h for h in lines if not h.lower().startswith(b"proxy-")]
                line = f"{method} {path} {version}".encode()
                first = b"\r\n".join([line, *kept]) + b"\r\n\r\n" + rest
            address, why = destination(host, port, self.grants, self.resolve)
            if address is None:
                _reply(client, 403, f"llmos sandbox: {why}")
                return
            upstream = socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
            self._track(upstream)
            if method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                first = rest
            if first:
                upstream.sendall(first)
            client.settimeout(None)
            upstream.settimeout(None)
            pipe(client, upstream)
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                _reply(client, 502, "llmos sandbox: the proxy could not reach the host")
        finally:
            for s in (client, upstream):
                if s is not None:
                    with self._lock:
                        self._open.discard(s)
                    s.close()


def _read_head(s: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk or len(data) > MAX_HEAD:
            raise ValueError("no request head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _reply(s: socket.socket, status: int, text: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    body = (text + "\n").encode()
    s.sendall(
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )


def pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, b)
    sel.register(b, selectors.EVENT_READ, a)
    try:
        while True:
            for key, _ in sel.select():
                src: socket.socket = key.fileobj  # type: ignore[assignment]
                data = src.recv(65536)
                if not data:
                    return
                key.data.sendall(data)
    finally:
        sel.close()
