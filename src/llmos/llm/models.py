"""Model facts in one place: the context window and capabilities of every model llmos runs.

Each core needs to know how many tokens its model takes and what it can do:
native tool calls, JSON-schema constrained output, streaming, and prompt
caching. Where the provider can tell, the core asks it (`probe()`: OpenAI-
compatible `/v1/models`, Anthropic's model endpoint); otherwise `lookup()`
answers from, in order:

1. the user's overrides: a JSON file named by `LLMOS_MODELS`, else
   `$LLMOS_HOME/models.json`, mapping model strings (or prefixes ending in
   `*`) to fields of `ModelInfo`, e.g.
   `{"bedrock/us.anthropic.claude-sonnet-4*": {"context_window": 1000000}}`;
2. a small table of well-known models per provider (Bedrock ids are looked up
   without their inference-profile region prefix or ARN; OpenAI-compatible
   names by the prefix of their last path component);
3. a conservative default (8,192 tokens, no native tools off OpenAI-
   compatible servers).

A model's *profile* is part of the same facts: whether it has a chat template
(a base model has none), and its size class (`small` or `capable`). Together
they choose how the agent loop talks to it (`reply_protocol`): capable chat
models drive MemGPT's function calls; small or base models continue a plain
transcript and have their memory paged in by the kernel (`memory_mode`). A
user overrides them per model like any other field, e.g.
`{"ollama/qwen2.5:0.5b": {"size_class": "small"}}`.

Which models are configured and whether their endpoints answer is
`llm/endpoints.py`'s.

Left out: prices, output-token limits, rate limits, and asking Bedrock's
control plane (GetFoundationModel tells modalities and streaming, not the
context window, so the table stays the source for Bedrock).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "OLLAMA_DEFAULT_CONTEXT",
    "SIZE_CLASSES",
    "ModelInfo",
    "bedrock_base_id",
    "is_reasoning_model",
    "known_context_window",
    "load_overrides",
    "lookup",
]

DEFAULT_CONTEXT_WINDOW = 8192
# Ollama serves every model with its own default num_ctx (4096 in current
# releases) whatever the model supports, and silently cuts longer prompts
# instead of failing. llmos must plan its memory for that window, not the
# model's nominal one; raise it with OLLAMA_CONTEXT_LENGTH and pass the value.
OLLAMA_DEFAULT_CONTEXT = 4096
SIZE_CLASSES = ("small", "capable")
# The embedded default: Gemma 3 270M, a base model whose GGUF carries no chat template.
_SMALL_BASE_MODELS = ("local/gemma-3-270m", "local")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What llmos knows about one model string."""

    model: str
    context_window: int = DEFAULT_CONTEXT_WINDOW
    native_tools: bool = True
    json_schema: bool = False  # constrained JSON output (response_format / structured outputs)
    streaming: bool = True
    caching: bool = False  # prompt caching the provider offers (explicit or automatic)
    source: str = "default"  # "provider", "override", "table" or "default"
    chat_template: bool = True  # False: a base model, prompted as plain text
    size_class: str = "capable"  # "small": cannot follow MemGPT's function-calling prompt

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def reply_protocol(self) -> str:
        """How the agent loop asks this model for a step: "functions" (MemGPT's
        function calls) or "transcript" (the reply as text continuing a transcript)."""
        small = self.size_class == "small" or not self.chat_template
        return "transcript" if small else "functions"

    @property
    def default_memory_mode(self) -> str:
        """The memory mode of agents that set none: the kernel pages memory in
        for models that cannot manage it themselves."""
        return "auto" if self.reply_protocol == "transcript" else "self"


# (name prefix, context window, native tools, json schema, caching). First
# match wins, so a longer prefix comes before a shorter relative.
_Row = tuple[str, int, bool, bool, bool]

_ANTHROPIC: tuple[_Row, ...] = (
    ("claude-opus-4-1", 200_000, True, True, True),
    ("claude-opus-4-5", 200_000, True, True, True),
    ("claude-sonnet-4-5", 200_000, True, True, True),
    ("claude-haiku-4-5", 200_000, True, True, True),
    ("claude-", 200_000, True, False, True),
)

# Bedrock model ids without the inference-profile prefix ("us.", "eu.", …).
# Prompt caching on Bedrock is per model (Claude 3.5 Haiku, 3.7 Sonnet and
# later Claudes, Nova); a cachePoint sent to another model is rejected.
_BEDROCK: tuple[_Row, ...] = (
    ("anthropic.claude-3-5-haiku", 200_000, True, False, True),
    ("anthropic.claude-3-7-sonnet", 200_000, True, False, True),
    ("anthropic.claude-3", 200_000, True, False, False),
    ("anthropic.claude-", 200_000, True, False, True),  # the Claude 4 family and later
    ("amazon.nova-premier", 1_000_000, True, False, True),
    ("amazon.nova-pro", 300_000, True, False, True),
    ("amazon.nova-lite", 300_000, True, False, True),
    ("amazon.nova-micro", 128_000, True, False, True),
    ("amazon.titan-text", 8_192, False, False, False),
    ("meta.llama3-1", 128_000, True, False, False),
    ("meta.llama3-2", 128_000, True, False, False),
    ("meta.llama3-3", 128_000, True, False, False),
    ("meta.llama4", 128_000, True, False, False),
    ("meta.llama3", 8_192, False, False, False),
    ("mistral.mistral-large", 128_000, True, False, False),
    ("mistral.", 32_000, False, False, False),
    ("cohere.command-r", 128_000, True, False, False),
    ("deepseek.", 128_000, False, False, False),
    ("openai.gpt-oss", 128_000, True, False, False),
    ("qwen.", 128_000, True, False, False),
)

# Total context (prompt + completion) of well-known models on OpenAI-compatible
# servers, by name prefix of the model's last path component, lowercased.
# Kept small on purpose: servers we talk to usually report their window, and
# 8192 is a safe floor.
_KNOWN_WINDOWS: tuple[tuple[str, int], ...] = (
    ("gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-5", 400_000),
    ("gpt-oss", 131_072),
    ("gpt-3.5-turbo", 16_385),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
    ("llama-3.1", 131_072),
    ("llama-3.2", 131_072),
    ("llama-3.3", 131_072),
    ("llama3.1", 131_072),
    ("llama3.2", 131_072),
    ("llama3.3", 131_072),
    ("llama-3", 8192),
    ("llama3", 8192),
    ("qwen2.5", 32_768),
    ("mistral", 32_768),
    ("gemma-3", 32_768),
    ("gemma3", 32_768),
)

# Reasoning models reject `max_tokens` and any temperature but the default.
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)(?!.*-chat)")


def known_context_window(model: str) -> int:
    """Context window of a well-known `model` from the table, else 8192."""
    base = model.rsplit("/", 1)[-1].lower()
    for prefix, window in _KNOWN_WINDOWS:
        if base.startswith(prefix):
            return window
    return DEFAULT_CONTEXT_WINDOW


def is_reasoning_model(model: str) -> bool:
    """Whether an OpenAI `model` is a reasoning one (o1, o3, gpt-5, … but not *-chat)."""
    return _REASONING_MODEL.match(model.rsplit("/", 1)[-1].lower()) is not None


_PROFILE_PREFIX = re.compile(r"^(?:us|eu|apac|global|us-gov|jp|au|ca)\.", re.IGNORECASE)


def bedrock_base_id(model_id: str) -> str:
    """A Bedrock model id without ARN or inference-profile region prefix.

    "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-x" and
    "us.anthropic.claude-x" both become "anthropic.claude-x".
    """
    base = model_id.rsplit("/", 1)[-1] if model_id.startswith("arn:") else model_id
    return _PROFILE_PREFIX.sub("", base).lower()


def _overrides_path() -> Path | None:
    named = os.environ.get("LLMOS_MODELS", "").strip()
    if named:
        return Path(named).expanduser()
    home = os.environ.get("LLMOS_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".llmos"
    return base / "models.json"


_cache: tuple[Path | None, float, dict[str, dict[str, Any]]] | None = None


def load_overrides() -> dict[str, dict[str, Any]]:
    """The user's model overrides; {} when there are none.

    A malformed file is an error the user must see (ValueError naming the
    file), not something to ignore silently: it would change windows.
    """
    global _cache
    path = _overrides_path()
    if path is None or not path.is_file():
        return {}
    mtime = path.stat().st_mtime
    if _cache is not None and _cache[0] == path and _cache[1] == mtime:
        return _cache[2]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read model overrides from {path}: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} must hold a JSON object of model string -> settings")
    known = {f.name for f in fields(ModelInfo)} - {"model", "source"}
    out: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if not isinstance(value, Mapping):
            raise ValueError(f"{path}: settings of {key!r} must be a JSON object")
        unknown = set(value) - known
        if unknown:
            raise ValueError(
                f"{path}: unknown settings {sorted(unknown)} for {key!r}; known: {sorted(known)}"
            )
        size = value.get("size_class")
        if size is not None and size not in SIZE_CLASSES:
            raise ValueError(f"{path}: size_class of {key!r} must be one of {list(SIZE_CLASSES)}")
        if "chat_template" in value and not isinstance(value["chat_template"], bool):
            raise ValueError(f"{path}: chat_template of {key!r} must be true or false")
        window = value.get("context_window")
        if window is not None and (not isinstance(window, int) or window < 1024):
            raise ValueError(f"{path}: context_window of {key!r} must be an integer >= 1024")
        out[str(key)] = dict(value)
    _cache = (path, mtime, out)
    return out


def _override_for(model: str) -> dict[str, Any] | None:
    overrides = load_overrides()
    if model in overrides:
        return overrides[model]
    # The longest matching "prefix*" wins.
    best: tuple[int, dict[str, Any]] | None = None
    for key, value in overrides.items():
        longer = best is None or len(key) > best[0]
        if key.endswith("*") and model.startswith(key[:-1]) and longer:
            best = (len(key), value)
    return best[1] if best else None


def override_window(model: str) -> int | None:
    """The context window the user set for `model` in the overrides file, if any."""
    override = _override_for(model)
    window = override.get("context_window") if override else None
    return window if isinstance(window, int) else None


def _from_table(rows: Sequence[_Row], name: str, model: str) -> ModelInfo | None:
    for prefix, window, tools, schema, caching in rows:
        if name.startswith(prefix):
            return ModelInfo(model, window, tools, schema, True, caching, "table")
    return None


def table_info(model: str) -> ModelInfo:
    """What the built-in table (or the default) says of `model`, without overrides."""
    provider, _, name = model.partition("/")
    if provider == "anthropic":
        found = _from_table(_ANTHROPIC, name.lower(), model)
        return found or ModelInfo(model, 200_000, True, False, True, True, "default")
    if provider == "bedrock":
        found = _from_table(_BEDROCK, bedrock_base_id(name), model)
        # An unknown Bedrock model: Converse speaks tools for most current ones,
        # but a cachePoint would be rejected where caching is not offered.
        return found or ModelInfo(model, DEFAULT_CONTEXT_WINDOW, True, False, True, False)
    if provider == "ollama":
        return ModelInfo(model, OLLAMA_DEFAULT_CONTEXT, True, True, True, False, "table")
    if provider == "openai":
        window = known_context_window(name)
        # OpenAI caches prompts of 1,024+ tokens automatically; other servers
        # (vLLM, llama.cpp) reuse prefixes too, unreported.
        source = "table" if window != DEFAULT_CONTEXT_WINDOW else "default"
        return ModelInfo(model, window, True, True, True, True, source)
    if model in _SMALL_BASE_MODELS:
        return ModelInfo(model, 32_768, False, True, True, True, "table", False, "small")
    if provider.startswith("local"):
        return ModelInfo(model, 32_768, False, True, True, True, "table")
    return ModelInfo(model)


def lookup(model: str) -> ModelInfo:
    """Context window and capabilities of a model string: override, table, default."""
    info = table_info(model)
    override = _override_for(model)
    if override:
        info = replace(info, **override, source="override")
    return info


def with_provider(info: ModelInfo, **learned: Any) -> ModelInfo:
    """`info` updated by what the provider reported, unless the user overrode it."""
    if info.source == "override":
        return info
    values = {k: v for k, v in learned.items() if v is not None}
    return replace(info, **values, source="provider") if values else info
