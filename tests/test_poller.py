"""Poller and Fetcher against a loopback feed server, real SQL and a real rq queue."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer
from rq import Queue
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.core.errors import FetchError
from services.core.extract import ItemPayload
from services.core.records import FeedRecord
from services.db import feeds
from services.db.engine import transaction
from services.db.models import Sighting
from services.fetch import USER_AGENT, Fetcher
from services.poller import service
from services.poller.service import CycleStats, Poller
from services.queue import enqueue_extract, extract_job_id, extract_queue
from services.sources.feed import parse_feed

FEEDS = Path(__file__).parent / "data" / "feeds"
REPO = Path(__file__).parent.parent
NOW = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
INTERVAL = 900
BBC_1, BBC_2 = "bbc__20200517T221855Z.xml", "bbc__20200517T222028Z.xml"
NYT_1, NYT_2, NYT_3 = (
    "nytimes__20200517T221855Z.xml",
    "nytimes__20200517T222028Z.xml",
    "nytimes__20200517T222831Z.xml",
)
LATIMES = "latimes__20200421T200942Z.xml"
PAYLOAD_KEYS = {
    "v", "feed_id", "kind", "item_key", "content_hash", "url", "title", "summary", "content",
    "content_type", "published", "author",
}  # fmt: skip


# -- loopback feed server ---------------------------------------------------------------------


@dataclass
class Doc:
    body: bytes
    etag: str | None = None
    last_modified: str | None = None
    status: int = 200
    gzip: bool = False
    content_type: str = "application/rss+xml; charset=utf-8"


@dataclass
class FeedSite:
    """Scripted documents by name, and every request it saw."""

    docs: dict[str, Doc] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    server: TestServer | None = None

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    def serve(self, name: str, capture: str | bytes, **kwargs: Any) -> str:
        body = capture if isinstance(capture, bytes) else (FEEDS / capture).read_bytes()
        self.docs[name] = Doc(body, **kwargs)
        return self.url(f"/feed/{name}")

    async def feed(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests.append((name, dict(request.headers)))
        doc = self.docs.get(name)
        if doc is None:
            return web.Response(status=404, text="no such feed")
        if doc.status != 200:
            return web.Response(status=doc.status, text="server trouble")
        headers = {"Content-Type": doc.content_type}
        if doc.etag:
            headers["ETag"] = doc.etag
        if doc.last_modified:
            headers["Last-Modified"] = doc.last_modified
        if doc.etag and request.headers.get("If-None-Match") == doc.etag:
            return web.Response(status=304, headers=headers)
        if doc.gzip:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=doc.body, headers=headers)

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        statuses = request.match_info["statuses"].split(",")
        rest, name = ",".join(statuses[1:]), request.match_info["name"]
        location = f"/r/{rest}/{name}" if rest else f"/feed/{name}"
        return web.Response(status=int(statuses[0]), headers={"Location": location})

    async def loop(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "/loop"})

    async def to_file(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=301, headers={"Location": "file:///etc/passwd"})

    async def slow(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3)
        return web.Response(text="late")

    async def endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/xml"})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(10_000):
                await resp.write(b"<x>" * 4096)
        return resp

    async def declared_huge(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/xml"})
        resp.content_length = 10 * 1024**3
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):
            await resp.write(b"<rss>")
            await asyncio.sleep(1)
        return resp

    async def echo_agent(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=request.headers.get("User-Agent", ""))


@pytest.fixture
async def site() -> AsyncIterator[FeedSite]:
    site = FeedSite()
    app = web.Application()
    app.router.add_get("/feed/{name}", site.feed)
    app.router.add_get("/r/{statuses}/{name}", site.redirect)
    app.router.add_get("/loop", site.loop)
    app.router.add_get("/to-file", site.to_file)
    app.router.add_get("/slow", site.slow)
    app.router.add_get("/endless", site.endless)
    app.router.add_get("/declared-huge", site.declared_huge)
    app.router.add_get("/agent", site.echo_agent)
    site.server = TestServer(app, host="127.0.0.1")
    await site.server.start_server()
    yield site
    await site.server.close()


# -- poller plumbing --------------------------------------------------------------------------

MakePoller = Callable[..., Awaitable[Poller]]


@pytest.fixture
def queue(settings: Settings, redis_conn: redis.Redis) -> Queue:
    return extract_queue(settings, redis_conn)


@pytest.fixture
async def make_poller(
    settings: Settings, db: sessionmaker[Session], queue: Queue
) -> AsyncIterator[MakePoller]:
    async with contextlib.AsyncExitStack() as stack:

        async def factory(**overrides: Any) -> Poller:
            conf = settings.with_overrides(**overrides) if overrides else settings
            fetcher = await stack.enter_async_context(Fetcher(conf))
            return Poller(conf, sessions=db, queue=queue, fetcher=fetcher)

        yield factory


def add_feed(db: sessionmaker[Session], url: str) -> int:
    with transaction(db) as session:
        return feeds.add_feed(session, url=url, kind="http", interval_seconds=INTERVAL, now=NOW).id


def assert_within(when: datetime, start: datetime, low: float, high: float) -> None:
    """``when`` lies between ``low`` and ``high`` seconds after ``start``."""
    assert start + timedelta(seconds=low) <= when <= start + timedelta(seconds=high)


def feed_row(db: sessionmaker[Session], feed_id: int) -> FeedRecord:
    with db() as session:
        return feeds.get_feed(session, feed_id)


def queued(queue: Queue) -> dict[str, dict[str, Any]]:
    """job id -> payload of every job waiting in the queue."""
    return {job.id: job.args[0] for job in queue.get_jobs()}


def versions(capture: str) -> set[tuple[str, str]]:
    parsed = parse_feed((FEEDS / capture).read_bytes(), url="http://127.0.0.1/")
    return {(item.item_key, item.content_hash) for item in parsed.items}


def drain(queue: Queue) -> None:
    """Delete every queued job (as if workers had taken them)."""
    queue.empty()  # type: ignore[no-untyped-call]


def job_ids(feed_id: int, pairs: set[tuple[str, str]]) -> set[str]:
    return {extract_job_id(feed_id, key, digest) for key, digest in pairs}


def workers_done(db: sessionmaker[Session], queue: Queue) -> None:
    """Stand in for the workers: every queued item becomes a sighting and leaves the queue."""
    with transaction(db) as session:
        for payload in queued(queue).values():
            session.add(
                Sighting(
                    feed_id=payload["feed_id"], item_key=payload["item_key"],
                    item_key_hash=feeds.key_hash(payload["item_key"]),
                    content_hash=payload["content_hash"], first_seen_at=NOW, last_seen_at=NOW,
                )
            )  # fmt: skip
    drain(queue)


# -- HTTP feeds -------------------------------------------------------------------------------


@pytest.mark.parametrize("capture", [BBC_1, LATIMES])
async def test_first_poll_enqueues_one_job_per_distinct_item(
    site: FeedSite, make_poller: MakePoller, db: sessionmaker[Session], queue: Queue,
    capture: str,
) -> None:  # fmt: skip
    url = site.serve("news", capture, etag='"v1"', last_modified="Sun, 17 May 2020 22:18:55 GMT")
    feed_id = add_feed(db, url)
    poller = await make_poller()

    stats = await poller.run_once(NOW)

    expected = versions(capture)
    assert stats == CycleStats(feeds_polled=1, items_seen=len(expected), enqueued=len(expected))
    jobs = queued(queue)
    assert set(jobs) == job_ids(feed_id, expected)
    for payload in jobs.values():
        assert set(payload) == PAYLOAD_KEYS
        assert payload["v"] == 1 and payload["feed_id"] == feed_id and payload["kind"] == "feed"
        assert json.loads(json.dumps(payload)) == payload
        item = ItemPayload.from_dict(payload)  # the worker's own validation
        assert item.published is not None and item.published.tzinfo is not None
    if capture == LATIMES:
        assert all(p["content"] and p["content_type"] == "text/html" for p in jobs.values())
    row = feed_row(db, feed_id)
    assert (row.etag, row.last_modified) == ('"v1"', "Sun, 17 May 2020 22:18:55 GMT")
    assert row.body_hash == hashlib.sha256((FEEDS / capture).read_bytes()).hexdigest()
    assert row.last_status == 200 and row.error_count == 0 and row.title
    assert_within(row.next_poll_at, NOW, INTERVAL * 0.9, INTERVAL * 1.1)  # jittered interval


async def test_second_poll_of_same_capture_is_a_304_and_enqueues_nothing(
    site: FeedSite, make_poller: MakePoller, db: sessionmaker[Session], queue: Queue
) -> None:
    url = site.serve("news", BBC_1, etag='"v1"', last_modified="Sun, 17 May 2020 22:18:55 GMT")
    feed_id = add_feed(db, url)
    poller = await make_poller()
    await poller.run_once(NOW)
    drain(queue)  # the workers took the jobs (but wrote nothing)

    stats = await poller.run_once(NOW + HOUR)

    assert stats == CycleStats(feeds_polled=1, not_modified=1)
    assert queue.count == 0
    _, headers = site.requests[-1]
    assert headers["If-None-Match"] == '"v1"'
    assert headers["If-Modified-Since"] == "Sun, 17 May 2020 22:18:55 GMT"
    row = feed_row(db, feed_id)
    assert row.last_status == 304 and row.etag == '"v1"'
    assert_within(row.next_poll_at, NOW + HOUR, INTERVAL * 0.9, INTERVAL * 1.1)


async def test_identical_body_without_validators_is_not_parsed_or_enqueued(
    site: FeedSite, make_poller: MakePoller, db: sessionmaker[Session], queue: Queue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    feed_id = add_feed(db, site.serve("news", BBC_1))  # no ETag, no Last-Modified
    poller = await make_poller()
    await poller.run_once(NOW)
    drain(queue)
    parses: list[str] = []

    def counting_parse(body: bytes, **kwargs: Any) -> Any:
        parses.append(kwargs["url"])
        return parse_feed(body, **kwargs)

    monkeypatch.setattr("services.poller.service.parse_feed", counting_parse)

    stats = await poller.run_once(NOW + HOUR)

    assert stats == CycleStats(feeds_polled=1, unchanged=1)
    assert parses == [] and queue.count == 0
    assert feed_row(db, feed_id).last_status == 200


@pytest.mark.parametrize("workers_ran", [True, False], ids=["sightings", "jobs_pending"])
@pytest.mark.parametrize(
    ("first", "second"),
    [(BBC_1, BBC_2), (NYT_2, NYT_3), (NYT_1, NYT_2)],
    ids=["new_item", "changed_item", "dates_only"],
)
async def test_next_capture_enqueues_only_new_or_changed_items(
    site: FeedSite, make_poller: MakePoller, db: sessionmaker[Session], queue: Queue,
    first: str, second: str, workers_ran: bool,
) -> None:  # fmt: skip
    url = site.serve("news", first, etag='"1"')
    feed_id = add_feed(db, url)
    poller = await make_poller()
    await poller.run_once(NOW)
    before = set(queued(queue))
    if workers_ran:
        workers_done(db, queue)
    site.serve("news", second, etag='"2"')

    stats = await poller.run_once(NOW + HOUR)

    old, new = versions(first), versions(second)
    expected = new - old
    assert len(expected) < len(new)
    assert stats.items_seen == len(new) and stats.enqueued == len(expected)
    assert stats.already_queued == (0 if workers_ran else len(new & old))
    added = set(queued(queue)) - (set() if workers_ran else before)
    assert added == job_ids(feed_id, expected)
    if second == NYT_2:
        assert expected == set()  # only lastBuildDate/pubDate moved


async def test_overlapping_cycles_enqueue_each_item_once(
    site: FeedSite, make_poller: MakePoller, db: sessionmaker[Session], queue: Queue
) -> None:
    feed_id = add_feed(db, site.serve("news", BBC_1, etag='"1"'))
    one, two = await make_poller(), await make_poller()

    results = await asyncio.gather(one.run_once(NOW), two.run_once(NOW), one.run_once(NOW))

    expected = versions(BBC_1)
    total = sum(results, CycleStats())
    assert total.feeds_polled == 1 and total.enqueued == len(expected)
    assert set(queue.job_ids) == job_ids(feed_id, expected)
    assert len(queue.job_ids) == len(expected)


async def test_same_feed_polled_twice_at_once_still_queues_each_item_once(
    site: FeedSite, make_poller: MakePoller, db: sessionmaker[Session], queue: Queue
) -> None:
    # Past the lease (a poller that stalled for longer than LEASE): both fetch and parse, and
    # the deterministic job ids keep the queue to one job per item version.
    feed_id = add_feed(db, site.serve("news", BBC_1))
    record = feed_row(db, feed_id)
    one, two = await make_poller(), await make_poller()

    results = await asyncio.gather(one._poll_http(record, NOW), two._poll_http(record, NOW))

    expected = versions(BBC_1)
    stats = [r[0] for r in results]
    assert sum(s.enqueued for s in stats) == len(expected)
    assert sum(s.already_queued for s in stats) == len(expected)
    assert len(queue.job_ids) == len(expected)


async def test_broken_feeds_record_errors_and_the_good_feed_is_still_enqueued(
    site: FeedSite, make_poller: MakePoller, db: sessionmaker[Session], queue: Queue
) -> None:
    good = add_feed(db, site.serve("good", BBC_1))
    broken = {
        "parse_error": add_feed(db, site.serve("malformed", "malformed.xml")),
        "not_a_feed": add_feed(db, site.serve("html", "not_a_feed.html", content_type="text/html")),
        "http_500": add_feed(db, site.serve("down", BBC_1, status=500)),
        "entities_forbidden": add_feed(db, site.serve("bomb", "billion_laughs.xml")),
        "http_404": add_feed(db, site.url("/feed/missing")),
        "connection_error": add_feed(db, f"http://127.0.0.1:{closed_port()}/feed"),
        "bad_scheme": add_feed(db, "ftp://127.0.0.1/feed.xml"),
    }
    poller = await make_poller()

    stats = await poller.run_once(NOW)

    assert stats.feeds_polled == 1 + len(broken) and stats.errors == len(broken)
    assert set(queue.job_ids) == job_ids(good, versions(BBC_1))
    for code, feed_id in broken.items():
        row = feed_row(db, feed_id)
        assert row.last_error_code == code, feed_id
        assert row.error_count == 1 and row.last_error_detail
        # First error: exponential backoff from the interval, with equal jitter.
        assert_within(row.next_poll_at, NOW, INTERVAL / 2, INTERVAL)
        assert row.body_hash is None
    assert feed_row(db, broken["http_500"]).last_status == 500
    assert feed_row(db, broken["parse_error"]).last_status is None
    assert feed_row(db, good).error_count == 0


async def test_queue_failure_is_not_blamed_on_the_feed_and_is_retried_shortly(
    site: FeedSite, make_poller: MakePoller, db: sessionmaker[Session], queue: Queue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    failing = add_feed(db, site.serve("a", NYT_3, etag='"a"'))
    fine = add_feed(db, site.serve("b", BBC_1))
    real_enqueue = enqueue_extract

    def flaky_enqueue(q: Queue, payload: dict[str, Any], *, timeout: int) -> bool:
        if payload["feed_id"] == failing:
            raise redis.ConnectionError("Redis went away")
        return real_enqueue(q, payload, timeout=timeout)

    monkeypatch.setattr("services.poller.service.enqueue_extract", flaky_enqueue)
    poller = await make_poller()

    stats = await poller.run_once(NOW)

    assert stats.errors == 1 and stats.enqueued == len(versions(BBC_1))
    row = feed_row(db, failing)
    assert row.error_count == 0 and row.etag is None and row.body_hash is None
    # Due again in seconds, not after its lease: Redis failed, not the feed.
    assert row.next_poll_at == NOW + service.QUEUE_RETRY < NOW + service.LEASE
    assert feed_row(db, fine).last_status == 200


def test_aiohttp_has_the_decompression_bomb_fix() -> None:
    # CVE-2025-69223: before 3.13.3 a compressed body was inflated in one go.
    version = tuple(int(part) for part in aiohttp.__version__.split(".")[:3])
    assert version >= (3, 13, 3)


async def test_gzip_bomb_is_refused_as_too_large(
    site: FeedSite, make_poller: MakePoller, db: sessionmaker[Session], queue: Queue
) -> None:
    cap = 256 * 1024
    bomb = gzip_zeros(64 * 1024 * 1024)
    assert len(bomb) < 100 * 1024
    feed_id = add_feed(db, site.serve("bomb", bomb, gzip=True))
    ok_id = add_feed(db, site.serve("ok", gzip.compress((FEEDS / NYT_3).read_bytes()), gzip=True))
    poller = await make_poller(max_body_bytes=cap)

    started = time.monotonic()
    stats = await poller.run_once(NOW)

    assert time.monotonic() - started < 3
    assert stats.errors == 1
    assert feed_row(db, feed_id).last_error_code == "too_large"
    assert feed_row(db, ok_id).last_error_code is None
    assert set(queue.job_ids) == job_ids(ok_id, versions(NYT_3))


# -- folder source ----------------------------------------------------------------------------


async def test_folder_source_enqueues_good_files_and_records_bad_ones_once(
    settings: Settings, make_poller: MakePoller, db: sessionmaker[Session], queue: Queue
) -> None:
    seeds = settings.seeds_dir
    assert seeds is not None
    (seeds / "sub").mkdir()
    (seeds / "a.txt").write_text("Headline A\n\nBody of A.\n")
    (seeds / "sub" / "b.txt").write_text("Headline B\n\nBody of B.\n")
    (seeds / "empty.txt").write_bytes(b"")
    (seeds / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (seeds / "latin1.txt").write_bytes("café".encode("latin-1"))
    poller = await make_poller()
    folder = await poller.ensure_folder_feed(NOW)
    assert folder is not None and folder.kind == "folder"
    assert folder.url == f"folder:{seeds}"
    assert (await poller.ensure_folder_feed(NOW)) == folder

    stats = await poller.run_once(NOW)

    assert stats == CycleStats(feeds_polled=1, files_seen=5, enqueued=2, errors=3)
    payloads = sorted(queued(queue).values(), key=lambda p: p["item_key"])
    assert [p["item_key"] for p in payloads] == ["a.txt", "sub/b.txt"]
    for payload in payloads:
        assert set(payload) == PAYLOAD_KEYS and payload["kind"] == "file"
        assert payload["content_type"] == "text/plain" and payload["content"]
        assert payload["url"] is payload["title"] is payload["summary"] is None
        ItemPayload.from_dict(payload)
    with db() as session:
        errors = {e.item_key: e.code for e in feeds.item_errors(session, feed_id=folder.id)}
    assert errors == {
        "empty.txt": "empty_file", "binary.txt": "binary_file", "latin1.txt": "binary_file",
    }  # fmt: skip

    # Nothing changed: nothing new queued, no error recorded again.
    again = await poller.run_once(NOW + HOUR)
    assert again == CycleStats(feeds_polled=1, files_seen=5, already_queued=2)

    # An edited file and a new one are picked up while running.
    (seeds / "a.txt").write_text("Headline A\n\nBody of A, corrected.\n")
    (seeds / "c.txt").write_text("Headline C\n")
    third = await poller.run_once(NOW + 2 * HOUR)
    assert third.enqueued == 2 and third.already_queued == 1 and third.errors == 0
    texts = {p["item_key"]: p["content"] for p in queued(queue).values()}
    assert "Headline A\n\nBody of A, corrected.\n" in texts.values()
    assert texts["c.txt"] == "Headline C\n"
    assert feed_row(db, folder.id).error_count == 0


async def test_missing_folder_is_a_feed_error(
    settings: Settings, make_poller: MakePoller, db: sessionmaker[Session], tmp_path: Path
) -> None:
    poller = await make_poller(seeds_dir=tmp_path / "gone")
    assert await poller.ensure_folder_feed(NOW) is None
    with transaction(db) as session:
        folder_id = feeds.add_feed(
            session, url=f"folder:{tmp_path / 'gone'}", kind="folder", interval_seconds=5, now=NOW
        ).id
    stats = await poller.run_once(NOW)
    assert stats.errors == 1
    assert feed_row(db, folder_id).last_error_code == "folder_missing"


# -- the Fetcher on its own -------------------------------------------------------------------


async def fetch_error(settings: Settings, url: str, **overrides: Any) -> FetchError:
    async with Fetcher(settings.with_overrides(**overrides)) as fetcher:
        with pytest.raises(FetchError) as info:
            await fetcher.fetch(url)
    return info.value


async def test_fetch_follows_redirects_and_reports_permanent_moves(
    site: FeedSite, settings: Settings
) -> None:
    site.serve("news", NYT_3, etag='"e"')
    async with Fetcher(settings) as fetcher:
        moved = await fetcher.fetch(site.url("/r/301/news"))
        assert moved.status == 200 and moved.permanent_redirect == site.url("/feed/news")
        assert moved.final_url == site.url("/feed/news") and moved.etag == '"e"'
        assert (await fetcher.fetch(site.url("/r/302/news"))).permanent_redirect is None
        # Permanent then temporary: the feed moved to the first target only.
        mixed = await fetcher.fetch(site.url("/r/308,302/news"))
        assert mixed.permanent_redirect == site.url("/r/302/news")
        assert (await fetcher.fetch(site.url("/r/302,301/news"))).permanent_redirect is None
        five = await fetcher.fetch(site.url("/r/301,302,303,307,308/news"))
        assert five.status == 200 and five.body == (FEEDS / NYT_3).read_bytes()
        assert (await fetcher.fetch(site.url("/feed/news"), etag='"e"')).status == 304
        assert (await fetcher.fetch(site.url("/agent"))).body.decode() == USER_AGENT
    six = await fetch_error(settings, site.url("/r/302,302,302,302,302,302/news"))
    assert six.code == "too_many_redirects"
    assert (await fetch_error(settings, site.url("/loop"))).code == "too_many_redirects"


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/", "data:,hi"]
)
async def test_fetch_refuses_non_http_schemes(settings: Settings, url: str) -> None:
    assert (await fetch_error(settings, url)).code == "bad_scheme"


async def test_fetch_refuses_a_redirect_to_a_non_http_scheme(
    site: FeedSite, settings: Settings
) -> None:
    assert (await fetch_error(settings, site.url("/to-file"))).code == "bad_scheme"


async def test_fetch_limits(site: FeedSite, settings: Settings) -> None:
    declared = await fetch_error(settings, site.url("/declared-huge"))
    assert declared.code == "too_large" and "declared" in str(declared)
    streamed = await fetch_error(settings, site.url("/endless"), max_body_bytes=100_000)
    assert streamed.code == "too_large" and "declared" not in str(streamed)
    started = time.monotonic()
    slow = await fetch_error(settings, site.url("/slow"), http_timeout=0.3)
    assert slow.code == "timeout" and time.monotonic() - started < 2
    refused = await fetch_error(settings, f"http://127.0.0.1:{closed_port()}/")
    assert refused.code == "connection_error"
    site.serve("gone", BBC_1, status=410)
    gone = await fetch_error(settings, site.url("/feed/gone"))
    assert gone.code == "http_410" and getattr(gone, "status", None) == 410


# -- the loop and the entrypoint --------------------------------------------------------------


async def test_run_loop_polls_until_stopped(
    site: FeedSite, make_poller: MakePoller, db: sessionmaker[Session], queue: Queue
) -> None:
    add_feed(db, site.serve("news", NYT_3))
    poller = await make_poller(poll_tick=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    for _ in range(100):
        if queue.count:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, timeout=2)
    assert queue.count == len(versions(NYT_3))


def test_entrypoint_ingests_the_seeds_folder_and_stops_on_sigterm(
    settings: Settings, db: sessionmaker[Session], queue: Queue
) -> None:
    assert settings.seeds_dir is not None
    (settings.seeds_dir / "seed.txt").write_text("A headline\n\nA body.\n")
    env = {**os.environ, **settings.child_environment(), "NEWSDESK_POLL_TICK": "0.1"}
    env["REDIS_URL"] = settings.redis_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.poller"], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30  # start-up on a loaded machine
        while queue.count == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if proc.poll() is not None:
            assert proc.stdout is not None
            pytest.fail(proc.stdout.read().decode())
        assert queue.count == 1
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=3)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output.decode()
    assert b"feed.polled" in output and b"poller.stopped" in output
    (payload,) = queued(queue).values()
    assert payload["kind"] == "file" and payload["item_key"] == "seed.txt"


# -- helpers ----------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gzip_zeros(size: int) -> bytes:
    """A gzip member of ``size`` zero bytes, built in steps so the test stays small."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1024 * 1024)
    parts = [compressor.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join(parts) + compressor.flush()


# -- Redis full -------------------------------------------------------------------------------


async def test_a_full_redis_refuses_jobs_and_the_next_poll_queues_every_item(
    site: FeedSite, db: sessionmaker[Session], settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Redis at ``maxmemory`` under ``noeviction`` answers OOM to an enqueue: the poll fails
    without storing the feed's validators, and once Redis has room the next poll (a few
    seconds later) queues every item, each once. Nothing is dropped silently."""
    import shutil
    import tempfile

    from services.embedded_redis import EmbeddedRedis
    from services.poller.reconcile import Reconciler

    # Pollers hold off at 80% of maxmemory, but one cycle's feeds can carry it past 100%:
    # the mark is moved out of the way to reach a full Redis with a single feed.
    monkeypatch.setattr(service, "REDIS_MEMORY_HIGH_WATER", 1.01)
    here = Path(tempfile.mkdtemp(prefix="nd-oom-"))  # a unix socket path must stay short
    try:
        with EmbeddedRedis(here, persistent=False) as server:
            conn = redis.Redis.from_url(server.url)
            assert conn.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
            queue = extract_queue(settings, conn)
            Reconciler(db, queue, sweep_interval=3600).run(NOW)  # the Redis is known
            # rq's first enqueue loads its scripts (about 200 KB): done once before measuring.
            warm = {"feed_id": 0, "item_key": "warm", "content_hash": "0"}
            assert enqueue_extract(queue, warm, timeout=60)
            queue.fetch_job(queue.job_ids[0]).delete()
            used = int(conn.info("memory")["used_memory"])
            conn.config_set("maxmemory", used + 96 * 1024)  # room for some of the jobs
            feed_id = add_feed(db, site.serve("news", LATIMES, etag='"v1"'))
            expected = job_ids(feed_id, versions(LATIMES))
            async with Fetcher(settings) as fetcher:
                poller = Poller(settings, sessions=db, queue=queue, fetcher=fetcher)

                first = await poller.run_once(NOW)

                assert first.errors == 1 and first.enqueued == 0
                taken = set(queue.job_ids)
                assert taken < expected and taken, "Redis took some of the jobs, then refused"
                row = feed_row(db, feed_id)
                assert row.etag is None and row.body_hash is None and row.error_count == 0
                assert row.next_poll_at == NOW + service.QUEUE_RETRY

                conn.config_set("maxmemory", 0)
                second = await poller.run_once(NOW + service.QUEUE_RETRY)

            assert second.errors == 0
            assert second.enqueued == len(expected) - len(taken)
            assert second.already_queued == len(taken)
            assert sorted(queue.job_ids) == sorted(expected)
            assert feed_row(db, feed_id).etag == '"v1"'
    finally:
        shutil.rmtree(here, ignore_errors=True)
