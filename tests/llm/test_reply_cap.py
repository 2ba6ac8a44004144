"""A model server that answers 50 MB: the core stops reading at the cap and
raises a clear BackendError; memory stays near the cap, not the reply."""

from __future__ import annotations

import asyncio
import threading
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmos.errors import BackendError
from llmos.llm import replycap
from llmos.llm.core import ChatRequest, Message
from llmos.llm.openai_compat import OpenAICompatCore

HUGE = 50 * 1024 * 1024
CHUNK = b"x" * (1024 * 1024)


class _Flood(BaseHTTPRequestHandler):
    declare_length = False

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        if self.declare_length:
            self.send_header("content-length", str(HUGE + 2))
        self.end_headers()
        try:
            self.wfile.write(b'"')
            for _ in range(HUGE // len(CHUNK)):
                self.wfile.write(CHUNK)
            self.wfile.write(b'"')
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *_: object) -> None:
        pass


class _Declared(_Flood):
    declare_length = True


@pytest.fixture(params=[_Flood, _Declared], ids=["chunked", "content-length"])
def flood(request: pytest.FixtureRequest) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), request.param)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_a_50_mb_reply_is_a_backend_error_and_is_not_held_in_memory(
    flood: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOS_MAX_REPLY_BYTES", str(1024 * 1024))
    core = OpenAICompatCore("m", base_url=flood, api_key="k", context_window=8192, timeout=30)
    request = ChatRequest([Message("user", "hi")], max_tokens=16)

    async def chat_measured() -> int:
        await core._get_client()  # the SDK's import is not the reply's memory
        tracemalloc.start()
        try:
            with pytest.raises(BackendError, match="larger than") as caught:
                await core.chat(request)
            box.append(caught.value)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    box: list[BaseException] = []
    peak = asyncio.run(chat_measured())
    assert isinstance(box[0], replycap.ReplyTooLarge)
    assert box[0].code == "reply_too_large"
    assert peak < 8 * 1024 * 1024, peak  # the cap's order, far below the reply's 50 MB


def test_the_budget_of_a_streamed_reply() -> None:
    budget = replycap.ReplyBudget("core", limit=10)
    budget.add("12345")
    budget.add(b"12345")
    with pytest.raises(replycap.ReplyTooLarge, match=r"core: .* 10 bytes"):
        budget.add("x")
