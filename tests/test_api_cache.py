"""The API's response cache against the real app, real Redis and real SQL: hits, invalidation
by the data version (API writes, workers, the CLI), expiry, bypass when Redis fails, the gate
in front of it, and ETag / If-None-Match."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from services import dataversion
from services.api.app import create_app
from services.api.cache import CACHE, ENTRY_OVERHEAD, ResponseCache
from services.config import Settings
from services.db.models import Article
from services.metrics import KEY as METRICS_KEY
from services.metrics import Recorder
from services.queue import enqueue_extract, extract_queue, redis_client
from tests.test_api import T0, add_article, add_entity, add_feed

Client = TestClient[web.Request, web.Application]
PROBLEM = "application/problem+json"


@asynccontextmanager
async def serving(settings: Settings, headers: dict[str, str]) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(settings)), headers=headers) as client:
        yield client


def cache_of(client: Client) -> ResponseCache:
    assert client.app is not None
    return client.app[CACHE]


def retitle(db: sessionmaker[Session], article_id: int, title: str) -> None:
    """Change a row behind the service's back: no version bump."""
    with db.begin() as s:
        s.execute(update(Article).where(Article.id == article_id).values(title=title))


async def titles(client: Client, path: str = "/v1/articles") -> list[str]:
    resp = await client.get(path)
    assert resp.status == 200
    return [a["title"] for a in (await resp.json())["data"]]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_repeated_read_is_served_from_the_cache_until_the_version_moves(
    client: Client, db: sessionmaker[Session], redis_conn: redis.Redis
) -> None:
    article = add_article(db, "first title", T0)
    cache = cache_of(client)
    cache.clock = Clock()

    assert await titles(client) == ["first title"]
    retitle(db, article, "second title")
    assert await titles(client) == ["first title"]  # from the cache: SQL was not asked
    assert (cache.counts["miss"], cache.counts["hit"]) == (1, 1)

    dataversion.bump(redis_conn)
    assert await titles(client) == ["second title"]
    assert cache.counts["miss"] == 2


async def test_a_worker_storing_an_article_shows_in_the_next_read(
    client: Client, db: sessionmaker[Session], settings: Settings, burst: Callable[[], int]
) -> None:
    feed = add_feed(db, "https://f.test/rss")
    add_article(db, "already there", T0)
    cache_of(client).clock = Clock()  # entries never expire here: only the version can move
    assert await titles(client) == ["already there"]
    assert await titles(client) == ["already there"]
    text = "Harbour reopens after storm\n\nThe harbour of Dover reopened on Monday after a storm."
    payload = {
        "v": 1, "feed_id": feed, "kind": "file", "item_key": "harbour.txt",
        "content_hash": hashlib.sha256(text.encode()).hexdigest(), "url": None, "title": None,
        "summary": None, "content": text, "content_type": "text/plain", "published": None,
        "author": None,
    }  # fmt: skip
    assert enqueue_extract(extract_queue(settings, redis_client(settings)), payload, timeout=60)
    assert burst() == 1

    found = await titles(client)
    assert "Harbour reopens after storm" in found and "already there" in found
    assert (cache_of(client).counts["hit"], cache_of(client).counts["miss"]) == (1, 2)


async def test_an_entry_expires_after_the_configured_seconds(
    client: Client, db: sessionmaker[Session]
) -> None:
    article = add_article(db, "old", T0)
    cache = cache_of(client)
    clock = Clock()
    cache.clock = clock
    assert await titles(client) == ["old"]
    retitle(db, article, "new")
    clock.now += cache.ttl - 0.01
    assert await titles(client) == ["old"]
    clock.now += 0.02
    assert await titles(client) == ["new"]


async def test_redis_down_bypasses_the_cache(
    settings: Settings, db: sessionmaker[Session], auth_headers: dict[str, str]
) -> None:
    article = add_article(db, "before", T0)
    down = settings.with_overrides(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    async with serving(down, auth_headers) as client:
        assert await titles(client) == ["before"]
        retitle(db, article, "after")
        assert await titles(client) == ["after"]
        cache = cache_of(client)
        assert cache.counts["bypass"] == 2 and len(cache) == 0
        # Without the cache the validators still work.
        resp = await client.get("/v1/articles")
        again = await client.get("/v1/articles", headers={"If-None-Match": resp.headers["ETag"]})
        assert again.status == 304


async def test_an_unreadable_version_bypasses_the_cache(
    client: Client, db: sessionmaker[Session], redis_conn: redis.Redis
) -> None:
    article = add_article(db, "before", T0)
    redis_conn.hset(dataversion.KEY, "not", "a counter")  # GET fails: WRONGTYPE
    assert await titles(client) == ["before"]
    retitle(db, article, "after")
    assert await titles(client) == ["after"]
    assert cache_of(client).counts["bypass"] == 2


async def test_query_parameters_share_an_entry_in_any_order_but_repeats_keep_theirs(
    client: Client, db: sessionmaker[Session]
) -> None:
    ada, bob = add_entity(db, "Ada Lovelace"), add_entity(db, "Bob Marley")
    add_article(db, "both", T0, entities={ada: 1, bob: 1})
    cache = cache_of(client)

    first = await client.get(f"/v1/articles?limit=5&entity={ada}&entity={bob}")
    second = await client.get(f"/v1/articles?entity={ada}&limit=5&entity={bob}")
    assert (cache.counts["miss"], cache.counts["hit"]) == (1, 1)
    assert await first.read() == await second.read()
    await client.get(f"/v1/articles?entity={bob}&limit=5&entity={ada}")
    assert cache.counts["miss"] == 2  # another order of the repeated parameter
    bad = await client.get("/v1/articles?limit=5&%FF=1")
    assert bad.status == 400 and cache.counts["miss"] == 3


async def test_the_gate_applies_to_cached_entries(
    settings: Settings, db: sessionmaker[Session], auth_headers: dict[str, str]
) -> None:
    add_article(db, "cached", T0)
    tight = settings.with_overrides(rate_limit=3, rate_window=60.0)
    async with serving(tight, {}) as client:
        assert (await client.get("/v1/articles", headers=auth_headers)).status == 200
        assert (await client.get("/v1/articles", headers=auth_headers)).status == 200
        assert cache_of(client).counts["hit"] == 1

        anonymous = await client.get("/v1/articles")
        assert anonymous.status == 401 and anonymous.content_type == PROBLEM
        wrong = await client.get("/v1/articles", headers={"Authorization": "Bearer nd_nope"})
        assert wrong.status == 401

        assert (await client.get("/v1/articles", headers=auth_headers)).status == 200
        limited = await client.get("/v1/articles", headers=auth_headers)
        assert limited.status == 429 and limited.content_type == PROBLEM
        assert int(limited.headers["Retry-After"]) > 0
        assert cache_of(client).counts["hit"] == 2


async def test_if_none_match_answers_304_on_a_hit_and_on_a_miss(
    client: Client, db: sessionmaker[Session], redis_conn: redis.Redis
) -> None:
    article = add_article(db, "same", T0)
    cache = cache_of(client)
    resp = await client.get(f"/v1/articles/{article}")
    etag = resp.headers["ETag"]
    assert etag.startswith('"') and resp.headers["Cache-Control"] == "no-cache"

    hit = await client.get(f"/v1/articles/{article}", headers={"If-None-Match": etag})
    assert hit.status == 304 and await hit.read() == b""
    assert hit.headers["ETag"] == etag and cache.counts["hit"] == 1

    dataversion.bump(redis_conn)  # the next read is a miss that builds the same body
    listed = f'W/"other", {etag}'
    miss = await client.get(f"/v1/articles/{article}", headers={"If-None-Match": listed})
    assert miss.status == 304 and cache.counts["miss"] == 2
    assert cache.counts["not_modified"] == 2

    retitle(db, article, "changed")
    dataversion.bump(redis_conn)
    changed = await client.get(f"/v1/articles/{article}", headers={"If-None-Match": etag})
    assert changed.status == 200 and (await changed.json())["title"] == "changed"
    assert changed.headers["ETag"] != etag
    # Errors carry no validator and are not cached.
    missing = await client.get("/v1/articles/999999")
    assert missing.status == 404 and "ETag" not in missing.headers


async def test_routes_outside_the_cache_have_no_validators(client: Client) -> None:
    resp = await client.get("/v1/feeds")
    assert resp.status == 200 and "ETag" not in resp.headers
    assert sum(cache_of(client).counts.values()) == 0


async def test_the_byte_budget_evicts_the_least_recently_used(
    client: Client, db: sessionmaker[Session]
) -> None:
    ids = [add_article(db, f"article {i}", T0 + timedelta(minutes=i)) for i in range(6)]
    cache = cache_of(client)
    one = await client.get(f"/v1/articles/{ids[0]}")
    entry_size = len(await one.read()) + ENTRY_OVERHEAD
    cache.clear()
    cache.max_bytes = entry_size * 4 + entry_size // 2  # room for four entries of this size

    for article in ids:
        assert (await client.get(f"/v1/articles/{article}")).status == 200
    assert len(cache) == 4 and cache.size <= cache.max_bytes
    misses = cache.counts["miss"]
    await client.get(f"/v1/articles/{ids[-1]}")
    assert cache.counts["miss"] == misses  # kept
    await client.get(f"/v1/articles/{ids[0]}")
    assert cache.counts["miss"] == misses + 1  # the least recently used went first


async def test_zero_megabytes_turns_the_cache_off(
    settings: Settings, db: sessionmaker[Session], auth_headers: dict[str, str]
) -> None:
    article = add_article(db, "before", T0)
    async with serving(settings.with_overrides(api_cache_mb=0), auth_headers) as client:
        assert await titles(client) == ["before"]
        retitle(db, article, "after")
        assert await titles(client) == ["after"]
        cache = cache_of(client)
        assert cache.counts["bypass"] == 2 and cache.counts["hit"] == 0 and len(cache) == 0


async def test_without_a_rate_limit_the_version_is_still_read(
    settings: Settings, db: sessionmaker[Session], auth_headers: dict[str, str],
    redis_conn: redis.Redis,
) -> None:  # fmt: skip
    article = add_article(db, "before", T0)
    async with serving(settings.with_overrides(rate_limit=0), auth_headers) as client:
        assert await titles(client) == ["before"]
        retitle(db, article, "after")
        assert await titles(client) == ["before"]
        dataversion.bump(redis_conn)
        assert await titles(client) == ["after"]


async def test_a_successful_api_write_invalidates_every_process(
    settings: Settings, db: sessionmaker[Session], auth_headers: dict[str, str]
) -> None:
    feed = add_feed(db, "https://f.test/rss", title="Old name")
    article = add_article(db, "seen", T0, feeds=[feed])
    async with serving(settings, auth_headers) as one, serving(settings, auth_headers) as two:
        for client in (one, two):
            body = await (await client.get(f"/v1/articles/{article}")).json()
            assert body["sources"][0]["feed_title"] == "Old name"
        refused = await one.patch(f"/v1/feeds/{feed}", json={"title": 5})
        assert refused.status == 422
        assert (await two.get(f"/v1/articles/{article}")).status == 200
        assert cache_of(two).counts["hit"] == 1  # a refused write changes nothing

        patched = await one.patch(f"/v1/feeds/{feed}", json={"title": "New name"})
        assert patched.status == 200
        body = await (await two.get(f"/v1/articles/{article}")).json()
        assert body["sources"][0]["feed_title"] == "New name"
        assert (await one.delete(f"/v1/feeds/{feed}")).status == 204
        listed = await (await two.get("/v1/articles")).json()
        assert listed["data"][0]["feed_ids"] == []


async def test_concurrent_misses_of_one_entry_build_it_once(
    client: Client, db: sessionmaker[Session]
) -> None:
    for i in range(20):
        add_article(db, f"article {i}", T0 + timedelta(minutes=i))
    responses = await asyncio.gather(*(client.get("/v1/articles") for _ in range(8)))
    bodies = {await r.read() for r in responses}
    cache = cache_of(client)
    assert len(bodies) == 1 and cache.counts["miss"] == 1 and cache.counts["hit"] == 7


def test_the_feeds_command_bumps_the_version_after_a_change(
    newsdesk_cli: Callable[..., tuple[int, str, str]],
    db: sessionmaker[Session],
    redis_conn: redis.Redis,
) -> None:
    feed = add_feed(db, "https://f.test/rss")
    assert newsdesk_cli("feeds", "show", str(feed))[0] == 0
    assert redis_conn.get(dataversion.KEY) is None  # reading changes nothing
    assert newsdesk_cli("feeds", "update", str(feed), "--title", "T")[0] == 0
    assert redis_conn.get(dataversion.KEY) == b"1"
    assert newsdesk_cli("feeds", "delete", str(feed))[0] == 0
    assert redis_conn.get(dataversion.KEY) == b"2"
    assert newsdesk_cli("feeds", "delete", str(feed))[0] == 1  # not found: no change
    assert redis_conn.get(dataversion.KEY) == b"2"


def test_a_touch_is_flushed_with_the_metrics_in_one_pipeline(redis_conn: redis.Redis) -> None:
    calls: list[str] = []

    class Counting(redis.Redis):
        def pipeline(self, *args: Any, **kwargs: Any) -> Any:
            calls.append("pipeline")
            return super().pipeline(*args, **kwargs)

    client = Counting(connection_pool=redis_conn.connection_pool)
    rec = Recorder(client)
    with rec.held():
        for _ in range(3):
            rec.add("newsdesk_items_total", status="created")
            rec.touch(dataversion.KEY)
            rec.flush()
    assert calls == ["pipeline"]
    assert redis_conn.get(dataversion.KEY) == b"1"  # once per flush, however often touched
    assert redis_conn.hget(METRICS_KEY, 'newsdesk_items_total{status="created"}') == b"3"

    nowhere = Recorder(None)
    nowhere.touch(dataversion.KEY)
    nowhere.flush()  # nowhere to send it: dropped without an error


def test_a_failed_flush_keeps_the_touch_for_the_next(redis_conn: redis.Redis) -> None:
    broken = redis.Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0", socket_timeout=1)
    rec = Recorder(broken)
    rec.touch(dataversion.KEY)
    rec.flush()
    rec._client = redis_conn
    rec.flush()
    assert redis_conn.get(dataversion.KEY) == b"1"


@pytest.mark.parametrize(
    ("status", "bumps"),
    [("created", True), ("updated", True), ("duplicate", True), ("unchanged", False),
     ("error", False)],
)  # fmt: skip
def test_extraction_outcomes_that_change_articles_bump_the_version(
    monkeypatch: pytest.MonkeyPatch, ctx: Any, status: str, bumps: bool
) -> None:
    from workers import jobs

    class Outcome:
        def __init__(self) -> None:
            self.status = status

        def as_dict(self) -> dict[str, Any]:
            return {"status": status}

    touched: list[str] = []
    monkeypatch.setattr(jobs, "process", lambda ctx, payload: Outcome())
    monkeypatch.setattr(ctx.metrics, "touch", touched.append)
    jobs.extract_item({})
    assert touched == ([dataversion.KEY] if bumps else [])


@pytest.mark.parametrize(
    ("result", "bumps"),
    [({"status": "reprocessed", "changed": []}, True),
     ({"status": "merged", "into": 1, "reason": "content"}, True),
     ({"status": "merged", "into": 1}, False),  # merged by an earlier run
     ({"status": "missing"}, False)],
)  # fmt: skip
def test_reprocessing_bumps_the_version_when_it_wrote(
    monkeypatch: pytest.MonkeyPatch, ctx: Any, result: dict[str, Any], bumps: bool
) -> None:
    from workers import jobs, reprocess

    touched: list[str] = []
    monkeypatch.setattr(reprocess, "reprocess", lambda ctx, article_id: result)
    monkeypatch.setattr(ctx.metrics, "touch", touched.append)
    assert jobs.reprocess_article(1) == result
    assert touched == ([dataversion.KEY] if bumps else [])


async def test_cache_outcomes_reach_metrics_without_a_round_trip_per_request(
    client: Client, db: sessionmaker[Session], redis_conn: redis.Redis, api_token: str
) -> None:
    from collections import Counter

    from services.api.cache import flush_counts
    from services.api.context import REDIS

    add_article(db, "counted", T0)
    for _ in range(3):
        assert await titles(client) == ["counted"]
    cache = cache_of(client)
    assert (cache.counts["miss"], cache.counts["hit"]) == (1, 2)
    assert redis_conn.hget(METRICS_KEY, 'newsdesk_api_cache_total{outcome="hit"}') is None
    flushed: Counter[str] = Counter()
    assert client.app is not None
    await flush_counts(client.app[REDIS], cache, flushed)
    await flush_counts(client.app[REDIS], cache, flushed)  # nothing new: nothing added twice
    assert int(redis_conn.hget(METRICS_KEY, 'newsdesk_api_cache_total{outcome="hit"}') or 0) == 2
    assert int(redis_conn.hget(METRICS_KEY, 'newsdesk_api_cache_total{outcome="miss"}') or 0) == 1
    text = await (await client.get("/metrics")).text()
    assert "# TYPE newsdesk_api_cache_total counter" in text
    assert 'newsdesk_api_cache_total{outcome="hit"} 2' in text
