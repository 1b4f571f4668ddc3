"""Full text from article pages, end to end: a loopback publisher serves feeds and pages, the
poller fetches the pages it should (politely, through the guarded Fetcher), an in-process rq
worker extracts them, and SQL holds the articles."""

from __future__ import annotations

import contextlib
import html
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestClient, TestServer
from rq import Queue
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.cli import main
from services.config import Settings
from services.core.extract import ItemPayload, extract
from services.db import feeds
from services.db.engine import transaction
from services.db.models import Article, ArticleUrl, Event, Sighting
from services.fetch import Fetcher
from services.poller.health import CycleStats
from services.poller.pages import PAGE_MAX_BYTES, page_settings
from services.poller.politeness import HostPolicy, Politeness
from services.poller.service import Poller
from services.queue import extract_queue
from tests.pages import (
    NYTIMES,
    article_page,
    latimes_articles,
    latimes_items,
    seed_article,
    summary_feed_pages,
)
from tests.pages import (
    Article as PageText,
)

NOW = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
PRIVATE_HOST = "intranet.private.test"  # resolves to 10.1.2.3: refused when dialled


# -- the loopback publisher -------------------------------------------------------------------


@dataclass
class Doc:
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    status: int = 200


@dataclass
class Publisher:
    """Feeds under /feed/<name>; pages by path on any host name (query strings ignored)."""

    feeds: dict[str, bytes] = field(default_factory=dict)
    pages: dict[str, Doc] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    server: TestServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.port is not None
        return self.server.port

    def origin(self, host: str) -> str:
        return f"http://{host}:{self.port}"

    def feed_url(self, name: str, body: bytes) -> str:
        self.feeds[name] = body
        return f"{self.origin('feeds.test')}/feed/{name}"

    def page(self, path: str, markup: str | bytes, **kwargs: Any) -> None:
        body = markup.encode() if isinstance(markup, str) else markup
        self.pages[path] = Doc(body, **kwargs)

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        if path.startswith("/feed/"):
            return web.Response(body=self.feeds[path.removeprefix("/feed/")],
                                content_type="application/rss+xml")  # fmt: skip
        self.requests.append(f"{request.host.split(':')[0]}{request.path_qs}")
        doc = self.pages.get(path)
        if doc is None:
            return web.Response(status=404, text="not found")
        return web.Response(status=doc.status, body=doc.body,
                            headers={"Content-Type": doc.content_type})  # fmt: skip


class TestResolver(AbstractResolver):
    """``*.private.test`` is 10.1.2.3 (not allowlisted); every other name is 127.0.0.1."""

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[ResolveResult]:
        address = "10.1.2.3" if host.endswith(".private.test") else "127.0.0.1"
        return [{"hostname": host, "host": address, "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": 0}]  # fmt: skip

    async def close(self) -> None:
        return None


@pytest.fixture
async def publisher() -> AsyncIterator[Publisher]:
    pub = Publisher()
    app = web.Application()
    app.router.add_get("/{tail:.*}", pub.handle)
    pub.server = TestServer(app, host="127.0.0.1")
    await pub.server.start_server()
    yield pub
    await pub.server.close()


MakePoller = Callable[[], Awaitable[Poller]]


@pytest.fixture
def queue(settings: Settings, redis_conn: Any) -> Queue:
    return extract_queue(settings, redis_conn)


@pytest.fixture
async def make_poller(
    settings: Settings, db: sessionmaker[Session], queue: Queue
) -> AsyncIterator[MakePoller]:
    """A poller as `newsdesk poller` builds it: page Fetcher with the page cap, host gate."""
    async with contextlib.AsyncExitStack() as stack:
        client = aioredis.Redis.from_url(settings.redis_url)
        stack.push_async_callback(client.aclose)

        async def factory() -> Poller:
            resolver = TestResolver()
            fetcher = await stack.enter_async_context(Fetcher(settings, resolver=resolver))
            pages = await stack.enter_async_context(
                Fetcher(page_settings(settings), resolver=resolver)
            )
            gate = Politeness(client, HostPolicy(concurrency=2, spacing=0))
            return Poller(settings, sessions=db, queue=queue, fetcher=fetcher, politeness=gate,
                          page_fetcher=pages)  # fmt: skip

        yield factory


def add_feed(db: sessionmaker[Session], url: str, fulltext: str | None = None) -> int:
    with transaction(db) as session:
        feed_id = feeds.add_feed(session, url=url, kind="http", interval_seconds=900, now=NOW).id
        if fulltext is not None:
            feeds.update_feed(session, feed_id, now=NOW, fulltext=fulltext)
        return feed_id


def queued(queue: Queue) -> list[dict[str, Any]]:
    return [job.args[0] for job in queue.get_jobs()]


def stored(db: sessionmaker[Session]) -> dict[str, Article]:
    """Article by title."""
    with db() as session:
        return {a.title: a for a in session.scalars(select(Article))}


def urls_of(db: sessionmaker[Session], article_id: int) -> set[str]:
    with db() as session:
        return set(
            session.scalars(select(ArticleUrl.url).where(ArticleUrl.article_id == article_id))
        )


def count(db: sessionmaker[Session], model: Any) -> int:
    with db() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def nyt_site(publisher: Publisher) -> tuple[bytes, dict[str, PageText]]:
    """The NYT capture (summary-only) with links moved to the publisher, and its pages."""
    extra = [item.paragraph for item in latimes_items()]
    body, pages = summary_feed_pages(
        NYTIMES, publisher.origin("www.nytimes.test"), extra_paragraphs=extra
    )
    for path, (_, markup) in pages.items():
        publisher.page(path, markup)
    return body, {path: article for path, (article, _) in pages.items()}


def rss(items: list[dict[str, str]]) -> bytes:
    """A small RSS 2.0 document; an item's ``content`` goes into content:encoded."""
    parts = []
    for it in items:
        title, link = html.escape(it["title"]), html.escape(it["link"])
        content = it.get("content")
        encoded = f"<content:encoded><![CDATA[{content}]]></content:encoded>" if content else ""
        parts.append(
            f"<item><title>{title}</title><link>{link}</link><guid>{link}</guid>"
            f"<description><![CDATA[{it['summary']}]]></description>{encoded}</item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel><title>Test</title>'
        f"<link>http://feeds.test/</link>{''.join(parts)}</channel></rss>"
    ).encode()


def words(text: str) -> list[str]:
    """The feed's plain-text summaries keep their double spaces; the pages do not."""
    return text.split()


def paragraphs_html(article: PageText) -> str:
    return "".join(f"<p>{p}</p>" for p in article.paragraphs)


# -- summary-only feeds get their pages -------------------------------------------------------


async def test_summary_only_feed_gets_full_text_end_to_end(
    publisher: Publisher, make_poller: MakePoller, db: sessionmaker[Session], queue: Queue,
    burst: Callable[[], int],
) -> None:  # fmt: skip
    body, articles = nyt_site(publisher)
    add_feed(db, publisher.feed_url("nyt", body))
    poller = await make_poller()

    stats = await poller.run_once(NOW)

    n = len(articles)
    assert stats == CycleStats(feeds_polled=1, items_seen=n, enqueued=n, pages_fetched=n)
    assert sorted(publisher.requests) == sorted(f"www.nytimes.test{p}" for p in articles)
    payloads = queued(queue)
    assert all(p["v"] == 1 and p["page_url"] and "<article>" in p["page_html"] for p in payloads)
    assert all("analytics" not in p["page_html"] for p in payloads)  # scripts stay home
    # What the worker will make of them (the language is stored once the pipeline keeps it).
    assert {extract(ItemPayload.from_dict(p)).language for p in payloads} == {"en"}

    assert burst() == n
    found = stored(db)
    assert len(found) == n
    for path, article in articles.items():
        row = found[article.title]
        assert row.text == article.body
        assert row.language == "en"
        assert row.canonical_url == f"https://www.nytimes.test{path}"  # the page's own
        link = f"{publisher.origin('www.nytimes.test')}{path}"
        assert {row.canonical_url, link} <= urls_of(db, row.id)


async def test_mode_never_stores_summaries_only(
    publisher: Publisher, make_poller: MakePoller, db: sessionmaker[Session], queue: Queue,
    burst: Callable[[], int],
) -> None:  # fmt: skip
    body, articles = nyt_site(publisher)
    add_feed(db, publisher.feed_url("nyt", body), fulltext="never")
    poller = await make_poller()

    stats = await poller.run_once(NOW)

    assert (stats.pages_fetched, stats.pages_failed, stats.enqueued) == (0, 0, len(articles))
    assert publisher.requests == []
    assert not any("page_html" in p or "page_url" in p for p in queued(queue))
    assert burst() == len(articles)
    for article in articles.values():
        assert words(stored(db)[article.title].text) == words(article.paragraphs[0])  # summary


async def test_full_content_is_used_as_is_and_always_fetches_anyway(
    publisher: Publisher, make_poller: MakePoller, db: sessionmaker[Session], queue: Queue,
    burst: Callable[[], int],
) -> None:  # fmt: skip
    seed, short = seed_article(), latimes_articles()[0]
    origin = publisher.origin("www.latimes.test")
    items = [
        {"title": seed.title, "link": f"{origin}/seed", "summary": seed.paragraphs[0],
         "content": paragraphs_html(seed)},
        {"title": short.title, "link": f"{origin}/short", "summary": short.paragraphs[0],
         "content": f"<p>{short.paragraphs[0]}</p>"},
    ]  # fmt: skip
    # The seed page in windows-1252, declared only by its meta tag (curly quotes included).
    publisher.page("/seed", article_page(seed, charset="windows-1252").encode("cp1252"),
                   content_type="text/html")  # fmt: skip
    publisher.page("/short", article_page(short, canonical="https://www.latimes.test/short"))
    auto = add_feed(db, publisher.feed_url("auto", rss(items)))
    always = add_feed(db, publisher.feed_url("always", rss(items)), fulltext="always")
    poller = await make_poller()

    stats = await poller.run_once(NOW)

    assert (stats.pages_fetched, stats.pages_failed) == (3, 0)
    # "auto" fetches only the item without full content; "always" fetches both.
    assert sorted(publisher.requests) == ["www.latimes.test/seed"] + ["www.latimes.test/short"] * 2
    jobs = {(p["feed_id"], p["url"].rsplit("/", 1)[1]): p for p in queued(queue)}
    assert [("page_html" in jobs[auto, k], "page_html" in jobs[always, k]) for k in
            ("seed", "short")] == [(False, True), (True, True)]  # fmt: skip
    # The windows-1252 page decoded by its meta charset gives the same text as the feed.
    assert extract(ItemPayload.from_dict(jobs[always, "seed"])).text == seed.body
    assert burst() == 4
    found = stored(db)
    assert len(found) == 2  # each feed's copy is the other's duplicate
    assert found[seed.title].text == seed.body
    assert found[short.title].text == short.body  # from the page
    assert found[short.title].canonical_url == "https://www.latimes.test/short"


# -- failures lose nothing --------------------------------------------------------------------


async def test_failed_pages_still_store_their_items_from_the_summary(
    publisher: Publisher, make_poller: MakePoller, db: sessionmaker[Session], queue: Queue,
    burst: Callable[[], int], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    body, articles = nyt_site(publisher)
    paths = list(articles)
    origin = publisher.origin("www.nytimes.test")
    broken = {
        paths[0]: "http_404",
        paths[1]: "private_address",  # a literal link-local address, refused before dialling
        paths[2]: "private_address",  # a name that resolves to 10.1.2.3, refused at connect
        paths[3]: "too_large",
        paths[4]: "not_html",
        paths[5]: "http_500",
    }
    del publisher.pages[paths[0]]
    body = body.replace(f"{origin}{paths[1]}".encode(), b"http://169.254.169.254/latest/meta")
    body = body.replace(origin.encode() + paths[2].encode(),
                        f"http://{PRIVATE_HOST}:{publisher.port}{paths[2]}".encode())  # fmt: skip
    publisher.page(paths[3], b"<html><body><p>" + b"x " * PAGE_MAX_BYTES + b"</p></body></html>")
    publisher.page(paths[4], b"\x89PNG\r\n", content_type="image/png")
    publisher.page(paths[5], "<p>oops</p>", status=500)
    add_feed(db, publisher.feed_url("nyt", body))
    poller = await make_poller()

    with caplog.at_level(logging.WARNING, logger="newsdesk.poller"):
        stats = await poller.run_once(NOW)

    n = len(articles)
    assert (stats.enqueued, stats.pages_fetched, stats.pages_failed) == (n, n - 6, 6)
    codes = sorted(r.getMessage().split("code=")[1].split()[0] for r in caplog.records
                   if r.getMessage().startswith("page.failed"))  # fmt: skip
    assert codes == sorted(broken.values())
    assert burst() == n
    found = stored(db)
    assert len(found) == n
    for path, article in articles.items():
        expected = article.paragraphs[0] if path in broken else article.body
        assert words(found[article.title].text) == words(expected)


# -- one article under two URLs ---------------------------------------------------------------


@pytest.mark.parametrize("declares_canonical", [True, False])
async def test_same_article_under_two_urls_is_one_article(
    publisher: Publisher, make_poller: MakePoller, db: sessionmaker[Session],
    burst: Callable[[], int], declares_canonical: bool,
) -> None:  # fmt: skip
    article = latimes_articles()[1]
    origin = publisher.origin("www.latimes.test")
    canonical = "https://www.latimes.test/story/one" if declares_canonical else None
    publisher.page("/story/one", article_page(article, canonical=canonical))
    links = [f"{origin}/story/one", f"{origin}/story/one?utm_source=twitter&fbclid=IwAR0xyz"]
    for name, link in zip(("a", "b"), links, strict=True):
        item = {"title": article.title, "link": link, "summary": article.paragraphs[0]}
        add_feed(db, publisher.feed_url(name, rss([item])))
    poller = await make_poller()

    stats = await poller.run_once(NOW)

    assert stats.pages_fetched == 2
    assert burst() == 2
    (row,) = stored(db).values()
    assert row.text == article.body
    assert row.canonical_url == (canonical or f"{origin}/story/one")
    assert count(db, Sighting) == 2 and count(db, Event) == 1  # one article.created
    assert set(links) <= urls_of(db, row.id)


# -- operating the mode -----------------------------------------------------------------------


async def test_fulltext_mode_over_the_api(
    settings: Settings, db: sessionmaker[Session], auth_headers: dict[str, str]
) -> None:
    feed_id = add_feed(db, "https://a.test/rss")
    async with TestClient(TestServer(create_app(settings)), headers=auth_headers) as client:
        resp = await client.get(f"/v1/feeds/{feed_id}")
        assert (await resp.json())["fulltext"] == "auto"
        resp = await client.patch(f"/v1/feeds/{feed_id}", json={"fulltext": "always"})
        assert resp.status == 200 and (await resp.json())["fulltext"] == "always"
        resp = await client.patch(f"/v1/feeds/{feed_id}", json={"fulltext": "sometimes"})
        problem = await resp.json(content_type=None)
        assert resp.status == 422 and problem["param"] == "fulltext"
    with db() as session:
        assert feeds.get_feed(session, feed_id).fulltext == "always"


def test_fulltext_mode_from_the_command_line(
    settings: Settings, db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for name, value in settings.child_environment().items():
        monkeypatch.setenv(name, value)
    feed_id = add_feed(db, "https://a.test/rss")
    assert main(["feeds", "update", str(feed_id), "--fulltext", "never"]) == 0
    assert any(
        line.split() == ["fulltext", "never"] for line in capsys.readouterr().out.splitlines()
    )
    with db() as session:
        assert feeds.get_feed(session, feed_id).fulltext == "never"
    with pytest.raises(SystemExit):
        main(["feeds", "update", str(feed_id), "--fulltext", "sometimes"])


def test_a_payload_from_before_full_text_mode_still_works() -> None:
    payload = {
        "v": 1, "feed_id": 1, "kind": "feed", "item_key": "k", "content_hash": "h",
        "url": "https://e.test/a", "title": "T", "summary": "<p>S</p>", "content": None,
        "content_type": "text/html", "published": None, "author": None,
    }  # fmt: skip
    assert extract(ItemPayload.from_dict(payload)).text == "S"
