"""The access manager: users, their API keys, per-user rate limits, and redaction.

A *user* is a name; the kernel's `owner` of every agent a user creates is that
name, so the kernel's own owner checks are what keeps users apart (the CLI
acts as the user "local"). A user authenticates with an API key: `llmos-`
followed by 43 URL-safe characters (256 random bits). Only the key's sha256 is
stored — a key that high in entropy needs no salt or slow hash — and the
stored digest is compared in constant time. A key is shown once, when it is
made, and never again.

`RateLimiter` is a token bucket per user: `rate` requests per second on
average, bursts of up to `burst`. `redact()` (from `llmos/redact.py`, kept
importable here) blanks anything that looks like a secret (llmos keys,
provider keys, bearer tokens) in text bound for a response or a log.

A verified key is remembered for a few seconds (`KeyCache`, shared by the
access managers of one `Database` in a process), so a request does not cost a
database round trip for its key. Revocation through an access manager of this
process takes effect at once (it forgets the user's keys); a key revoked by
another process — another node, or `llmos user key --revoke-old` — is still
accepted by a node that verified it until its entry expires:
`LLMOS_KEY_CACHE_SECONDS` (default 5, 0 turns the cache off).

Per-agent grants, approvals of irreversible tools and the audit log live
next door in `grants.py`, `approvals.py` and `audit.py`. Left out:
roles/admins, key expiry, and sharing agents between users. Rate-limit
state lives in the server process (not shared between nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from llmos.environ import seconds_from_env
from llmos.errors import Busy, Conflict, NotFound
from llmos.expiring import ExpiringCache
from llmos.redact import redact as redact  # the server imports it from here
from llmos.storage.models import api_keys, users

if TYPE_CHECKING:
    from llmos.storage.db import Database

log = logging.getLogger("llmos.access")
KEY_PREFIX = "llmos-"
#: A user name is the owner of their agents: short, printable, no spaces.
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
#: names no user may have, in any case: "local" is the owner the CLI acts as, so a
#: user of that name would own the CLI's agents, memory and files
RESERVED_NAMES = frozenset({"local"})
# Longer than any key we issue: reject before hashing attacker-sized input.
_MAX_KEY_CHARS = 128
KEY_CACHE_ENV = "LLMOS_KEY_CACHE_SECONDS"
DEFAULT_KEY_CACHE_SECONDS = 5.0


class UserExists(Conflict):
    """A user of that name already exists."""


class UserNotFound(NotFound):
    """No user of that name."""


@dataclass(slots=True, frozen=True)
class User:
    id: str
    name: str
    created_at: float

    @property
    def owner(self) -> str:
        """The kernel's `owner` of this user's agents."""
        return self.name


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


# Built once: every request authenticates, and building a select costs more
# than running it.
_BY_DIGEST = (
    select(api_keys.c.key_hash, users.c.id, users.c.name, users.c.created_at)
    .select_from(api_keys.join(users, users.c.id == api_keys.c.user_id))
    .where(api_keys.c.key_hash == bindparam("digest"), api_keys.c.revoked_at.is_(None))
)


def key_cache_seconds() -> float:
    """$LLMOS_KEY_CACHE_SECONDS (unset: 5; 0: no cache). Raises ValueError naming it."""
    return seconds_from_env(KEY_CACHE_ENV, DEFAULT_KEY_CACHE_SECONDS, 0, 3600)


class KeyCache(ExpiringCache[str, User]):
    """Users of keys verified in the last `ttl` seconds, by the key's sha256 (never
    the key). At most `size` entries: the oldest go first. Refusals are not kept:
    random keys would then push out the good ones. Thread-safe (a test or the CLI
    may revoke from another thread than the server's)."""

    def forget_user(self, user_id: str) -> None:
        self.forget(lambda _digest, user: user.id == user_id)


# One cache per database object, so every access manager of a process on it
# (the server's, a test's) sees the others' revocations at once.
_CACHES: weakref.WeakKeyDictionary[Database, KeyCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


class AccessManager:
    """Users and API keys on the kernel's database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        with _CACHES_LOCK:
            cache = _CACHES.get(db)
            if cache is None:
                cache = _CACHES[db] = KeyCache(key_cache_seconds())
        self.verified = cache

    def create_user(self, name: str) -> tuple[User, str]:
        """Create a user and their first key; returns (user, key). Raises UserExists, ValueError."""
        name = name.strip()
        if not USER_NAME.match(name):
            raise ValueError(
                "a user name is 1 to 64 letters, digits or _ . @ -, starting with a letter or digit"
            )
        if name.lower() in RESERVED_NAMES:
            raise ValueError(f"the user name {name!r} is reserved (the CLI's own owner)")
        user = User(f"user-{uuid.uuid4().hex[:16]}", name, time.time())
        key = new_key()
        try:
            with self.db.begin() as conn:
                conn.execute(
                    users.insert().values(id=user.id, name=user.name, created_at=user.created_at)
                )
                self._insert_key(conn, user.id, key)
        except IntegrityError:
            raise UserExists(f"a user named {name!r} already exists") from None
        return user, key

    def create_key(self, name: str) -> str:
        """Issue another key for an existing user (e.g. one who lost theirs)."""
        with self.db.begin() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
            if row is None:
                raise UserNotFound(f"no user named {name!r}")
            key = new_key()
            self._insert_key(conn, row.id, key)
        return key

    def revoke_keys(self, name: str) -> int:
        """Revoke every key of a user; returns how many were live."""
        with self.db.begin() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
            if row is None:
                raise UserNotFound(f"no user named {name!r}")
            revoked = conn.execute(
                update(api_keys)
                .where(api_keys.c.user_id == row.id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            ).rowcount
        self.verified.forget_user(row.id)  # after the commit: no lookup re-adds them
        return revoked

    @staticmethod
    def _insert_key(conn: Any, user_id: str, key: str) -> None:
        conn.execute(
            api_keys.insert().values(
                id=f"key-{uuid.uuid4().hex[:16]}",
                user_id=user_id,
                key_hash=hash_key(key),
                prefix=key[: len(KEY_PREFIX) + 4],
                created_at=time.time(),
            )
        )

    def list_users(self) -> list[dict[str, Any]]:
        live = (
            select(api_keys.c.user_id, func.count().label("n_keys"))
            .where(api_keys.c.revoked_at.is_(None))
            .group_by(api_keys.c.user_id)
            .subquery()
        )
        with self.db.connect() as conn:
            rows = conn.execute(
                select(users.c.id, users.c.name, users.c.created_at, live.c.n_keys)
                .select_from(users.outerjoin(live, live.c.user_id == users.c.id))
                .order_by(users.c.created_at)
            ).fetchall()
        return [
            {"id": r.id, "name": r.name, "created_at": r.created_at, "keys": r.n_keys or 0}
            for r in rows
        ]

    def authenticate(self, key: str | None) -> User | None:
        """The user a key belongs to, or None for a missing, unknown or revoked key."""
        if not key or len(key) > _MAX_KEY_CHARS or not key.startswith(KEY_PREFIX):
            return None
        digest = hash_key(key)
        user = self.verified.get(digest)
        if user is not None:
            return user
        generation = self.verified.generation
        with self.db.connect() as conn:
            row = conn.execute(_BY_DIGEST, {"digest": digest}).first()
        # The lookup is by digest; the constant-time comparison keeps the final
        # decision free of early-exit timing whatever the database does.
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        if row.name.lower() in RESERVED_NAMES:  # made before the name was reserved
            log.warning("refused a key of user %r: the name is reserved", row.name)
            return None
        user = User(row.id, row.name, row.created_at)
        self.verified.put(digest, user, generation)
        return user


class WorkQueueFull(Busy):
    """The user already has as much expensive work running and waiting as allowed."""

    code = "too_much_work"


class WorkLimiter:
    """Per user, at most `running` expensive requests at once and `waiting` more
    queued behind them (tool registration runs code in the sandbox, an import
    or a new embedder embeds every passage); past that, `WorkQueueFull`.

    One user's flood then holds `running` workers, not all of them, and other
    users' requests go on."""

    def __init__(self, running: int = 2, waiting: int = 8) -> None:
        self.running = max(1, running)
        self.waiting = max(0, waiting)
        self._in: dict[str, int] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def slot(self, user: str) -> AsyncIterator[None]:
        """Hold one of `user`'s running places for the block (waiting for one first)."""
        if self._in.get(user, 0) >= self.running + self.waiting:
            raise WorkQueueFull(
                f"too much expensive work in progress ({self.running} running, "
                f"{self.waiting} waiting); retry when some of it has finished"
            )
        self._in[user] = self._in.get(user, 0) + 1
        sem = self._slots.setdefault(user, asyncio.Semaphore(self.running))
        try:
            async with sem:
                yield
        finally:
            self._in[user] -= 1
            if not self._in[user]:
                del self._in[user], self._slots[user]


class RateLimiter:
    """A token bucket per user: `rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float = 50.0, burst: float = 200.0) -> None:
        self.rate = float(rate)
        self.burst = max(1.0, float(burst))
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, at)

    def take(self, user: str, now: float | None = None) -> float:
        """Spend one token. Returns 0.0 if allowed, else seconds until one is available."""
        if self.rate <= 0:
            return 0.0  # rate 0: limiting is off
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(user, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[user] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[user] = (tokens - 1.0, now)
        return 0.0
