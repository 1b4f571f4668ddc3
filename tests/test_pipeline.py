"""End to end on real parts: feed + seeds folder -> poller -> rq worker -> SQL -> API."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.config import Settings
from services.db import feeds, sightings
from services.db.engine import transaction
from services.db.models import Article, ArticleEntity, Event, Sighting
from services.fetch import Fetcher
from services.poller.service import Poller
from services.queue import extract_queue
from services.sources.feed import parse_feed
from tests.conftest import DATA, REPO

FEEDS = DATA / "feeds"
CAPTURES = [
    "nytimes__20200517T221855Z.xml",  # first poll
    "nytimes__20200517T222028Z.xml",  # dates moved only
    "nytimes__20200517T222831Z.xml",  # one item changed
]
SEED = REPO / "seeds" / "000_a39bf01833f5003a.txt"
SEED_TITLE = "Biden sends Blinken to Mideast to push peace talks after Gaza truce"
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Publisher:
    """A loopback feed server publishing successive captures, with ETag and 304s."""

    def __init__(self) -> None:
        self.capture = CAPTURES[0]
        self.requests = 0
        self.server: TestServer | None = None

    async def feed(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = (FEEDS / self.capture).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, content_type="application/rss+xml", headers={"ETag": etag})

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/rss.xml"))


@pytest.fixture
async def publisher() -> AsyncIterator[Publisher]:
    pub = Publisher()
    app = web.Application()
    app.router.add_get("/rss.xml", pub.feed)
    pub.server = TestServer(app, host="127.0.0.1")
    await pub.server.start_server()
    yield pub
    await pub.server.close()


def distinct_items(capture: str) -> dict[str, str]:
    parsed = parse_feed((FEEDS / capture).read_bytes(), url="http://127.0.0.1/")
    return {item.item_key: item.content_hash for item in parsed.items}


def table_counts(db: sessionmaker[Session]) -> dict[str, int]:
    with db() as s:
        return {
            m.__tablename__: s.scalar(select(func.count()).select_from(m)) or 0
            for m in (Article, Sighting, ArticleEntity, Event)
        }


async def poll(poller: Poller, when: datetime) -> Any:
    return await poller.run_once(when)


async def test_feed_and_folder_to_api(
    settings: Settings,
    db: sessionmaker[Session],
    redis_conn: redis.Redis,
    burst: Any,
    publisher: Publisher,
    auth_headers: dict[str, str],
) -> None:
    assert settings.seeds_dir is not None
    shutil.copy(SEED, settings.seeds_dir / SEED.name)
    with transaction(db) as s:
        feed_id = feeds.add_feed(s, url=publisher.url, kind="http", interval_seconds=60, now=T0).id
    queue = extract_queue(settings, redis_conn)
    async with Fetcher(settings) as fetcher:
        poller = Poller(settings, sessions=db, queue=queue, fetcher=fetcher)
        folder = await poller.ensure_folder_feed(T0)
        assert folder is not None
        # Two overlapping cycles on the first poll: each item is still queued once.
        first, second = await asyncio.gather(poll(poller, T0), poll(poller, T0))
        items = distinct_items(CAPTURES[0])
        assert first.enqueued + second.enqueued == len(items) + 1
        burst()  # rq installs signal handlers: main thread only
        after_first = table_counts(db)
        with db() as s:
            assert s.scalar(
                select(func.count()).select_from(Sighting).where(Sighting.feed_id == feed_id)
            ) == len(items)

        # Same capture again: 304, nothing queued, nothing stored.
        stats = await poll(poller, T0 + timedelta(days=2))
        assert (stats.not_modified, stats.enqueued) == (1, 0)
        # Next capture: only the dates moved, so nothing is new.
        publisher.capture = CAPTURES[1]
        stats = await poll(poller, T0 + timedelta(days=4))
        assert stats.enqueued == 0
        burst()  # rq installs signal handlers: main thread only
        assert table_counts(db) == after_first
        # Third capture: exactly the new or changed items are queued and stored.
        publisher.capture = CAPTURES[2]
        changed = {k for k, h in distinct_items(CAPTURES[2]).items() if items.get(k) != h}
        stats = await poll(poller, T0 + timedelta(days=6))
        assert stats.enqueued == len(changed) > 0
        burst()  # rq installs signal handlers: main thread only
    final = table_counts(db)
    # The capture edits one story: the same article, updated, with one article.updated event.
    assert len(changed) == 1 and changed <= set(items)
    assert (final["articles"], final["sightings"]) == (
        after_first["articles"],
        after_first["sightings"],
    )
    with db() as s:
        assert list(s.scalars(select(Event.type).where(Event.id > after_first["events"]))) == [
            "article.updated"
        ]

    client = TestClient(TestServer(create_app(settings)), headers=auth_headers)
    await client.start_server()
    try:
        seen: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params = {"limit": "10"} | ({"cursor": cursor} if cursor else {})
            page = await (await client.get("/v1/articles", params=params)).json()
            seen += page["data"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert len(seen) == len({a["id"] for a in seen}) == final["articles"]
        seed = next(a for a in seen if a["title"] == SEED_TITLE)
        detail = await (await client.get(f"/v1/articles/{seed['id']}")).json()
        types = {e["name"]: e["type"] for e in detail["entities"]}
        assert types["Antony J. Blinken"] == "person"
        assert types["Hamas"] == "organization"
        assert [src["feed_id"] for src in detail["sources"]] == [folder.id]
        query = {"feed": str(feed_id), "limit": "200"}
        by_feed = await (await client.get("/v1/articles", params=query)).json()
        assert len(by_feed["data"]) == final["articles"] - 1
        query = {"entity": "Antony J. Blinken"}
        blinken = await (await client.get("/v1/articles", params=query)).json()
        assert seed["id"] in {a["id"] for a in blinken["data"]}
        people = await (await client.get("/v1/entities", params={"type": "person"})).json()
        assert "Antony J. Blinken" in {e["name"] for e in people["data"]}
        feed = await (await client.get(f"/v1/feeds/{feed_id}")).json()
        assert feed["last_status"] == 200 and feed["error_count"] == 0
    finally:
        await client.close()


def test_real_worker_process_stores_and_stops_warmly(
    settings: Settings, db: sessionmaker[Session], redis_conn: redis.Redis
) -> None:
    """`newsdesk worker` as its own process: loads the model, stores the seed, exits 0 on TERM."""
    assert settings.seeds_dir is not None
    shutil.copy(SEED, settings.seeds_dir / SEED.name)

    async def poll_folder() -> None:
        async with Fetcher(settings) as fetcher:
            poller = Poller(
                settings, sessions=db, queue=extract_queue(settings, redis_conn), fetcher=fetcher
            )
            await poller.ensure_folder_feed(T0)
            assert (await poller.run_once(T0)).enqueued == 1

    asyncio.run(poll_folder())
    env = os.environ | settings.child_environment() | {"REDIS_URL": settings.redis_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "worker", "--workers", "1"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and table_counts(db)["articles"] == 0:
            time.sleep(0.2)
        assert table_counts(db)["articles"] == 1
        with db() as s:
            assert s.scalar(select(Article.title)) == SEED_TITLE
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 0, proc.stderr.read() if proc.stderr else ""


def test_sighting_states_of_many_items_match_one_by_one(db: sessionmaker[Session]) -> None:
    """The batch read of sightings answers as one read per item would: the same item key in
    two feeds is two items, an item never seen is absent."""
    with transaction(db) as s:
        a = feeds.add_feed(s, url="https://a.example/feed", kind="http", interval_seconds=60,
                           now=T0).id  # fmt: skip
        b = feeds.add_feed(s, url="https://b.example/feed", kind="http", interval_seconds=60,
                           now=T0).id  # fmt: skip
        feeds.record_item_error(s, feed_id=a, item_key="guid-1", content_hash="h-a1",
                                code="empty", detail="x", now=T0)  # fmt: skip
        feeds.record_item_error(s, feed_id=b, item_key="guid-2", content_hash="h-b2",
                                code="too_short", detail="y", now=T0)  # fmt: skip
    items = [(a, "guid-1"), (a, "guid-2"), (b, "guid-1"), (b, "guid-2"), (a, "never")]
    with transaction(db) as s:
        many = sightings.sighting_states(s, items)
        one_by_one = {
            (f, k): state
            for f, k in items
            if (state := sightings.sighting_state(s, feed_id=f, item_key=k)) is not None
        }
    assert many == one_by_one
    assert set(many) == {(a, "guid-1"), (b, "guid-2")}
    assert (many[(a, "guid-1")].content_hash, many[(b, "guid-2")].error_code) == (
        "h-a1",
        "too_short",
    )
    with transaction(db) as s:
        assert sightings.sighting_states(s, []) == {}
