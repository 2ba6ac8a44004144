"""Embedder specs: the string in the config or CLI that names an embedder, and `make_embedder`."""

from __future__ import annotations

import os
import threading

from llmos.memory.embedders.base import Embedder
from llmos.memory.embedders.bedrock import BedrockEmbedder
from llmos.memory.embedders.bert import MINILM_NAME, MiniLMEmbedder
from llmos.memory.embedders.openai import OpenAIEmbedder

DEFAULT_EMBEDDER = MINILM_NAME

_LOCAL_SPECS = {"local/all-minilm-l6-v2", "local", "minilm"}
_SPEC_FORMS = (
    "'local/all-MiniLM-L6-v2' (the default; also 'local' or 'minilm'), or "
    "'openai/MODEL' such as 'openai/text-embedding-3-small' (any OpenAI-compatible "
    "server: LLMOS_EMBEDDING_BASE_URL / LLMOS_EMBEDDING_API_KEY, else "
    "OPENAI_BASE_URL / OPENAI_API_KEY), or 'bedrock/MODEL_ID' with "
    "amazon.titan-embed-text-v2:0 or cohere.embed-english-v3 / cohere.embed-multilingual-v3 "
    "(AWS credentials and AWS_REGION)"
)
_shared_minilm: MiniLMEmbedder | None = None
_shared_lock = threading.Lock()


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def make_embedder(spec: str = DEFAULT_EMBEDDER) -> Embedder:
    """The embedder a spec string names.

    "local/all-MiniLM-L6-v2" (also "local", "minilm"; case does not matter)
    gives the numpy MiniLM. All local specs return one shared
    `MiniLMEmbedder`, so its ~90 MB of weights load once per process however
    many parts of llmos ask.

    "openai/MODEL" gives an `OpenAIEmbedder` for MODEL, with the base URL
    from LLMOS_EMBEDDING_BASE_URL, else OPENAI_BASE_URL (else api.openai.com),
    and the key from LLMOS_EMBEDDING_API_KEY, else OPENAI_API_KEY.

    "bedrock/MODEL_ID" gives a `BedrockEmbedder` for MODEL_ID, with the AWS
    credential chain and region.

    Anything else is a ValueError naming these forms.
    """
    global _shared_minilm
    cleaned = (spec or "").strip()
    if cleaned.lower() in _LOCAL_SPECS:
        with _shared_lock:
            if _shared_minilm is None:
                _shared_minilm = MiniLMEmbedder()
            return _shared_minilm
    provider, slash, model = cleaned.partition("/")
    if provider.lower() == "openai" and slash:
        if not model.strip():
            raise ValueError(f"embedder spec {spec!r} names no model; use {_SPEC_FORMS}")
        return OpenAIEmbedder(
            model.strip(),
            base_url=_env("LLMOS_EMBEDDING_BASE_URL", "OPENAI_BASE_URL"),
            api_key=_env("LLMOS_EMBEDDING_API_KEY", "OPENAI_API_KEY"),
        )
    if provider.lower() == "bedrock" and slash:
        if not model.strip():
            raise ValueError(f"embedder spec {spec!r} names no model; use {_SPEC_FORMS}")
        return BedrockEmbedder(model.strip())
    raise ValueError(f"unknown embedder {spec!r}: use {_SPEC_FORMS}")
