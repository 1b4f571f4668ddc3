"""Feed health on real HTTP, SQL and Redis: throttling, gone, moves, outages, recovery,
backpressure, politeness and several pollers at once."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer
from rq import Queue
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.core.records import FeedRecord
from services.db import feeds
from services.db.engine import make_engine, session_factory, transaction
from services.db.models import Event
from services.fetch import Fetcher
from services.poller.politeness import HostPolicy, Politeness
from services.poller.service import Poller
from services.queue import extract_queue
from tests.conftest import DATA

FEED = (DATA / "feeds" / "bbc__20200517T221855Z.xml").read_bytes()
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@dataclass
class Script:
    """What the server answers on one path: a list of (status, headers), the last repeating."""

    answers: list[tuple[int, dict[str, str]]]
    hits: int = 0


@dataclass
class Site:
    scripts: dict[str, Script] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    server: TestServer | None = None

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    def script(self, path: str, *answers: tuple[int, dict[str, str]]) -> str:
        self.scripts[path] = Script(list(answers))
        return self.url(path)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        script = self.scripts.get(request.path)
        if script is None:
            return web.Response(body=FEED, content_type="application/rss+xml")
        status, headers = script.answers[min(script.hits, len(script.answers) - 1)]
        script.hits += 1
        body = FEED if status == 200 else b"no"
        return web.Response(status=status, body=body, headers=headers)


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    s = Site()
    app = web.Application()
    app.router.add_get("/{tail:.*}", s.handle)
    s.server = TestServer(app, host="127.0.0.1")
    await s.server.start_server()
    yield s
    await s.server.close()


@pytest.fixture
async def gate(settings: Settings) -> AsyncIterator[Politeness]:
    client = aioredis.Redis.from_url(settings.redis_url)
    yield Politeness(client, HostPolicy(concurrency=2, spacing=0))
    await client.aclose()


@pytest.fixture
async def poller(
    settings: Settings, db: sessionmaker[Session], redis_conn: Any, gate: Politeness
) -> AsyncIterator[Poller]:
    async with Fetcher(settings) as fetcher:
        yield Poller(settings, sessions=db, queue=extract_queue(settings, redis_conn),
                     fetcher=fetcher, politeness=gate, rng=random.Random(7))  # fmt: skip


def poller_queue_name() -> str:
    return Settings.from_env({}).extract_queue


def add(db: sessionmaker[Session], url: str) -> int:
    with transaction(db) as s:
        return feeds.add_feed(s, url=url, kind="http", interval_seconds=900, now=NOW).id


def row(db: sessionmaker[Session], feed_id: int) -> FeedRecord:
    with db() as s:
        return feeds.get_feed(s, feed_id)


def events(db: sessionmaker[Session]) -> list[tuple[str, int | None, dict[str, Any]]]:
    with db() as s:
        return [(e.type, e.feed_id, e.payload) for e in s.scalars(select(Event).order_by(Event.id))]


async def test_429_with_retry_after_throttles_the_feed_and_its_host(
    site: Site, poller: Poller, db: sessionmaker[Session], redis_conn: Any
) -> None:
    limited = add(db, site.script("/limited", (429, {"Retry-After": "1200"})))
    stats = await poller.run_once(NOW)
    assert stats.throttled == 1 and stats.errors == 0
    feed = row(db, limited)
    assert feed.state == "throttled" and feed.error_count == 0 and feed.last_status == 429
    assert feed.next_poll_at >= NOW + timedelta(seconds=1200)
    assert not Queue(poller_queue_name(), connection=redis_conn).job_ids
    # The whole host waits: another feed on it is put off, not fetched.
    other = add(db, site.url("/other"))
    stats = await poller.run_once(NOW)
    assert stats.deferred == 1 and site.hits["/other"] == 0
    assert row(db, other).next_poll_at > NOW + timedelta(seconds=1000)


async def test_503_with_an_http_date_retry_after(
    site: Site, poller: Poller, db: sessionmaker[Session]
) -> None:
    when = datetime.now(UTC) + timedelta(hours=1)
    date = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    feed_id = add(db, site.script("/busy", (503, {"Retry-After": date})))
    await poller.run_once(NOW)
    feed = row(db, feed_id)
    assert feed.state == "throttled" and feed.error_count == 0
    assert feed.next_poll_at >= NOW + timedelta(minutes=55)


async def test_410_disables_the_feed_with_an_event(
    site: Site, poller: Poller, db: sessionmaker[Session]
) -> None:
    feed_id = add(db, site.script("/gone", (410, {})))
    await poller.run_once(NOW)
    feed = row(db, feed_id)
    assert (feed.state, feed.disabled_reason, feed.last_error_code) == (
        "disabled",
        "gone",
        "http_410",
    )
    assert [(t, f, p["reason"]) for t, f, p in events(db)] == [("feed.error", feed_id, "gone")]
    await poller.run_once(NOW + timedelta(days=30))
    assert site.hits["/gone"] == 1  # a disabled feed is never polled again


async def test_301_is_stored_302_is_not(
    site: Site, poller: Poller, db: sessionmaker[Session]
) -> None:
    moved = add(db, site.script("/old", (301, {"Location": "/new"})))
    temporary = add(db, site.script("/tmp-old", (302, {"Location": "/tmp-new"})))
    await poller.run_once(NOW)
    assert (row(db, moved).url, row(db, moved).moved_from) == (site.url("/new"), site.url("/old"))
    assert row(db, temporary).url == site.url("/tmp-old")
    assert row(db, temporary).moved_from is None


async def test_sustained_outage_disables_then_success_recovers(
    site: Site, settings: Settings, db: sessionmaker[Session], redis_conn: Any, gate: Politeness
) -> None:
    conf = settings.with_overrides(disable_after=3600)
    flaky = add(db, site.script("/flaky", (500, {}), (500, {}), (200, {})))
    dead = add(db, site.script("/dead", (500, {})))
    async with Fetcher(conf) as fetcher:
        poller = Poller(conf, sessions=db, queue=extract_queue(conf, redis_conn),
                        fetcher=fetcher, politeness=gate, rng=random.Random(1))  # fmt: skip
        when = NOW
        for _ in range(8):
            await poller.run_once(when)
            when += timedelta(days=1)  # past any backoff: every feed is due again
    assert row(db, flaky).state == "active" and row(db, flaky).error_count == 0
    recovered = [p for t, f, p in events(db) if t == "feed.recovered"]
    assert len(recovered) == 1 and recovered[0]["errors"] == 2
    dead_row = row(db, dead)
    assert (dead_row.state, dead_row.disabled_reason) == ("disabled", "outage")
    # Disabled after the fifth consecutive error (an hour of errors passed after the second).
    assert site.scripts["/dead"].hits == 5 and dead_row.error_count == 5
    assert [t for t, f, _ in events(db) if f == dead] == ["feed.error"]


async def test_cache_hints_push_the_next_poll(site: Site, poller: Poller, db: Any) -> None:
    feed_id = add(db, site.script("/cached", (200, {"Cache-Control": "max-age=7200"})))
    await poller.run_once(NOW)
    assert row(db, feed_id).next_poll_at >= NOW + timedelta(seconds=7200 * 0.9)


async def test_backpressure_pauses_claiming_and_loses_nothing(
    site: Site, settings: Settings, db: sessionmaker[Session], redis_conn: Any
) -> None:
    queue: Queue = extract_queue(settings, redis_conn)
    feed_id = add(db, site.url("/news"))
    conf = settings.with_overrides(queue_high_water=1)
    async with Fetcher(conf) as fetcher:
        poller = Poller(conf, sessions=db, queue=queue, fetcher=fetcher)
        await _backpressure_round(poller, site, db, queue, feed_id)


async def _backpressure_round(
    poller: Poller, site: Site, db: sessionmaker[Session], queue: Queue, feed_id: int
) -> None:
    queue.enqueue("workers.jobs.extract_item", {"v": 0})  # the queue is "full"
    assert (await poller.run_once(NOW)).backpressure == 1
    assert site.hits["/news"] == 0 and row(db, feed_id).next_poll_at == NOW  # still due
    queue.empty()  # type: ignore[no-untyped-call]
    stats = await poller.run_once(NOW)
    assert stats.backpressure == 0 and stats.enqueued > 0


async def test_a_nearly_full_redis_pauses_claiming_and_loses_nothing(
    site: Site, settings: Settings, db: sessionmaker[Session]
) -> None:
    """Past REDIS_MEMORY_HIGH_WATER of ``maxmemory`` pollers claim nothing, however short
    the queue: the room left is the workers'. Once Redis has room the feed is polled."""
    import shutil
    import tempfile
    from pathlib import Path

    import redis

    from services.embedded_redis import EmbeddedRedis
    from services.queue import REDIS_MEMORY_HIGH_WATER, backlog

    here = Path(tempfile.mkdtemp(prefix="nd-mem-"))  # a unix socket path must stay short
    try:
        with EmbeddedRedis(here, persistent=False) as server:
            conn = redis.Redis.from_url(server.url)
            queue: Queue = extract_queue(settings, conn)
            feed_id = add(db, site.url("/news"))
            used = int(conn.info("memory")["used_memory"])
            conn.config_set("maxmemory", int(used / (REDIS_MEMORY_HIGH_WATER + 0.05)))
            depth, share = backlog(queue)
            assert depth == 0 and share is not None and share >= REDIS_MEMORY_HIGH_WATER
            async with Fetcher(settings) as fetcher:
                poller = Poller(settings, sessions=db, queue=queue, fetcher=fetcher)
                assert (await poller.run_once(NOW)).backpressure == 1
                assert site.hits["/news"] == 0 and row(db, feed_id).next_poll_at == NOW
                conn.config_set("maxmemory", 0)
                assert backlog(queue) == (0, None)
                stats = await poller.run_once(NOW)
            assert stats.backpressure == 0 and stats.enqueued > 0
            assert site.hits["/news"] == 1
    finally:
        shutil.rmtree(here, ignore_errors=True)


async def test_two_pollers_poll_each_feed_once_per_cycle(
    site: Site, settings: Settings, db: sessionmaker[Session], redis_conn: Any, gate: Politeness
) -> None:
    urls = [site.url(f"/f{i}") for i in range(30)]
    for url in urls:
        add(db, url)
    engines = [make_engine(settings.database_url) for _ in range(2)]
    try:
        async with Fetcher(settings) as f1, Fetcher(settings) as f2:
            pollers = [
                Poller(
                    settings,
                    sessions=session_factory(engine),
                    queue=extract_queue(settings, redis_conn),
                    fetcher=fetcher,
                    politeness=gate,
                )
                for engine, fetcher in zip(engines, (f1, f2), strict=True)
            ]
            results = await asyncio.gather(*(p.run_once(NOW) for p in pollers))
    finally:
        for engine in engines:
            engine.dispose()
    assert sum(r.feeds_polled for r in results) == len(urls)
    assert all(site.hits[f"/f{i}"] == 1 for i in range(30)), site.hits


async def test_a_feed_title_or_url_change_marks_cached_answers_stale(
    site: Site, poller: Poller, db: sessionmaker[Session], redis_conn: Any
) -> None:
    """Article answers show their feeds' title and URL: the API's cache must hear of a
    change (the data version moves), and of nothing else a poll writes."""
    from services import dataversion

    def version() -> int:
        return int(redis_conn.get(dataversion.KEY) or 0)

    titled = {"title": "First title"}

    async def handle(request: web.Request) -> web.Response:
        body = FEED.replace(b"<title><![CDATA[BBC News - Home]]></title>",
                            f"<title>{titled['title']}</title>".encode(), 1)  # fmt: skip
        return web.Response(body=body, content_type="application/rss+xml")

    assert b"<title><![CDATA[BBC News - Home]]></title>" in FEED
    app = web.Application()
    app.router.add_get("/titled", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        feed_id = add(db, str(server.make_url("/titled")))
        start = version()
        await poller.run_once(NOW)
        assert row(db, feed_id).title == "First title"
        assert version() == start + 1  # the title was learnt
        later = NOW + timedelta(days=1)
        await poller.run_once(later)
        assert version() == start + 1  # same title: nothing a cached answer shows moved
        titled["title"] = "Second title"
        await poller.run_once(later + timedelta(days=1))
        assert row(db, feed_id).title == "Second title"
        assert version() == start + 2
    finally:
        await server.close()
    moved = add(db, site.script("/was", (301, {"Location": "/is"})))
    before = version()
    await poller.run_once(NOW + timedelta(days=3))
    assert row(db, moved).url == site.url("/is")
    assert version() > before
