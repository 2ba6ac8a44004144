"""Model strings to cores: "provider/model" is all a user has to say.

| string                    | core                                               |
|---------------------------|----------------------------------------------------|
| `local/gemma-3-270m`      | the embedded Gemma 3 270M (the default)            |
| `local:/path/model.gguf`  | any GGUF file of the user's, on llama.cpp          |
| `openai/MODEL`            | any OpenAI-compatible server: `OPENAI_BASE_URL` or |
|                           | `--base-url` picks vLLM, llama.cpp, Groq, …        |
| `ollama/MODEL`            | a local Ollama server (`OLLAMA_BASE_URL`)          |
| `anthropic/MODEL`         | Claude on Anthropic's Messages API                 |
|                           | (`ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`)        |
| `bedrock/MODEL_ID`        | Amazon Bedrock Converse, e.g. an inference profile |
|                           | `bedrock/us.anthropic.claude-sonnet-4-5-…`; AWS    |
|                           | credential chain, `AWS_REGION`, endpoint override  |

Adapters are imported only when a core of theirs is made, so listing agents
never pays for the `openai` SDK or llama.cpp.

A context window in the user's model overrides (`llm/models.py`) applies to
every form, unless the caller passes one.

Left out: per-model options beyond the window (each adapter's constructor has them).
"""

from __future__ import annotations

import os

from llmos.llm.core import Core

DEFAULT_MODEL = "local/gemma-3-270m"
FORMS = (
    "local/gemma-3-270m, local:/path/model.gguf, openai/MODEL, ollama/MODEL, "
    "anthropic/MODEL, bedrock/MODEL_ID"
)


def make_core(
    model: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    context_window: int | None = None,
) -> Core:
    """Build the core a model string names. Raises ValueError for an unknown form."""
    if context_window is None:
        from llmos.llm.models import override_window

        context_window = override_window(model)
    if model in ("local", DEFAULT_MODEL) or model.startswith("local:"):
        from llmos.llm.llamacpp import LlamaCppCore

        path = model.split(":", 1)[1] if model.startswith("local:") else None
        if path is not None and not path:
            raise ValueError("local: needs a path, e.g. local:/models/qwen.gguf")
        kwargs = {"context_window": context_window} if context_window else {}
        # The kernel's cores keep agents' prompt states across processes.
        return LlamaCppCore(
            model_path=path, name=model if path else DEFAULT_MODEL, persist_kv=True, **kwargs
        )

    provider, _, name = model.partition("/")
    if not name:
        raise ValueError(f"model {model!r} is not of a known form ({FORMS})")
    if provider == "openai":
        from llmos.llm.openai_compat import OpenAICompatCore

        return OpenAICompatCore(
            model=name,
            base_url=base_url or os.environ.get("OPENAI_BASE_URL"),
            api_key=api_key or os.environ.get("OPENAI_API_KEY"),
            context_window=context_window,
        )
    if provider == "ollama":
        from llmos.llm.openai_compat import ollama_core

        core = ollama_core(name, base_url or os.environ.get("OLLAMA_BASE_URL"))
        if context_window:
            core.context_window = context_window
        return core
    if provider == "anthropic":
        from llmos.llm.anthropic import AnthropicCore

        return AnthropicCore(
            name, base_url=base_url, api_key=api_key, context_window=context_window
        )
    if provider == "bedrock":
        from llmos.llm.bedrock import BedrockCore

        # base_url here is an endpoint override (else AWS_ENDPOINT_URL_BEDROCK_RUNTIME).
        return BedrockCore(name, endpoint_url=base_url, context_window=context_window)
    raise ValueError(f"unknown provider {provider!r} in {model!r}; known forms: {FORMS}")
