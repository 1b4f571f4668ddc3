"""The response cache's LRU, keys and validators on their own: no server, no Redis."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st

from services.api.cache import ENTRY_OVERHEAD, Entry, ResponseCache, cache_key, etag_of, matches


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def entry(body: bytes, version: bytes = b"1", at: float = 0.0) -> Entry:
    return Entry(body, (("Content-Type", "application/json"),), etag_of(body), version, at)


def key(name: str) -> tuple[str, tuple[str, ...]]:
    return (f"/v1/articles/{name}", ("",))


def test_an_entry_serves_only_at_its_version_and_before_its_ttl() -> None:
    clock = Clock()
    cache = ResponseCache(10_000, 5.0, clock=clock)
    cache.put(key("a"), entry(b"x" * 10))
    assert cache.get(key("a"), b"2") is None  # another version: dropped
    assert len(cache) == 0 and cache.size == 0
    cache.put(key("a"), entry(b"x" * 10, version=b"2"))
    clock.now = 4.99
    assert cache.get(key("a"), b"2") is not None
    clock.now = 5.0
    assert cache.get(key("a"), b"2") is None


def test_a_version_going_back_empties_the_cache() -> None:
    """Redis lost the counter: it may climb back to an entry's version with other data."""
    cache = ResponseCache(10_000, 60.0, clock=Clock())
    cache.put(key("a"), entry(b"x", version=b"7"))
    cache.put(key("b"), entry(b"y", version=b"7"))
    assert cache.get(key("a"), b"7") is not None
    assert cache.get(key("zzz"), b"2") is None  # a request saw the restarted counter
    assert len(cache) == 0
    assert cache.get(key("b"), b"7") is None


def test_the_least_recently_used_entries_go_first_and_size_is_exact() -> None:
    size = 100 + ENTRY_OVERHEAD
    cache = ResponseCache(size * 4, 60.0, clock=Clock())
    for name in "abcd":
        cache.put(key(name), entry(name.encode() * 100))
    assert cache.get(key("a"), b"1") is not None  # a is now the most recent
    cache.put(key("e"), entry(b"e" * 100))
    assert cache.get(key("b"), b"1") is None
    assert [cache.get(key(n), b"1") is not None for n in "acde"] == [True] * 4
    assert cache.size == 4 * size
    cache.put(key("a"), entry(b"a" * 50))  # replacing an entry frees the old one's bytes
    assert cache.size == 3 * size + 50 + ENTRY_OVERHEAD


def test_an_entry_over_a_quarter_of_the_budget_is_not_kept() -> None:
    cache = ResponseCache(4 * (1000 + ENTRY_OVERHEAD) - 1, 60.0)
    cache.put(key("big"), entry(b"x" * 1000))
    assert len(cache) == 0
    assert not ResponseCache(0, 60.0).enabled


async def test_concurrent_builds_of_one_entry_run_once() -> None:
    cache = ResponseCache(1_000_000, 60.0)
    runs = 0

    async def make() -> Entry | None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)
        return entry(b"body")

    results = await asyncio.gather(*(cache.build(key("a"), b"1", make) for _ in range(5)))
    assert runs == 1 and [own for _, own in results].count(True) == 1
    assert {e.body for e, _ in results if e} == {b"body"}


async def test_waiters_build_their_own_when_the_first_build_fails() -> None:
    cache = ResponseCache(1_000_000, 60.0)
    runs = 0

    async def failing() -> Entry | None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    results = await asyncio.gather(
        *(cache.build(key("a"), b"1", failing) for _ in range(3)), return_exceptions=True
    )
    assert runs == 3 and all(isinstance(r, RuntimeError) for r in results)


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [("a=1&b=2", "b=2&a=1", True),
     ("entity=1&entity=2&limit=5", "limit=5&entity=1&entity=2", True),
     ("entity=1&entity=2", "entity=2&entity=1", False),
     ("a=1&&b=2", "a=1&b=2", False),
     ("q=%FF", "q=%EF%BF%BD", False)],
)  # fmt: skip
def test_keys_order_parameters_by_name_and_keep_repeats(
    first: str, second: str, same: bool
) -> None:
    one = cache_key(make_mocked_request("GET", f"/v1/articles?{first}"))
    two = cache_key(make_mocked_request("GET", f"/v1/articles?{second}"))
    assert (one == two) is same


def test_if_none_match_lists_wildcards_and_weak_forms() -> None:
    tag = etag_of(b"{}")
    assert matches(tag, tag) and matches(f'"x", W/{tag}', tag) and matches(" * ", tag)
    assert not matches(None, tag) and not matches('"x"', tag) and not matches("", tag)


@given(st.binary(), st.binary())
def test_etags_are_quoted_and_differ_with_the_body(a: bytes, b: bytes) -> None:
    assert etag_of(a).startswith('"') and etag_of(a).endswith('"')
    assert (etag_of(a) == etag_of(b)) is (a == b)
