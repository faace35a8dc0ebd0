"""The per-replica TTL cache behind machine tokens and AI identities."""

from __future__ import annotations

import time

from agenthub.core.cache import TtlCache


def test_entries_expire_are_bounded_and_can_be_forgotten() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl=0.2, max_entries=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache.put("c", 3)
    assert cache.get("b") is None  # the least recently used went
    assert (cache.get("a"), cache.get("c")) == (1, 3)
    cache.forget("a")
    assert cache.get("a") is None
    time.sleep(0.25)
    assert cache.get("c") is None
    cache.put("d", 4)
    cache.clear()
    assert cache.get("d") is None


def test_a_zero_ttl_keeps_nothing() -> None:
    cache: TtlCache[int, str] = TtlCache(ttl=0)
    cache.put(1, "x")
    assert cache.get(1) is None
