"""Grants: what an agent may do beyond its own memory and its own files.

A grant is (agent, kind, target, mode):

| kind    | target                     | mode      | allows                          |
|---------|----------------------------|-----------|---------------------------------|
| `agent` | another agent's name, `*`  | —         | `send_message_to_agent` to it   |
| `files` | a shared area's name, `*`  | `r`, `rw` | reading / writing that area     |
| `net`   | a host, `host:port`        | —         | its tools reaching that host    |

Tools are granted by attaching them (`agent_tools`, see `tools/registry.py`):
an agent may call the built-ins and its attached tools, nothing else. An
agent's own file area needs no grant. Everything else is denied by default.

`net` grants are the one place a tool's network is decided: a tool runs with
no network at all unless the calling agent holds some, and then reaches only
those hosts, through the sandbox's proxy (`tools/sandbox/netproxy.py`). A
target is a host name, an IPv4 address or a bracketed IPv6 address, with an
optional port (`api.example.com`, `api.example.com:443`, `[::1]:8080`).
Loopback and private addresses are reached only where the operator allows
them (`LLMOS_SANDBOX_PRIVATE_NET=1`) and only when the grant names the
address itself (or `localhost`), never through a name that resolves there;
llmos's own listening ports never. `*` is not a `net` target.

Left out: grants to users (sharing an agent), expiry, and deny rules.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from llmos.storage.models import grants

if TYPE_CHECKING:
    from llmos.storage.db import Database

KINDS = ("agent", "files", "net")
MODES = ("r", "rw")

_LABEL = r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_net_target(target: str) -> tuple[str, int | None]:
    """(host, port or None) of a `net` grant's target; ValueError if it is not one."""
    text = target.strip().lower()
    port: int | None = None
    if text.startswith("["):  # [IPv6] or [IPv6]:port
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"not a host[:port]: {target!r}")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        if not p.isdigit():
            raise ValueError(f"not a host[:port]: {target!r}")
        port = int(p)
    else:
        host = text
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"a port is 1 to 65535: {target!r}")
    if not (is_ip(host) or _HOST.match(host)):
        raise ValueError(f"a net grant names a host or address, optionally :port: {target!r}")
    return host, port


def _normal(kind: str, target: str) -> str:
    """The stored form of a target (a `net` target lower-cased, IPv6 bracketed)."""
    if kind != "net":
        return target
    host, port = parse_net_target(target)
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


class Grants:
    def __init__(self, db: Database) -> None:
        self.db = db

    def grant(self, agent_id: str, kind: str, target: str, mode: str = "rw") -> None:
        if kind not in KINDS:
            raise ValueError(f"grant kind must be one of {', '.join(KINDS)}")
        if mode not in MODES:
            raise ValueError("grant mode must be 'r' or 'rw'")
        if not target:
            raise ValueError("a grant needs a target (a name, or '*')")
        target = _normal(kind, target)
        with self.db.begin() as conn:
            conn.execute(
                delete(grants).where(
                    grants.c.agent_id == agent_id, grants.c.kind == kind, grants.c.target == target
                )
            )
            conn.execute(
                grants.insert().values(
                    agent_id=agent_id, kind=kind, target=target, mode=mode, created_at=time.time()
                )
            )

    def revoke(self, agent_id: str, kind: str, target: str) -> bool:
        with contextlib.suppress(ValueError):
            target = _normal(kind, target)
        with self.db.begin() as conn:
            return bool(
                conn.execute(
                    delete(grants).where(
                        grants.c.agent_id == agent_id,
                        grants.c.kind == kind,
                        grants.c.target == target,
                    )
                ).rowcount
            )

    def list(self, agent_id: str) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            rows = conn.execute(
                select(grants).where(grants.c.agent_id == agent_id).order_by(grants.c.kind)
            ).fetchall()
        return [{"kind": r.kind, "target": r.target, "mode": r.mode} for r in rows]

    def hosts(self, agent_id: str) -> list[str]:
        """The agent's `net` grants: the hosts its tools may reach."""
        with self.db.connect() as conn:
            rows = conn.execute(
                select(grants.c.target).where(grants.c.agent_id == agent_id, grants.c.kind == "net")
            ).fetchall()
        return [r.target for r in rows]

    def allows(self, agent_id: str, kind: str, target: str, mode: str = "r") -> bool:
        """Whether the agent holds a grant of `kind` on `target` (or `*`) covering `mode`."""
        with self.db.connect() as conn:
            rows = conn.execute(
                select(grants.c.mode).where(
                    grants.c.agent_id == agent_id,
                    grants.c.kind == kind,
                    grants.c.target.in_([target, "*"]),
                )
            ).fetchall()
        return any(mode == "r" or r.mode == "rw" for r in rows)
