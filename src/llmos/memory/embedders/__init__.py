"""Text embedders for llmos's memory: one protocol, a local default, two HTTP ones.

- `base.py`: the `Embedder` protocol (`embed(texts)` gives unit-length float32
  rows; `name` tags stored vectors) and the `EmbeddingError` family.
- `bert.py`: `MiniLMEmbedder`, the default ("local/all-MiniLM-L6-v2"), a
  BERT encoder in numpy (`gelu.py` holds its exact GELU).
- `openai.py`: `OpenAIEmbedder` ("openai/MODEL"), any OpenAI-compatible
  `/v1/embeddings` endpoint.
- `bedrock.py`: `BedrockEmbedder` ("bedrock/MODEL_ID"), Titan and Cohere on
  Amazon Bedrock.
- `registry.py`: `make_embedder(spec)`, which turns a spec string from the
  config or CLI into one of these.

Every embedder is thread-safe and synchronous: callers that must not block
run `embed` in a thread. Vectors are not cached here; the memory store keeps
them.
"""

from __future__ import annotations

from llmos.memory.embedders.base import (
    Embedder,
    EmbeddingAuthError,
    EmbeddingConnectionError,
    EmbeddingError,
    EmbeddingModelNotFoundError,
)
from llmos.memory.embedders.bedrock import BedrockEmbedder
from llmos.memory.embedders.bert import MINILM_NAME, MiniLMEmbedder
from llmos.memory.embedders.openai import OpenAIEmbedder
from llmos.memory.embedders.registry import DEFAULT_EMBEDDER, make_embedder

__all__ = [
    "DEFAULT_EMBEDDER",
    "MINILM_NAME",
    "BedrockEmbedder",
    "Embedder",
    "EmbeddingAuthError",
    "EmbeddingConnectionError",
    "EmbeddingError",
    "EmbeddingModelNotFoundError",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "make_embedder",
]
