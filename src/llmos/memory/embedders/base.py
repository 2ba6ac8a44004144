"""The embedder protocol every embedder meets, and the errors embedders raise.

`Embedder` is what the memory layer depends on: `embed(texts)` returns a float32
array of shape (n, dim) whose rows have unit L2 norm, so a dot product is the
cosine similarity. `name` tags stored vectors, so vectors from different
models are never compared.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from llmos.errors import BackendError

FloatArray = npt.NDArray[np.float32]


class EmbeddingError(BackendError, RuntimeError):
    """An embedder could not produce vectors. `status_code` is set for HTTP errors."""

    backend = "embedder"

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class EmbeddingAuthError(EmbeddingError):
    """The embeddings server rejected (or was never given) the API key."""


class EmbeddingConnectionError(EmbeddingError):
    """The embeddings server could not be reached or did not answer in time."""

    unavailable = True


class EmbeddingModelNotFoundError(EmbeddingError):
    """The local model's files are not installed."""

    # Installing the model (or bringing its server up) fixes it without a
    # change to the request, so the server answers 503 as for a server down.
    unavailable = True


# Not runtime_checkable on purpose: on Python 3.11 isinstance() would read
# `dim`, which for an OpenAIEmbedder that has not embedded yet is an HTTP request.
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors of a fixed dimension."""

    @property
    def name(self) -> str:
        """Which model made the vectors, e.g. "local/all-MiniLM-L6-v2"."""
        ...

    @property
    def dim(self) -> int:
        """Length of every vector."""
        ...

    def embed(self, texts: list[str]) -> FloatArray:
        """Shape (len(texts), dim), float32, each row of L2 norm 1 (or 0 for a zero vector)."""
        ...


def normalise_rows(vectors: FloatArray) -> FloatArray:
    """`vectors` with each row scaled to unit L2 norm, in place; returns it."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # Same floor as torch.nn.functional.normalize, so a zero row stays zero, not NaN.
    np.maximum(norms, 1e-12, out=norms)
    vectors /= norms
    return vectors
