"""What every fake provider server shares: a threaded HTTP server on 127.0.0.1.

`LoopbackServer` gives a fake its lifecycle (start on a free port in a
background thread, stop, context manager) and its queue of scripted outcomes;
`LoopbackHandler` is the request handler base (HTTP/1.1 keep-alive, Nagle off,
quiet logs). Each fake subclasses both and sets `handler_class`,
`url_suffix` and `label`.

Left out: anything protocol-specific (bodies, streaming, errors), which stays
in each fake.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LoopbackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung handler must not keep the test process alive
    allow_reuse_address = True
    request_queue_size = 256  # benchmarks open many connections at once


class LoopbackHandler(BaseHTTPRequestHandler):
    # Keep-alive: the SDKs reuse connections, as against a real server.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the body
    # waits for the client's delayed ACK (~40 ms per response on loopback).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests stay quiet


class LoopbackServer:
    """Lifecycle and script queue of a fake server; call `_init_loopback()` in __init__."""

    handler_class: type[BaseHTTPRequestHandler]
    url_suffix = ""  # e.g. "/v1" for OpenAI-style base URLs
    label = "fake"

    def _init_loopback(self) -> None:
        self.base_url = ""
        self._script: list[Any] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # set on stop: releases waits in handlers
        self._server: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        handler = type("_BoundHandler", (self.handler_class,), {"fake": self})
        self._server = LoopbackHTTPServer(("127.0.0.1", 0), handler)
        port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}{self.url_suffix}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.label}-{port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, *outcomes: Any) -> None:
        """Queue canned outcomes, used before the policy, in order."""
        with self._lock:
            self._script.extend(outcomes)
