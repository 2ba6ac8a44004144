"""Shared fixtures: a kernel on a real SQLite file in a temporary LLMOS_HOME."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from llmos import Kernel


class HashEmbedder:
    """A deterministic bag-of-words embedder: similar texts share dimensions.

    For tests that exercise storage and ranking without paying for the real
    model; the real MiniLM embedder has tests of its own.
    """

    name = "test/hash"
    dim = 64

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
                out[i, h % self.dim] += 1.0
            norm = np.linalg.norm(out[i])
            out[i] = out[i] / norm if norm else out[i]
        return out


@pytest.fixture(scope="session", autouse=True)
def _no_daemon() -> Iterator[None]:
    """`llmos` commands run their kernel in-process in tests, so no test leaves a kernel
    service behind; tests/cli/test_service.py asks for the service explicitly."""
    old = os.environ.get("LLMOS_NO_DAEMON")
    os.environ["LLMOS_NO_DAEMON"] = "1"
    yield
    if old is None:
        os.environ.pop("LLMOS_NO_DAEMON", None)
    else:
        os.environ["LLMOS_NO_DAEMON"] = old


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
async def kernel(home: Path) -> AsyncIterator[Kernel]:
    k = Kernel.open(home, embedders={"test/hash": HashEmbedder()})
    yield k
    await k.close()
