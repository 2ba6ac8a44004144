"""Embeddings from Amazon Bedrock's InvokeModel ("bedrock/MODEL_ID").

`BedrockEmbedder` calls Titan text embeddings (v2: 1024-d, or 256/512) and
Cohere embed v3 (1024-d, 96 texts per call) with the AWS credential chain;
stored passages and queries both use Cohere's "search_document" input type,
since the `Embedder` protocol does not tell them apart.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from llmos.memory.embedders.base import (
    EmbeddingAuthError,
    EmbeddingConnectionError,
    EmbeddingError,
    FloatArray,
    normalise_rows,
)

_BEDROCK_DIMS = {
    "amazon.titan-embed-text-v2": 1024,  # also 256 or 512 on request
    "amazon.titan-embed-text-v1": 1536,
    "amazon.titan-embed-g1-text": 1536,
    "cohere.embed-v4": 1536,
    "cohere.embed-": 1024,  # english-v3, multilingual-v3
}
_COHERE_BATCH = 96  # texts per InvokeModel call, Cohere's limit
_COHERE_MAX_CHARS = 2048  # per text; longer ones are cut ("truncate": "END" does tokens)


class BedrockEmbedder:
    """Titan text embeddings and Cohere embed on Amazon Bedrock, via `invoke_model`.

    `model_id` such as "amazon.titan-embed-text-v2:0" or "cohere.embed-english-v3"
    (an inference-profile prefix like "us." is allowed). Credentials and region
    come from the AWS chain (`AWS_REGION` too), the endpoint from
    `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` or `endpoint_url`. Titan embeds one text
    per call, so calls run on `threads` threads; Cohere takes 96 per call.
    botocore retries throttled calls (3 attempts), as there is no kernel
    backoff around embeddings. Vectors are L2-normalised here whatever the
    model returns. Thread-safe.
    """

    def __init__(
        self,
        model_id: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        dim: int | None = None,
        input_type: str = "search_document",
        threads: int = 4,
        timeout: float = 60.0,
        client: Any = None,
    ) -> None:
        prefix, _, rest = model_id.partition(".")
        # An inference-profile id ("us.cohere.embed-…") names the same model.
        base = rest if prefix in ("us", "eu", "apac", "global") else model_id
        if "titan-embed" in base:
            self.kind = "titan"
        elif base.startswith("cohere.embed"):
            self.kind = "cohere"
        else:
            raise ValueError(
                f"bedrock/{model_id} is not a known embedding model: use "
                "amazon.titan-embed-text-v2:0 or cohere.embed-english-v3 / "
                "cohere.embed-multilingual-v3"
            )
        default_dim = next((d for p, d in _BEDROCK_DIMS.items() if base.startswith(p)), 1024)
        titan_v2 = self.kind == "titan" and "v2" in base
        if dim is not None and titan_v2 and dim not in (256, 512, 1024):
            raise ValueError(f"Titan v2 makes 256-, 512- or 1024-d vectors, not {dim}")
        self.model_id = model_id
        self.name = f"bedrock/{model_id}"
        self.dim: int = dim or default_dim
        self._send_dim = titan_v2
        self.input_type = input_type
        self.threads = max(1, threads)
        self.region = region
        self.endpoint_url = endpoint_url
        self.timeout = timeout
        self._client = client
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BedrockEmbedder(model_id={self.model_id!r})"

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                from llmos.llm.aws import bedrock_client

                self._client = bedrock_client(
                    self.region,
                    endpoint_url=self.endpoint_url,
                    timeout=self.timeout,
                    pool=self.threads,
                    attempts=3,
                )
            return self._client

    def _translate(self, exc: Exception) -> EmbeddingError:
        from llmos.llm.aws import map_aws_error
        from llmos.llm.core import AuthenticationFailed, CoreUnavailable

        region = getattr(getattr(self._client, "meta", None), "region_name", self.region)
        mapped = map_aws_error(exc, self.name, self.model_id, region)
        if isinstance(mapped, AuthenticationFailed):
            return EmbeddingAuthError(str(mapped))
        if isinstance(mapped, CoreUnavailable):
            return EmbeddingConnectionError(str(mapped))
        return EmbeddingError(str(mapped))

    def _invoke(self, body: dict[str, Any]) -> dict[str, Any]:
        client = self._get_client()
        try:
            response = client.invoke_model(
                modelId=self.model_id,
                body=json.dumps(body),
                contentType="application/json",
                accept="application/json",
            )
            data = json.loads(response["body"].read())
        except EmbeddingError:
            raise
        except ValueError as exc:
            raise EmbeddingError(f"{self.name}: malformed response: {exc}") from None
        except Exception as exc:
            # `from None`: botocore errors carry the signed request.
            raise self._translate(exc) from None
        if not isinstance(data, dict):
            raise EmbeddingError(f"{self.name}: malformed response: not a JSON object")
        return data

    def _titan(self, text: str) -> list[float]:
        body: dict[str, Any] = {"inputText": text if text.strip() else " "}
        if self._send_dim:
            body.update(dimensions=self.dim, normalize=True)
        vector = self._invoke(body).get("embedding")
        if not isinstance(vector, list):
            raise EmbeddingError(f"{self.name}: response has no 'embedding'")
        return vector

    def _cohere(self, texts: list[str]) -> list[list[float]]:
        body = {
            "texts": [(t if t.strip() else " ")[:_COHERE_MAX_CHARS] for t in texts],
            "input_type": self.input_type,
            "truncate": "END",
        }
        vectors = self._invoke(body).get("embeddings")
        if isinstance(vectors, dict):  # asked with embedding_types: {"float": [...]}
            vectors = vectors.get("float")
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            raise EmbeddingError(f"{self.name}: expected {len(texts)} embeddings in the response")
        return vectors

    def embed(self, texts: list[str]) -> FloatArray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, not a single string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows: list[list[float]] = []
        if self.kind == "cohere":
            for start in range(0, len(texts), _COHERE_BATCH):
                rows.extend(self._cohere(texts[start : start + _COHERE_BATCH]))
        elif len(texts) == 1 or self.threads == 1:
            rows = [self._titan(t) for t in texts]
        else:
            with ThreadPoolExecutor(self.threads, thread_name_prefix="llmos-titan") as pool:
                rows = list(pool.map(self._titan, texts))
        vectors = np.asarray(rows, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise EmbeddingError(
                f"{self.name}: expected {self.dim}-d vectors, got an array of shape {vectors.shape}"
            )
        return normalise_rows(vectors)
