"""AWS plumbing for Bedrock: the region, a `bedrock-runtime` client, botocore errors as CoreErrors.

The Bedrock core (`llm/bedrock.py`) and the Bedrock embedder both use it.
Credentials come from the standard AWS chain; nothing here reads them,
except to mask the secret ones (`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`)
in every message.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from llmos.llm.core import AuthenticationFailed, BadRequest, CoreError, CoreUnavailable
from llmos.llm.remote import CONTEXT_OVERFLOW, clip, retry_after_seconds, status_error
from llmos.redact import redact

__all__ = ["aws_region", "aws_secrets", "bedrock_client", "clean_aws_text", "map_aws_error"]

# botocore's error codes, lowercased and without "Exception" (event-stream
# exceptions arrive as "throttlingException").
_THROTTLED = ("throttling", "servicequotaexceeded", "toomanyrequests")
_DENIED = (
    "accessdenied",
    "unrecognizedclient",
    "invalidsignature",
    "signaturedoesnotmatch",
    "expiredtoken",
    "unauthorized",
    "invalidclienttokenid",
)
_DOWN = ("serviceunavailable", "internalserver", "modeltimeout", "modelerror", "modelstreamerror")


def aws_region(region: str | None = None, profile: str | None = None) -> str | None:
    """The region to use: given, else AWS_REGION, else botocore's chain (AWS_DEFAULT_REGION,
    the profile's config)."""
    if region:
        return region
    env = os.environ.get("AWS_REGION", "").strip()
    if env:
        return env
    import botocore.session

    session = botocore.session.Session(profile=profile)
    value = session.get_config_variable("region")
    return str(value) if value else None


@functools.cache
def _shared_loader() -> Any:
    import botocore.session

    return botocore.session.Session().get_component("data_loader")


def bedrock_client(
    region: str | None = None,
    *,
    endpoint_url: str | None = None,
    profile: str | None = None,
    timeout: float = 120.0,
    pool: int = 10,
    attempts: int = 1,
) -> Any:
    """A `bedrock-runtime` client, by default with retries off (the kernel backs off),
    its connection pool sized for `pool` threads.

    Slow (loads the service model): call it off the event loop.
    """
    import boto3
    import botocore.session
    from botocore.config import Config

    resolved = aws_region(region, profile)
    if resolved is None and (endpoint_url or os.environ.get("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")):
        resolved = "us-east-1"  # a custom endpoint still needs a region to sign for
    core_session = botocore.session.Session(profile=profile)
    # A fresh session per client (credentials are resolved anew), but one
    # loader: parsing the service model costs ~0.2 s per client otherwise.
    core_session.register_component("data_loader", _shared_loader())
    session = boto3.session.Session(botocore_session=core_session, region_name=resolved)
    config = Config(
        retries={"total_max_attempts": attempts, "mode": "standard"},
        connect_timeout=min(10.0, timeout),
        read_timeout=timeout,
        max_pool_connections=max(10, pool),
        user_agent_extra="llmos",
    )
    return session.client("bedrock-runtime", endpoint_url=endpoint_url, config=config)


def aws_secrets() -> list[str]:
    """The secret AWS credentials in the environment (long enough to mask safely)."""
    values = [os.environ.get(n, "") for n in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
    return [v for v in values if len(v) >= 8]


def clean_aws_text(text: str) -> str:
    """`text` without AWS secrets or anything key-like, shortened."""
    return clip(redact(text, aws_secrets(), mask="***"))


def map_aws_error(exc: BaseException, name: str, model_id: str, region: str | None) -> CoreError:
    """A botocore exception as the kernel's error kind, with a message safe to show."""
    from botocore import exceptions as bx

    where = f"region {region}" if region else "the configured region"
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return AuthenticationFailed(
            f"{name}: no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or use SSO or an instance role)"
        )
    if isinstance(exc, bx.CredentialRetrievalError | bx.TokenRetrievalError):
        return AuthenticationFailed(f"{name}: could not load AWS credentials: {type(exc).__name__}")
    if isinstance(exc, bx.NoRegionError):
        return BadRequest(f"{name}: no AWS region: set AWS_REGION (e.g. us-east-1)")
    if isinstance(exc, bx.ReadTimeoutError | bx.ConnectTimeoutError):
        return CoreUnavailable(f"{name}: Bedrock did not answer in time ({where})")
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectionClosedError):
        return CoreUnavailable(f"{name}: cannot reach the Bedrock endpoint in {where}")
    if isinstance(exc, bx.ParamValidationError):
        return BadRequest(f"{name}: invalid request: {clean_aws_text(str(exc))}")
    if not isinstance(exc, bx.ClientError):
        return CoreUnavailable(f"{name}: {type(exc).__name__}: {clean_aws_text(str(exc))}")

    error = exc.response.get("Error", {}) if isinstance(exc.response, Mapping) else {}
    code = str(error.get("Code") or "")
    message = clean_aws_text(str(error.get("Message") or exc))
    meta = exc.response.get("ResponseMetadata", {}) if isinstance(exc.response, Mapping) else {}
    status = int(meta.get("HTTPStatusCode") or 0)
    kind = code.lower().removesuffix("exception")
    text = f"{name}: {code or 'error'}" + (f" (HTTP {status})" if status else "") + f": {message}"
    if kind == "modelnotready":  # sent with a 429, but the model is loading, not throttled
        return CoreUnavailable(text)
    mapped = status_error(
        status,
        text,
        retry_after=retry_after_seconds(meta.get("HTTPHeaders") or {}),
        rate_limited=kind in _THROTTLED,
        auth=kind in _DENIED,
        overflow=kind == "validation" and bool(CONTEXT_OVERFLOW.search(message)),
        unavailable=kind in _DOWN,
    )
    if isinstance(mapped, AuthenticationFailed):
        return AuthenticationFailed(
            f"{name}: access denied to model {model_id} in {where} ({code or status}): "
            f"{message.rstrip('.')}. "
            "Check that model access is enabled for this account and region and that the "
            "credentials allow bedrock:InvokeModel (and bedrock:InvokeModelWithResponseStream)."
        )
    return mapped
