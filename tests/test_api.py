"""The HTTP API against a real database and Redis: shapes, pagination, filters and errors."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.config import Settings
from services.db.models import (
    Article,
    ArticleEntity,
    ArticleUrl,
    Entity,
    EntityAlias,
    Feed,
    Sighting,
)

Client = TestClient[web.Request, web.Application]
Json = dict[str, Any]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PROBLEM = "application/problem+json"


# --- seeding through the ORM ---------------------------------------------------------------


def add_feed(db: sessionmaker[Session], url: str, title: str | None = None) -> int:
    with db.begin() as s:
        feed = Feed(url=url, kind="http", title=title, interval_seconds=900, next_poll_at=T0)
        s.add(feed)
        s.flush()
        return feed.id


def add_entity(
    db: sessionmaker[Session], name: str, type: str = "person", *, key: str | None = None,
    count: int = 0, aliases: Iterable[str] = (),
) -> int:  # fmt: skip
    with db.begin() as s:
        entity = Entity(
            type=type, key=key or name.casefold().replace(".", ""), name=name,
            aliases=list(aliases), article_count=count, first_seen_at=T0, last_seen_at=T0,
        )  # fmt: skip
        s.add(entity)
        s.flush()
        for alias in aliases:  # the API shows aliases from the alias table
            key = alias.casefold().replace(".", "")
            s.add(EntityAlias(entity_id=entity.id, type=type, key=key, alias=alias))
        return entity.id


def add_article(
    db: sessionmaker[Session], title: str, sort_at: datetime, *, canonical_url: str | None = None,
    urls: Iterable[str] = (), feeds: Iterable[int] = (), entities: dict[int, int] | None = None,
    published: bool = True, boilerplate: dict[str, Any] | None = None,
) -> int:  # fmt: skip
    with db.begin() as s:
        article = Article(
            title=title, canonical_url=canonical_url, byline="By Someone",
            published_at=sort_at if published else None, sort_at=sort_at, language="en",
            text=f"{title} body.", summary=f"{title} summary",
            content_hash=hashlib.sha256(title.encode()).hexdigest(),
            boilerplate=boilerplate or {},
        )  # fmt: skip
        s.add(article)
        s.flush()
        for url in urls:
            s.add(ArticleUrl(article_id=article.id, url=url))
        for feed_id in feeds:
            key = f"{title}@{feed_id}"
            s.add(
                Sighting(
                    feed_id=feed_id, item_key=key, item_key_hash=hashlib.sha256(key.encode())
                    .hexdigest(), article_id=article.id, url=f"https://f{feed_id}.test/{title}",
                    content_hash="c", first_seen_at=sort_at,
                )
            )  # fmt: skip
        for offset, (entity_id, mentions) in enumerate((entities or {}).items()):
            s.add(
                ArticleEntity(
                    article_id=article.id, entity_id=entity_id, mentions=mentions,
                    first_offset=offset,
                )
            )  # fmt: skip
        return article.id


async def get_json(client: Client, path: str, status: int = 200) -> Json:
    resp = await client.get(path)
    body: Json = await resp.json(content_type=None)
    assert resp.status == status, body
    if status >= 400:
        assert resp.content_type == PROBLEM
        assert body["status"] == status
        assert body["type"].startswith("urn:newsdesk:problem:")
    return body


async def walk(client: Client, path: str) -> list[Json]:
    """Every item of a listing, following next_cursor to the end."""
    items: list[Json] = []
    url = path
    for _ in range(100):
        body = await get_json(client, url)
        items.extend(body["data"])
        if body["next_cursor"] is None:
            return items
        sep = "&" if "?" in path else "?"
        url = f"{path}{sep}cursor={body['next_cursor']}"
    raise AssertionError("pagination does not end")


# --- articles ----------------------------------------------------------------------------------


async def test_pagination_walks_every_article_once_newest_first(
    client: Client, db: sessionmaker[Session]
) -> None:
    feed = add_feed(db, "https://a.test/rss")
    expected: list[tuple[datetime, int]] = []
    for i in range(23):
        # Groups of three share a timestamp, so the id tie-break crosses page boundaries.
        when = T0 + timedelta(minutes=i // 3, microseconds=7)
        expected.append((when, add_article(db, f"a{i}", when, feeds=[feed])))
    expected.sort(reverse=True)

    items = await walk(client, "/v1/articles?limit=4")

    assert [a["id"] for a in items] == [i for _, i in expected]
    first = items[0]
    assert first["published_at"] == expected[0][0].isoformat().replace("+00:00", "Z")
    assert set(first) == {
        "id", "title", "url", "published_at", "language", "summary", "feed_ids"
    }  # fmt: skip
    assert first["feed_ids"] == [feed]
    default = await get_json(client, "/v1/articles")
    assert len(default["data"]) == 23 and default["next_cursor"] is None


async def test_articles_filtered_by_entity_id_name_and_feed(
    client: Client, db: sessionmaker[Session]
) -> None:
    f1, f2 = add_feed(db, "https://one.test/rss"), add_feed(db, "https://two.test/rss")
    biden = add_entity(db, "Joe Biden", key="joe biden")
    usa = add_entity(db, "United States", "place", key="united states")
    w_person = add_entity(db, "Washington", "person", key="washington")
    w_place = add_entity(db, "Washington", "place", key="washington")
    a1 = add_article(db, "a1", T0, feeds=[f1], entities={biden: 3, usa: 1})
    a2 = add_article(db, "a2", T0 + timedelta(hours=1), feeds=[f2], entities={biden: 1})
    a3 = add_article(db, "a3", T0 + timedelta(hours=2), feeds=[f1, f2], entities={w_person: 1})
    a4 = add_article(db, "a4", T0 + timedelta(hours=3), entities={w_place: 2, usa: 1})

    async def ids(query: str) -> list[int]:
        return [a["id"] for a in (await get_json(client, f"/v1/articles?{query}"))["data"]]

    assert await ids(f"entity={biden}") == [a2, a1]
    assert await ids("entity=joe%20BIDEN") == [a2, a1]
    assert await ids(f"entity={biden}&entity={usa}") == [a1]
    assert await ids(f"entity={biden},{usa}") == [a1]
    assert await ids("entity=united%20states&entity=Joe%20Biden") == [a1]
    assert await ids("entity=Washington") == [a4, a3]  # a name matches every type
    assert await ids("entity=Nobody%20Known") == []
    assert await ids(f"feed={f1}") == [a3, a1]
    assert await ids(f"feed={f2}&entity={biden}") == [a2]
    await get_json(client, "/v1/articles?entity=999999", 404)
    await get_json(client, "/v1/articles?feed=999999", 404)
    body = await get_json(client, "/v1/articles?feed=abc", 400)
    assert body["param"] == "feed"


async def test_article_detail_has_entities_sources_urls(
    client: Client, db: sessionmaker[Session]
) -> None:
    feed = add_feed(db, "https://one.test/rss", title="One")
    biden = add_entity(db, "Joe Biden", key="joe biden")
    usa = add_entity(db, "United States", "place", key="united states")
    article = add_article(
        db, "story", T0, urls=["https://x.test/1?utm=a", "https://x.test/1"], feeds=[feed],
        entities={usa: 1, biden: 4}, boilerplate={"captions": ["A photo"]}, published=False,
    )  # fmt: skip

    body = await get_json(client, f"/v1/articles/{article}")

    assert body["url"] == "https://x.test/1?utm=a"  # no canonical URL: the first alias
    assert body["canonical_url"] is None and body["published_at"] is None
    assert body["urls"] == ["https://x.test/1?utm=a", "https://x.test/1"]
    assert body["text"] == "story body." and body["byline"] == "By Someone"
    assert body["boilerplate"] == {"captions": ["A photo"]}
    assert body["entities"] == [
        {"id": biden, "name": "Joe Biden", "type": "person", "mentions": 4},
        {"id": usa, "name": "United States", "type": "place", "mentions": 1},
    ]
    assert body["sources"] == [
        {
            "feed_id": feed, "feed_title": "One", "feed_url": "https://one.test/rss",
            "item_key": f"story@{feed}", "url": f"https://f{feed}.test/story",
            "first_seen_at": "2024-05-01T12:00:00Z",
        }
    ]  # fmt: skip
    assert body["feed_ids"] == [feed]
    summary = (await get_json(client, "/v1/articles"))["data"][0]
    assert summary["url"] == "https://x.test/1?utm=a"
    await get_json(client, f"/v1/articles/{article + 1000}", 404)


# --- entities ----------------------------------------------------------------------------------


async def test_entities_sorted_by_article_count_with_filters(
    client: Client, db: sessionmaker[Session]
) -> None:
    names = [
        ("New York", "place", 5), ("Newark", "place", 9), ("New York Times", "organization", 5),
        ("Nancy", "person", 1), ("50% Club", "organization", 2), ("50X Club", "organization", 3),
        ("Zed", "person", 9),
    ]  # fmt: skip
    ids = {name: add_entity(db, name, kind, count=count) for name, kind, count in names}

    every = await walk(client, "/v1/entities?limit=2")

    order = sorted(names, key=lambda n: (-n[2], -ids[n[0]]))
    assert [e["id"] for e in every] == [ids[n] for n, _, _ in order]
    assert set(every[0]) == {
        "id", "name", "type", "article_count", "first_seen_at", "last_seen_at"
    }  # fmt: skip

    async def found(query: str) -> list[str]:
        return [e["name"] for e in await walk(client, f"/v1/entities?{query}")]

    assert await found("type=place") == ["Newark", "New York"]
    assert await found("prefix=NEW%20") == ["New York Times", "New York"]
    assert await found("prefix=new&type=place&limit=1") == ["Newark", "New York"]
    assert await found("prefix=50%25") == ["50% Club"]  # % is a literal, not a wildcard
    assert await found("prefix=n_") == []  # so is _
    body = await get_json(client, "/v1/entities?type=planet", 400)
    assert body["param"] == "type"


async def test_entity_detail_with_aliases_and_recent_articles(
    client: Client, db: sessionmaker[Session]
) -> None:
    usa = add_entity(db, "United States", "place", count=3, aliases=["U.S.", "USA"])
    articles = [
        add_article(db, f"s{i}", T0 + timedelta(hours=i), entities={usa: 1}) for i in (0, 1, 2)
    ]

    body = await get_json(client, f"/v1/entities/{usa}")

    assert body["name"] == "United States" and body["type"] == "place"
    assert body["aliases"] == ["U.S.", "USA"] and body["article_count"] == 3
    assert [a["id"] for a in body["recent_articles"]] == articles[::-1]
    await get_json(client, "/v1/entities/424242", 404)


# --- feeds -------------------------------------------------------------------------------------


async def test_create_list_and_inspect_feeds(
    client: Client, db: sessionmaker[Session], settings: Settings
) -> None:
    resp = await client.post("/v1/feeds", json={"url": "HTTPS://News.Example/rss", "title": " N "})
    created = await resp.json()
    assert resp.status == 201, created
    assert resp.headers["Location"] == f"/v1/feeds/{created['id']}"
    assert created["url"] == "https://news.example/rss" and created["title"] == "N"
    assert created["state"] == "active" and created["error_count"] == 0
    assert created["interval_seconds"] == settings.feed_interval
    assert created["next_poll_at"].endswith("Z") and created["item_errors"] == []

    dup = await client.post("/v1/feeds", json={"url": "https://news.example/rss"})
    problem = await dup.json(content_type=PROBLEM)
    assert dup.status == 409 and problem["type"] == "urn:newsdesk:problem:conflict"

    with db.begin() as s:
        s.add(
            Sighting(
                feed_id=created["id"], item_key="guid-1", item_key_hash="h1", content_hash="c",
                error_code="extract_error", error_detail="no text", last_seen_at=T0,
            )
        )  # fmt: skip
        row = s.get(Feed, created["id"])
        assert row is not None
        row.error_count, row.last_error_code, row.last_status = 2, "http_500", 500
    others = [add_feed(db, f"https://f{i}.test/rss") for i in range(4)]

    detail = await get_json(client, f"/v1/feeds/{created['id']}")
    assert detail["state"] == "failing" and detail["last_error_code"] == "http_500"
    assert detail["item_errors"] == [
        {"item_key": "guid-1", "code": "extract_error", "detail": "no text",
         "seen_at": "2024-05-01T12:00:00Z"}
    ]  # fmt: skip
    listed = await walk(client, "/v1/feeds?limit=2")
    assert [f["id"] for f in listed] == [created["id"], *others]
    await get_json(client, "/v1/feeds/77777", 404)


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://x", "not a url", "http://", "https://user:pw@host.test/",
     "http://host.test:99999/", "https://x.test/" + "a" * 2100, 42, None],
)  # fmt: skip
async def test_bad_feed_url_is_422(client: Client, url: object) -> None:
    resp = await client.post("/v1/feeds", json={"url": url})
    body = await resp.json(content_type=PROBLEM)
    assert resp.status == 422, body
    assert body["param"] == "url"


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [(b"{not json", 400, "body"), (b"", 400, "body"), (b"[" * 100_000, 400, "body"),
     (b'["https://x.test/"]', 422, "body"), (b'{"title": "t"}', 422, "url"),
     (b'{"url": "https://x.test/", "color": 1}', 422, "color"),
     (b'{"url": "https://x.test/", "title": 5}', 422, "title")],
)  # fmt: skip
async def test_bad_feed_bodies(client: Client, payload: bytes, status: int, param: str) -> None:
    resp = await client.post(
        "/v1/feeds", data=payload, headers={"Content-Type": "application/json"}
    )
    body = await resp.json(content_type=PROBLEM)
    assert resp.status == status, body
    assert body["param"] == param


async def test_body_over_one_mebibyte_is_413(client: Client) -> None:
    resp = await client.post(
        "/v1/feeds", data=b"x" * 2_000_000, headers={"Content-Type": "application/json"}
    )
    body = await resp.json(content_type=PROBLEM)
    assert resp.status == 413
    assert body["type"] == "urn:newsdesk:problem:too_large"


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "param"),
    [("/v1/articles?limit=0", "limit"), ("/v1/articles?limit=201", "limit"),
     ("/v1/articles?limit=ten", "limit"), ("/v1/articles?limit=1&limit=2", "limit"),
     ("/v1/articles?cursor=garbage!", "cursor"), ("/v1/articles?cursor=e30", "cursor"),
     ("/v1/entities?cursor=eyJrIjoiZmVlZHMiLCJ2IjpbMV19", "cursor"),  # a feeds cursor
     ("/v1/feeds?limit=-1", "limit"), ("/v1/articles/abc", "id"), ("/v1/articles/0", "id"),
     ("/v1/entities/99999999999", "id"), ("/v1/articles?entity=", "entity"),
     ("/v1/articles?colour=red&size=2", "colour, size"), ("/v1/feeds/1?x=1", "x")],
)  # fmt: skip
async def test_bad_requests_are_400_naming_the_parameter(
    client: Client, path: str, param: str
) -> None:
    body = await get_json(client, path, 400)
    assert body["param"] == param
    assert param.split(",")[0] in body["detail"]


async def test_unknown_route_and_wrong_method(client: Client) -> None:
    body = await get_json(client, "/v1/nothing-here", 404)
    assert body["type"] == "urn:newsdesk:problem:not_found"
    resp = await client.delete("/v1/articles")
    problem = await resp.json(content_type=PROBLEM)
    assert resp.status == 405 and problem["type"] == "urn:newsdesk:problem:method_not_allowed"
    assert "GET" in resp.headers["Allow"]


async def test_unexpected_error_is_500_without_internals(
    settings: Settings, caplog: pytest.LogCaptureFixture, auth_headers: dict[str, str]
) -> None:
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app = create_app(settings)
    app.router.add_get("/boom", boom)
    async with TestClient(TestServer(app), headers=auth_headers) as test_client:
        with caplog.at_level(logging.ERROR):
            resp = await test_client.get("/boom")
            text = await resp.text()
    assert resp.status == 500 and resp.content_type == PROBLEM
    assert "secret" not in text and "Traceback" not in text
    assert "secret internals" in caplog.text


# --- health ------------------------------------------------------------------------------------


async def test_health_and_readiness(client: Client) -> None:
    assert await get_json(client, "/healthz") == {"status": "ok"}
    ready = await get_json(client, "/readyz")
    assert ready["status"] == "ok"
    assert ready["checks"] == {"database": "ok", "redis": "ok"}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_readiness_fails_when_redis_is_down(settings: Settings) -> None:
    down = settings.with_overrides(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    async with TestClient(TestServer(create_app(down))) as test_client:
        body = await get_json(test_client, "/readyz", 503)
        assert (await get_json(test_client, "/healthz")) == {"status": "ok"}
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] != "ok"
    assert "redis" in body["detail"] and "database" not in body["detail"]


async def test_server_announces_real_port_and_stops_on_sigterm(settings: Settings) -> None:
    env = {**os.environ, **settings.child_environment(), "NEWSDESK_API_PORT": "0"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.api", env=env, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert line.startswith("newsdesk api listening on http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        assert port > 0
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as resp,
        ):
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
