"""Feed administration over the API: change, delete, poll now, health detail, OPML out and in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.core.opml import OpmlFeed, parse_opml
from services.db import feeds as feeds_repo
from services.db.models import Feed, Sighting

Client = TestClient[web.Request, web.Application]
Json = dict[str, Any]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PROBLEM = "application/problem+json"


def add_feed(db: sessionmaker[Session], url: str, **fields: Any) -> int:
    values: dict[str, Any] = {"kind": "http", "interval_seconds": 900, "next_poll_at": T0}
    with db.begin() as s:
        feed = Feed(url=url, **(values | fields))
        s.add(feed)
        s.flush()
        return feed.id


async def call(
    client: Client, method: str, path: str, status: int, json: Any = None
) -> Json | None:
    resp = await client.request(method, path, json=json)
    if resp.status == 204:
        assert status == 204 and await resp.read() == b""
        return None
    body: Json = await resp.json(content_type=None)
    assert resp.status == status, body
    if status >= 400:
        assert resp.content_type == PROBLEM and body["status"] == status
    return body


def near_now(stamp: str) -> bool:
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return abs(datetime.now(UTC) - when) < timedelta(minutes=1)


# --- PATCH ---------------------------------------------------------------------------------------


async def test_patch_changes_each_field(client: Client, db: sessionmaker[Session]) -> None:
    feed_id = add_feed(db, "https://a.test/rss", title="Old")
    path = f"/v1/feeds/{feed_id}"

    body = await call(client, "PATCH", path, 200, {"title": "  New title "})
    assert body is not None and body["title"] == "New title" and "item_errors" in body
    body = await call(client, "PATCH", path, 200, {"title": None})
    assert body is not None and body["title"] is None

    body = await call(client, "PATCH", path, 200, {"interval": 600})
    assert body is not None
    assert body["interval_override"] == 600 and body["interval_seconds"] == 600
    body = await call(client, "PATCH", path, 200, {"interval": None})
    assert body is not None and body["interval_override"] is None  # adaptive again

    body = await call(client, "PATCH", path, 200, {"enabled": False})
    assert body is not None and body["state"] == "disabled"
    assert body["disabled_reason"] == "operator" and body["disabled_at"] is not None
    body = await call(client, "PATCH", path, 200, {"enabled": True, "title": "Both"})
    assert body is not None and body["state"] == "active" and body["title"] == "Both"

    detail = await call(client, "GET", path, 200)
    assert detail is not None and detail["title"] == "Both" and detail["disabled_at"] is None


@pytest.mark.parametrize(
    ("payload", "param"),
    [({"colour": "red"}, "colour"), ({"title": "t", "url": "https://b.test/"}, "url"),
     ({"interval": 299}, "interval"), ({"interval": 86_401}, "interval"),
     ({"interval": "600"}, "interval"), ({"interval": 600.5}, "interval"),
     ({"interval": True}, "interval"), ({"enabled": "yes"}, "enabled"),
     ({"enabled": None}, "enabled"), ({"title": 5}, "title"), ({"title": "x" * 1001}, "title"),
     (["title"], "body")],
)  # fmt: skip
async def test_patch_validation_is_422_naming_the_field(
    client: Client, db: sessionmaker[Session], payload: Any, param: str
) -> None:
    feed_id = add_feed(db, "https://a.test/rss", title="Kept")
    body = await call(client, "PATCH", f"/v1/feeds/{feed_id}", 422, payload)
    assert body is not None and body["param"] == param
    detail = await call(client, "GET", f"/v1/feeds/{feed_id}", 200)
    assert detail is not None and detail["title"] == "Kept"


async def test_patch_interval_bounds_come_from_settings(
    client: Client, db: sessionmaker[Session], settings: Settings
) -> None:
    feed_id = add_feed(db, "https://a.test/rss")
    for interval in (settings.feed_min_interval, settings.feed_max_interval):
        body = await call(client, "PATCH", f"/v1/feeds/{feed_id}", 200, {"interval": interval})
        assert body is not None and body["interval_override"] == interval


async def test_patch_malformed_json_missing_feed_and_bad_id(client: Client) -> None:
    resp = await client.patch(
        "/v1/feeds/1", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400 and (await resp.json(content_type=PROBLEM))["param"] == "body"
    await call(client, "PATCH", "/v1/feeds/4242", 404, {"title": "x"})
    body = await call(client, "PATCH", "/v1/feeds/abc", 400, {"title": "x"})
    assert body is not None and body["param"] == "id"


async def test_enable_after_disable_clears_the_error_state(
    client: Client, db: sessionmaker[Session]
) -> None:
    feed_id = add_feed(
        db, "https://broken.test/rss", disabled_at=T0, disabled_reason="outage", error_count=9,
        first_error_at=T0 - timedelta(days=7), throttled_until=T0, last_error_code="timeout",
        last_error_detail="timed out", next_poll_at=T0 + timedelta(days=1),
    )  # fmt: skip
    before = await call(client, "GET", f"/v1/feeds/{feed_id}", 200)
    assert before is not None and before["state"] == "disabled"
    assert before["disabled_reason"] == "outage"

    body = await call(client, "PATCH", f"/v1/feeds/{feed_id}", 200, {"enabled": True})

    assert body is not None
    assert body["state"] == "active" and body["disabled_reason"] is None
    assert body["error_count"] == 0 and body["first_error_at"] is None
    assert body["throttled_until"] is None and near_now(body["next_poll_at"])


# --- DELETE and poll -----------------------------------------------------------------------------


async def test_delete_feed(client: Client, db: sessionmaker[Session]) -> None:
    feed_id = add_feed(db, "https://gone.test/rss")
    keep = add_feed(db, "https://kept.test/rss")
    with db.begin() as s:
        s.add(Sighting(feed_id=feed_id, item_key="k", item_key_hash="h", content_hash="c",
                       error_code="extract_error", error_detail="x", last_seen_at=T0))  # fmt: skip

    assert await call(client, "DELETE", f"/v1/feeds/{feed_id}", 204) is None

    await call(client, "GET", f"/v1/feeds/{feed_id}", 404)
    await call(client, "DELETE", f"/v1/feeds/{feed_id}", 404)
    await call(client, "GET", f"/v1/feeds/{keep}", 200)


async def test_the_folder_source_cannot_be_deleted(
    client: Client, db: sessionmaker[Session]
) -> None:
    folder = add_feed(db, "folder:/srv/seeds", kind="folder")

    body = await call(client, "DELETE", f"/v1/feeds/{folder}", 409)

    assert body is not None and body["type"] == "urn:newsdesk:problem:folder_source"
    assert "folder source" in body["detail"] and "NEWSDESK_SEEDS_DIR" in body["detail"]
    await call(client, "GET", f"/v1/feeds/{folder}", 200)


async def test_poll_now(client: Client, db: sessionmaker[Session]) -> None:
    feed_id = add_feed(db, "https://a.test/rss", next_poll_at=T0 + timedelta(days=365),
                       throttled_until=T0 + timedelta(days=365))  # fmt: skip

    body = await call(client, "POST", f"/v1/feeds/{feed_id}/poll", 202)

    assert body is not None and body["id"] == feed_id and near_now(body["next_poll_at"])
    assert body["throttled_until"] is None
    await call(client, "PATCH", f"/v1/feeds/{feed_id}", 200, {"enabled": False})
    refused = await call(client, "POST", f"/v1/feeds/{feed_id}/poll", 409)
    assert refused is not None and "disabled" in refused["detail"]
    await call(client, "POST", "/v1/feeds/5555/poll", 404)


# --- detail --------------------------------------------------------------------------------------


async def test_detail_shows_the_health_fields(client: Client, db: sessionmaker[Session]) -> None:
    feed_id = add_feed(
        db, "https://new.test/rss", title="Moved", etag='"abc"', last_status=503,
        error_count=3, last_error_code="http_503", last_error_detail="Service Unavailable",
        first_error_at=T0 - timedelta(hours=2), throttled_until=T0 + timedelta(hours=1),
        last_success_at=T0 - timedelta(days=1), last_polled_at=T0, interval_seconds=1800,
        interval_override=1800, ttl_seconds=3600, moved_from="https://old.test/rss",
    )  # fmt: skip
    with db.begin() as s:
        s.add(Sighting(feed_id=feed_id, item_key="guid-9", item_key_hash="h9", content_hash="c",
                       error_code="too_large", error_detail="big", last_seen_at=T0))  # fmt: skip

    body = await call(client, "GET", f"/v1/feeds/{feed_id}", 200)

    assert body is not None
    expected = {
        "state": "throttled", "disabled_reason": None, "last_status": 503, "error_count": 3,
        "last_error_code": "http_503", "last_error_detail": "Service Unavailable",
        "first_error_at": "2024-05-01T10:00:00Z", "throttled_until": "2024-05-01T13:00:00Z",
        "last_success_at": "2024-04-30T12:00:00Z", "last_polled_at": "2024-05-01T12:00:00Z",
        "next_poll_at": "2024-05-01T12:00:00Z", "interval_seconds": 1800,
        "interval_override": 1800, "ttl_seconds": 3600, "moved_from": "https://old.test/rss",
        "has_etag": True, "has_last_modified": False,
    }  # fmt: skip
    assert {key: body[key] for key in expected} == expected
    assert "etag" not in body and "last_modified" not in body  # validators stay internal
    assert [e["item_key"] for e in body["item_errors"]] == ["guid-9"]


# --- OPML ----------------------------------------------------------------------------------------


async def test_opml_export_streams_every_http_feed(
    client: Client, db: sessionmaker[Session]
) -> None:
    n = 1234  # more than two export pages
    with db.begin() as s:
        s.add(Feed(url="folder:/srv/seeds", kind="folder", interval_seconds=5, next_poll_at=T0))
        s.add_all(
            Feed(url=f"https://f{i}.test/rss?a=1&b=2", kind="http", interval_seconds=900,
                 next_poll_at=T0, title=None if i % 7 == 0 else f"Feed <{i}> & co",
                 site_url=f"https://f{i}.test/" if i % 2 else None)
            for i in range(n)
        )  # fmt: skip

    resp = await client.get("/v1/feeds.opml")

    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/x-opml; charset=utf-8"
    assert "attachment" in resp.headers["Content-Disposition"]
    exported = parse_opml(await resp.read())
    assert exported == [
        OpmlFeed(
            url=f"https://f{i}.test/rss?a=1&b=2",
            title=None if i % 7 == 0 else f"Feed <{i}> & co",
            html_url=f"https://f{i}.test/" if i % 2 else None,
        )
        for i in range(n)
    ]


async def test_opml_export_of_no_feeds_and_bad_query(client: Client) -> None:
    resp = await client.get("/v1/feeds.opml")
    assert resp.status == 200 and parse_opml(await resp.read()) == []
    body = await call(client, "GET", "/v1/feeds.opml?x=1", 400)
    assert body is not None and body["param"] == "x"


async def test_opml_export_head_sends_headers_only(client: Client) -> None:
    await client.post("/v1/feeds", json={"url": "https://head.test/rss"})
    resp = await client.head("/v1/feeds.opml")
    assert resp.status == 200 and resp.content_type == "text/x-opml"
    assert await resp.read() == b""
    # The connection is still sound for the next request.
    again = await client.get("/v1/feeds.opml")
    assert [f.url for f in parse_opml(await again.read())] == ["https://head.test/rss"]


async def test_opml_export_failing_midway_breaks_the_transfer(
    client: Client, db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with db.begin() as s:
        s.add_all(
            Feed(url=f"https://f{i}.test/", kind="http", interval_seconds=900, next_poll_at=T0)
            for i in range(600)
        )
    real = feeds_repo.list_feeds

    def failing(session: Session, *, after_id: int = 0, limit: int = 100) -> Any:
        if after_id:
            raise RuntimeError("database went away")
        return real(session, after_id=after_id, limit=limit)

    monkeypatch.setattr(feeds_repo, "list_feeds", failing)
    resp = await client.get("/v1/feeds.opml")
    assert resp.status == 200  # the status line went out with the first page
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


NESTED = b"""<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head><title>Reader export</title></head>
  <body>
    <outline text="News">
      <outline text="World">
        <outline type="rss" text="World One" xmlUrl="HTTPS://World.test/rss"/>
        <outline type="rss" text="Known" xmlUrl="https://known.test/rss"/>
      </outline>
      <outline type="rss" title="Local" xmlUrl="https://local.test/atom" htmlUrl="https://local.test/"/>
    </outline>
    <outline text="Tech">
      <outline type="rss" text="World again" xmlUrl="https://world.test/rss"/>
      <outline type="rss" text="Broken" xmlUrl="ftp://files.test/feed"/>
      <outline type="rss" text="No URL" xmlUrl=""/>
    </outline>
    <outline type="rss" text="Untitled" xmlUrl="https://untitled.test/rss"/>
  </body>
</opml>
"""


async def test_opml_import_creates_skips_and_reports(
    client: Client, db: sessionmaker[Session]
) -> None:
    known = add_feed(db, "https://known.test/rss", title="Mine")

    resp = await client.post("/v1/feeds.opml", data=NESTED)
    body = await resp.json()

    assert resp.status == 200, body
    assert body["created"] == 3 and body["existing"] == 2
    assert body["invalid"] == [
        {"url": "ftp://files.test/feed", "detail": "url must be an http:// or https:// URL"},
        {"url": "", "detail": "url must be an http:// or https:// URL"},
    ]
    listing = await call(client, "GET", "/v1/feeds?limit=200", 200)
    assert listing is not None
    by_url = {f["url"]: f for f in listing["data"]}
    assert {url: f["title"] for url, f in by_url.items()} == {
        "https://known.test/rss": "Mine",  # an existing feed is left as it is
        "https://world.test/rss": "World One",
        "https://local.test/atom": "Local",
        "https://untitled.test/rss": "Untitled",
    }
    assert by_url["https://known.test/rss"]["id"] == known
    assert all(f["state"] == "active" for f in by_url.values())

    again = await client.post("/v1/feeds.opml", data=NESTED)
    assert (await again.json())["created"] == 0


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"", "not well-formed"), (b"<rss/>", "not <opml>"),
     (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><opml><body/></opml>', "DOCTYPE")],
)  # fmt: skip
async def test_opml_import_refuses_bad_documents(
    client: Client, payload: bytes, message: str
) -> None:
    resp = await client.post("/v1/feeds.opml", data=payload)
    body = await resp.json(content_type=PROBLEM)
    assert resp.status == 422, body
    assert body["type"] == "urn:newsdesk:problem:bad_opml" and body["param"] == "body"
    assert message in body["detail"]


async def test_opml_import_over_one_mebibyte_is_413(client: Client) -> None:
    resp = await client.post("/v1/feeds.opml", data=b"<opml>" + b" " * 1_100_000)
    assert resp.status == 413
