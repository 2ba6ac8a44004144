"""`fetch_url`: HTTP GET of a page on a host the operator allows, as text.

Off by default: the operator lists host patterns in `LLMOS_FETCH_HOSTS`
(comma-separated, fnmatch style: `example.org,*.wikipedia.org`), read by
the kernel's process when a call runs. Every hop is checked before it is
requested: the scheme is http or https, the host matches a pattern, and
every address the name resolves to is public, unless `LLMOS_FETCH_PRIVATE=1`
allows private, loopback and link-local ones (an intranet; tests). Redirects
are followed by hand, each one checked the same way, at most
`max_redirects`. The address actually connected to is checked again before
the body is read (a name that resolved to a public address and then to a
private one gets nothing back). The body is read up to `max_bytes` and the
whole fetch is cut at `timeout` seconds. HTML becomes text with
BeautifulSoup (scripts and styles dropped); other text types come back as
they are; anything else is refused.

Left out: other methods than GET, cookies, authentication, JavaScript, and
pinning the resolved address for the request itself (the re-check above is
what stops a rebinding name).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
from fnmatch import fnmatchcase
from urllib.parse import urljoin

import httpx
from bs4 import BeautifulSoup
from pydantic import BaseModel, ConfigDict, Field

from llmos.errors import InvalidRequest
from llmos.tools.builtin.base import Builtin, Env, FetchPolicy, done, failed
from llmos.tools.sandbox import SandboxResult

ENV_HOSTS = "LLMOS_FETCH_HOSTS"
ENV_PRIVATE = "LLMOS_FETCH_PRIVATE"
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml+xml")


class FetchRefused(InvalidRequest):
    """The URL is not allowed or the fetch failed; the message is for the model."""


def policy_from_env() -> FetchPolicy:
    """The operator's policy: `LLMOS_FETCH_HOSTS` and `LLMOS_FETCH_PRIVATE`."""
    hosts = tuple(h.strip().lower() for h in os.environ.get(ENV_HOSTS, "").split(",") if h.strip())
    private = os.environ.get(ENV_PRIVATE, "") not in ("", "0")
    return FetchPolicy(hosts=hosts, allow_private=private)


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def _check(url: str, policy: FetchPolicy) -> None:
    # httpx's own parse: the host checked is the host it will connect to
    try:
        parts = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as e:
        raise FetchRefused(f"not a URL: {url!r} ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise FetchRefused(f"only http and https URLs can be fetched, not {url!r}")
    host = parts.host.lower().strip("[]")
    if not host:
        raise FetchRefused(f"no host in {url!r}")
    if not any(fnmatchcase(host, pattern) for pattern in policy.hosts):
        raise FetchRefused(
            f"the host {host!r} is not on this server's allow-list ({', '.join(policy.hosts)})"
        )
    if policy.allow_private:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as e:
        raise FetchRefused(f"cannot resolve {host!r}: {e}") from None
    for info in infos:
        if not _public(str(info[4][0])):
            raise FetchRefused(f"{host!r} is a private or local address ({info[4][0]}); refused")


def _to_text(body: bytes, content_type: str, encoding: str | None) -> str:
    if "html" in content_type:
        soup = BeautifulSoup(body, "html.parser", from_encoding=encoding)
        for tag in soup(["script", "style", "noscript", "template", "svg"]):
            tag.decompose()
        title = soup.title.get_text(strip=True) if soup.title else ""
        text = soup.get_text("\n")
        text = re.sub(r"[ \t\r\f\v]+", " ", text)
        text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
        return f"# {title}\n\n{text}" if title and not text.startswith(title) else text
    return body.decode(encoding or "utf-8", errors="replace")


async def _fetch(url: str, policy: FetchPolicy) -> tuple[str, int, str]:
    """(final URL, status, text)."""
    headers = {
        "User-Agent": "llmos-fetch_url/0.1",
        "Accept": "text/html,text/plain;q=0.9,*/*;q=0.5",
    }
    async with httpx.AsyncClient(
        follow_redirects=False, trust_env=False, headers=headers
    ) as client:
        for _hop in range(policy.max_redirects + 1):
            await _check(url, policy)
            async with client.stream("GET", url) as resp:
                stream = resp.extensions.get("network_stream")
                peer = stream.get_extra_info("server_addr") if stream is not None else None
                if not policy.allow_private and peer and not _public(str(peer[0])):
                    raise FetchRefused(f"{url!r} connected to a private address ({peer[0]})")
                if resp.is_redirect:
                    url = urljoin(url, resp.headers.get("location", ""))
                    continue
                ctype = resp.headers.get("content-type", "text/plain").lower()
                if not ctype.startswith(TEXT_TYPES):
                    raise FetchRefused(f"{url!r} is not a text page (content-type {ctype})")
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) >= policy.max_bytes:
                        del body[policy.max_bytes :]
                        break
                text = _to_text(bytes(body), ctype, resp.charset_encoding)
                return str(resp.url), resp.status_code, text
    raise FetchRefused(f"more than {policy.max_redirects} redirects")


class FetchUrlArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="http(s) URL on an allowed host")
    max_chars: int = Field(6000, ge=200, le=20000, description="text to return, at most")


async def run(args: FetchUrlArgs, env: Env) -> SandboxResult:
    policy = env.fetch
    if not policy.hosts:
        return failed(
            f"fetch_url is turned off on this server (its operator allows no hosts: {ENV_HOSTS})"
        )
    try:
        final, status, text = await asyncio.wait_for(_fetch(args.url, policy), policy.timeout)
    except FetchRefused as e:
        return failed(str(e))
    except TimeoutError:
        return failed(f"fetching {args.url} took over {policy.timeout:g}s; stopped")
    except httpx.HTTPError as e:
        return failed(f"fetching {args.url} failed: {type(e).__name__}: {e}")
    if len(text) > args.max_chars:
        text = text[: args.max_chars] + f"\n[... {len(text) - args.max_chars} more characters]"
    head = f"{final} (HTTP {status})\n\n"
    return failed(head + text) if status >= 400 else done(head + text)


TOOL = Builtin(
    "fetch_url",
    "Get a web page (HTTP GET) as plain text. Only hosts your operator allows.",
    FetchUrlArgs,
    run,
)
