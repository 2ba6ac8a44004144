"""The expiring cache both node-local caches use (API keys, attached tools)."""

from __future__ import annotations

from llmos.expiring import ExpiringCache


def test_entries_expire_after_their_lifetime() -> None:
    now = [100.0]
    cache: ExpiringCache[str, int] = ExpiringCache(5.0, clock=lambda: now[0])
    cache.put("a", 1, cache.generation)
    now[0] += 4.99
    assert cache.get("a") == 1
    now[0] += 0.02
    assert cache.get("a") is None
    assert len(cache) == 0  # an expired entry is dropped when it is looked up


def test_forget_drops_what_it_picks_and_refuses_older_lookups() -> None:
    cache: ExpiringCache[str, int] = ExpiringCache(5.0)
    for key, value in (("a", 1), ("b", 2), ("c", 3)):
        cache.put(key, value, cache.generation)
    before = cache.generation  # a lookup starts reading the old state...
    cache.forget(lambda _key, value: value % 2 == 1)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, 2, None)
    cache.put("a", 1, before)  # ...and may not put it back
    assert cache.get("a") is None
    cache.forget()
    assert cache.get("b") is None
    cache.put("a", 10, cache.generation)
    assert cache.get("a") == 10


def test_the_oldest_entries_go_past_the_size_and_ttl_zero_keeps_nothing() -> None:
    cache: ExpiringCache[int, int] = ExpiringCache(5.0, size=2)
    for i in range(3):
        cache.put(i, i, cache.generation)
    assert [cache.get(i) for i in range(3)] == [None, 1, 2]
    off: ExpiringCache[int, int] = ExpiringCache(0.0)
    off.put(1, 1, off.generation)
    assert off.get(1) is None and len(off) == 0
