"""A stand-in embedder for tests and benchmarks that exercise storage and ranking.

`HashEmbedder` is a deterministic bag of words: texts that share words share
dimensions, so search ranks sensibly without loading a model. The real MiniLM
embedder has tests of its own (tests/memory/test_embeddings.py).
"""

from __future__ import annotations

import hashlib

import numpy as np


class HashEmbedder:
    """A deterministic bag-of-words embedder: similar texts share dimensions."""

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
