"""Embeddings from any OpenAI-compatible `/v1/embeddings` endpoint ("openai/MODEL").

`OpenAIEmbedder` calls the endpoint through the official `openai` client, in
batches, and normalises what comes back; its failures become
`EmbeddingError`s whose messages never contain the API key.

Left out: sending `dimensions` to shorten OpenAI vectors.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from llmos.memory.embedders.base import (
    EmbeddingAuthError,
    EmbeddingConnectionError,
    EmbeddingError,
    FloatArray,
    normalise_rows,
)
from llmos.redact import redact


def _scrub(text: str, api_key: str | None) -> str:
    """`text` with the API key and anything key-like masked."""
    return redact(text, [api_key], mask="***") or ""


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible `/v1/embeddings` endpoint.

    `base_url` is the API root including `/v1` (None: api.openai.com).
    `api_key` may be None for a local server that needs none; for OpenAI
    itself it is required. `dim` is learned from the first response when not
    given; asking for `dim` before any `embed` call makes one small request.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        dim: int | None = None,
        *,
        batch_size: int = 128,
        timeout: float = 60.0,
        max_retries: int = 2,
    ) -> None:
        if not model or not model.strip():
            raise ValueError("OpenAIEmbedder needs a model name, e.g. 'text-embedding-3-small'")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if dim is not None and dim < 1:
            raise ValueError(f"dim must be positive, not {dim}")
        if not api_key and not base_url:
            raise EmbeddingAuthError(
                f"openai/{model} needs an API key for api.openai.com: pass api_key, or set "
                "LLMOS_EMBEDDING_API_KEY or OPENAI_API_KEY (or point LLMOS_EMBEDDING_BASE_URL "
                "at a server that needs none)"
            )
        self.model = model.strip()
        self.name = f"openai/{self.model}"
        self.base_url = base_url
        self.batch_size = batch_size
        self.timeout = timeout
        self.max_retries = max_retries
        self._api_key = api_key
        self._dim = dim
        self._lock = threading.Lock()
        self._client: Any = None

    def __repr__(self) -> str:
        # Never the key.
        return f"OpenAIEmbedder(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.embed(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    import openai
                except ImportError as exc:
                    raise EmbeddingError(
                        "the openai package is needed for openai/ embedders: pip install openai"
                    ) from exc
                self._client = openai.OpenAI(
                    # Local servers accept any key; the client insists on one.
                    api_key=self._api_key or "no-key",
                    base_url=self.base_url,
                    timeout=self.timeout,
                    max_retries=self.max_retries,
                )
            return self._client

    def _where(self) -> str:
        client = self._client
        root = str(client.base_url) if client is not None else (self.base_url or "api.openai.com")
        return root.rstrip("/") + "/embeddings"

    def _translate(self, exc: Exception) -> EmbeddingError:
        import openai

        where = self._where()
        if isinstance(exc, openai.APITimeoutError):
            return EmbeddingConnectionError(
                f"{self.name}: {where} did not answer within {self.timeout:g}s"
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return EmbeddingConnectionError(
                f"{self.name}: could not reach {where}: {_scrub(str(cause), self._api_key)}"
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = _scrub(str(getattr(exc, "message", exc)), self._api_key)[:300]
            if status in (401, 403):
                return EmbeddingAuthError(
                    f"{self.name}: {where} rejected the API key (HTTP {status}); check "
                    f"LLMOS_EMBEDDING_API_KEY / OPENAI_API_KEY. Server said: {detail}",
                    status_code=status,
                )
            if status == 404:
                return EmbeddingError(
                    f"{self.name}: HTTP 404 from {where}: unknown model, or a base URL "
                    f"missing /v1? Server said: {detail}",
                    status_code=status,
                )
            if status == 429:
                return EmbeddingError(
                    f"{self.name}: rate limited by {where} (HTTP 429) after "
                    f"{self.max_retries} retries. Server said: {detail}",
                    status_code=status,
                )
            return EmbeddingError(
                f"{self.name}: HTTP {status} from {where}: {detail}", status_code=status
            )
        detail = _scrub(str(exc), self._api_key)
        return EmbeddingError(f"{self.name}: embedding request failed: {detail}")

    def _request(self, inputs: list[str]) -> FloatArray:
        client = self._get_client()
        try:
            response = client.embeddings.create(
                model=self.model, input=inputs, encoding_format="float"
            )
        except Exception as exc:
            # `from None`: the original exception's text and body may echo the key.
            raise self._translate(exc) from None
        try:
            items = sorted(response.data, key=lambda item: item.index)
            vectors = np.asarray([item.embedding for item in items], dtype=np.float32)
        except (AttributeError, TypeError, ValueError) as exc:
            raise EmbeddingError(
                f"{self.name}: malformed response from {self._where()}: {exc}"
            ) from None
        if vectors.ndim != 2 or vectors.shape[0] != len(inputs):
            raise EmbeddingError(
                f"{self.name}: asked {self._where()} for {len(inputs)} vectors, "
                f"got an array of shape {vectors.shape}"
            )
        return vectors

    def embed(self, texts: list[str]) -> FloatArray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, not a single string")
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), self.batch_size):
            # The API rejects empty strings; a space embeds as "nothing" just as well.
            batch = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            vectors = self._request(batch)
            with self._lock:
                if self._dim is None:
                    self._dim = int(vectors.shape[1])
            if vectors.shape[1] != self._dim:
                raise EmbeddingError(
                    f"{self.name}: expected {self._dim}-d vectors, server returned "
                    f"{vectors.shape[1]}-d"
                )
            parts.append(vectors)
        return normalise_rows(np.concatenate(parts, axis=0))
