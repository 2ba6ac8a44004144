"""The cache of verified API keys: a request whose key was verified moments ago costs
no database round trip; a key revoked in this process is refused at once, one revoked
by another process (another node, the CLI) once its entry expires, never later."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event

from llmos.access.policy import KEY_CACHE_ENV, AccessManager, KeyCache, User, key_cache_seconds
from llmos.storage.db import Database, open_database
from tests.conftest import both_engines
from tests.server.conftest import LiveServer
from tests.server.test_cli import invoke

engine = both_engines()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key_lookups(db: Database) -> list[str]:
    """Every statement that reads api_keys on `db`, as it runs."""
    seen: list[str] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def _seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "api_keys" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    return seen


@pytest.fixture
def two_nodes(home: Path) -> Iterator[tuple[AccessManager, AccessManager, Clock]]:
    """Two access managers on one database, as two nodes (or a node and the CLI) have."""
    node_db, other_db = open_database(home), open_database(home)
    node, other = AccessManager(node_db), AccessManager(other_db)
    clock = Clock()
    node.verified.clock = clock
    node.verified.ttl = 5.0
    yield node, other, clock
    node_db.close()
    other_db.close()


def test_a_key_revoked_on_another_node_is_refused_once_the_entry_expires(
    two_nodes: tuple[AccessManager, AccessManager, Clock],
) -> None:
    node, other, clock = two_nodes
    user, key = other.create_user("alice")
    assert node.authenticate(key) == user
    other.revoke_keys("alice")
    clock.now += 4.9
    assert node.authenticate(key) == user  # the documented window: up to the lifetime
    clock.now += 0.2
    assert node.authenticate(key) is None  # past it: refused
    clock.now += 100
    assert node.authenticate(key) is None  # and never cached again


def test_a_key_revoked_on_this_node_is_refused_at_once(
    two_nodes: tuple[AccessManager, AccessManager, Clock],
) -> None:
    node, _, _ = two_nodes
    user, key = node.create_user("alice")
    other_key = node.create_key("alice")
    _, bobs = node.create_user("bob")
    assert node.authenticate(key) == user and node.authenticate(other_key) == user
    assert node.authenticate(bobs) is not None
    # Another access manager of this process on the same database object (the
    # server's and the operator's) shares the cache.
    AccessManager(node.db).revoke_keys("alice")
    assert node.authenticate(key) is None and node.authenticate(other_key) is None
    assert node.authenticate(bobs) is not None  # bob's entry stays


def test_a_cached_key_costs_no_database_lookup(
    two_nodes: tuple[AccessManager, AccessManager, Clock],
) -> None:
    node, _, clock = two_nodes
    user, key = node.create_user("alice")
    lookups = key_lookups(node.db)
    for _ in range(5):
        assert node.authenticate(key) == user
    assert len(lookups) == 1
    clock.now += 5.1
    assert node.authenticate(key) == user
    assert len(lookups) == 2  # expired: verified again
    for wrong in ("llmos-" + "x" * 43, "llmos-" + "y" * 43):
        assert node.authenticate(wrong) is None
        assert node.authenticate(wrong) is None
    assert len(lookups) == 6  # refusals are never cached


def test_the_cache_keeps_digests_not_keys_and_is_bounded() -> None:
    clock = Clock()
    cache = KeyCache(5.0, size=3, clock=clock)
    users = [User(f"user-{i}", f"u{i}", 0.0) for i in range(4)]
    for i, user in enumerate(users):
        cache.put(f"digest-{i}", user, cache.generation)
    assert len(cache) == 3
    assert cache.get("digest-0") is None  # the oldest went
    assert [cache.get(f"digest-{i}") for i in (1, 2, 3)] == users[1:]


def test_the_cache_keys_are_sha256_digests(home: Path) -> None:
    db = open_database(home)
    try:
        access = AccessManager(db)
        _, key = access.create_user("alice")
        access.authenticate(key)
        assert len(access.verified) == 1
        (digest,) = access.verified._entries
        assert key not in digest and len(digest) == 64
    finally:
        db.close()


def test_a_lookup_racing_a_revocation_is_not_kept() -> None:
    cache = KeyCache(5.0)
    user = User("user-1", "alice", 0.0)
    before = cache.generation  # a lookup begins, reads the key as live...
    cache.forget_user("user-1")  # ...the key is revoked and forgotten meanwhile...
    cache.put("digest", user, before)  # ...and the lookup's answer arrives late
    assert cache.get("digest") is None


def test_zero_turns_the_cache_off_and_a_bad_value_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = KeyCache(0.0)
    cache.put("digest", User("user-1", "alice", 0.0), cache.generation)
    assert cache.get("digest") is None
    monkeypatch.setenv(KEY_CACHE_ENV, "0")
    assert key_cache_seconds() == 0.0
    monkeypatch.setenv(KEY_CACHE_ENV, "soon")
    with pytest.raises(ValueError, match=KEY_CACHE_ENV):
        key_cache_seconds()
    monkeypatch.setenv(KEY_CACHE_ENV, "-1")
    with pytest.raises(ValueError, match="between 0 and 3600"):
        key_cache_seconds()


def test_a_server_refuses_a_key_the_cli_revoked_within_the_lifetime(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's `llmos user key --revoke-old` is another process's revocation."""
    import time

    monkeypatch.setenv(KEY_CACHE_ENV, "1")
    server = LiveServer(home)
    try:
        key = server.users["alice"]
        me = httpx.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200
        revoked = invoke(home, "user", "key", "alice", "--revoke-old")
        assert revoked.exit_code == 0, revoked.output
        fresh = revoked.stdout.strip()
        time.sleep(1.1)
        for _ in range(3):
            r = httpx.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 401
        r = httpx.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {fresh}"})
        assert r.status_code == 200
    finally:
        server.stop()
