"""The OpenAPI document against the app: same routes, valid schemas, real responses that match,
an offline docs page, and the validation and pagination rules the document promises."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.api.docs import render
from services.api.openapi import document
from services.config import Settings
from services.db import events
from services.db.models import Article, Delivery, DeliveryAttempt, Story
from services.db.subscriptions import create_subscription
from services.webhooks.filters import Filters
from tests.test_api import T0, add_article, add_entity, add_feed

Client = TestClient[web.Request, web.Application]
Json = dict[str, Any]
PROBLEM = "application/problem+json"
METHODS = ("get", "post", "put", "patch", "delete")


# --- seeding -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    """Ids of a small but complete data set: every route has something real to show."""

    feed: int
    article: int
    story: int
    entity: int
    subscription: int
    delivery: int
    event: int


def seed(db: sessionmaker[Session], *, webhook_url: str = "http://127.0.0.1:9/hook") -> Seeded:
    """Feeds, articles in a story, entities, events, a subscription with a delivery."""
    feed = add_feed(db, "https://one.test/rss", title="One")
    other = add_feed(db, "https://two.test/rss")
    person = add_entity(db, "Joe Biden", key="joe biden", count=2, aliases=["Biden"])
    place = add_entity(db, "United States", "place", key="united states", count=1)
    articles = [
        add_article(
            db, f"story {i}", T0 + timedelta(hours=i), canonical_url=f"https://x.test/{i}",
            feeds=[feed] if i % 2 else [feed, other], entities={person: i + 1, place: 1},
            boilerplate={"captions": ["A photo"]},
        )
        for i in range(3)
    ]  # fmt: skip
    now = datetime.now(UTC)
    with db.begin() as s:
        story = Story(article_count=2, first_article_id=articles[0], created_at=T0, updated_at=T0)
        s.add(story)
        s.flush()
        story_id = story.id
        for article_id in articles[:2]:
            row = s.get(Article, article_id)
            assert row is not None
            row.story_id = story_id
        sub = create_subscription(
            s, url=webhook_url, description="tests", event_types=("article.created",),
            filters=Filters(keywords=("story",)), secret="whsec_" + "A" * 43, now=now,
        )  # fmt: skip
        event = events.add_event(
            s, type="article.created", now=now, article_id=articles[0], feed_id=feed,
            payload={"article": {"id": articles[0], "title": "story 0"}},
        )  # fmt: skip
        events.add_event(s, type="feed.error", now=now, feed_id=other, payload={"feed_id": other})
        delivery = Delivery(
            event_id=event, subscription_id=sub.id, status="failed", attempts=1,
            next_attempt_at=now + timedelta(minutes=5), last_attempt_at=now,
            last_status_code=500, last_latency_ms=12, response_excerpt="oops", created_at=now,
        )  # fmt: skip
        s.add(delivery)
        s.flush()
        s.add(
            DeliveryAttempt(
                delivery_id=delivery.id, attempted_at=now, status_code=500, latency_ms=12,
                response_excerpt="oops",
            )
        )  # fmt: skip
        delivery_id = delivery.id
    return Seeded(feed, articles[0], story_id, person, sub.id, delivery_id, event)


# --- the document against the router -----------------------------------------------------------


def app_operations(app: web.Application) -> dict[tuple[str, str], str]:
    """(method, path) -> handler name for every route; aiohttp's implicit HEADs left out."""
    found: dict[tuple[str, str], str] = {}
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        path = route.resource.canonical
        found[(route.method.lower(), path)] = getattr(route.handler, "__name__", "")
    return found


def documented_operations(doc: Json) -> dict[tuple[str, str], str]:
    return {
        (method, path): op["operationId"]
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def test_every_route_is_documented_and_every_documented_route_exists(settings: Settings) -> None:
    app_ops = app_operations(create_app(settings))
    doc_ops = documented_operations(document())

    missing = sorted(set(app_ops) - set(doc_ops))
    extra = sorted(set(doc_ops) - set(app_ops))
    assert not missing, f"routes missing from /openapi.json: {missing}"
    assert not extra, f"documented routes the app does not serve: {extra}"
    # operationId names the handler, so a route moved to another handler is noticed too.
    assert app_ops == doc_ops


def test_document_is_well_formed() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for path, item in doc["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, op in item.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, path)
            for p in op.get("parameters", []):
                Draft202012Validator.check_schema(p["schema"])
            assert op["responses"], (method, path)
            assert "500" in op["responses"] and "400" in op["responses"]
            scopes = [s for req in op["security"] for s in req.get("bearerAuth", [])]
            open_route = path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")
            expected = [] if open_route else ["read" if method == "get" else "write"]
            assert scopes == expected, (method, path)
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


class Contract:
    """Validates responses against the document: status documented, media type, body schema."""

    def __init__(self, doc: Json) -> None:
        self.doc = doc
        self.seen: set[tuple[str, str]] = set()

    def operation(self, method: str, path: str) -> tuple[str, Json]:
        for template, item in self.doc["paths"].items():
            pattern = "^" + re.sub(r"{\w+}", "[^/]+", re.escape(template).replace(r"\{", "{")
                                   .replace(r"\}", "}")) + "$"  # fmt: skip
            if re.match(pattern, path) and method in item:
                return template, item[method]
        raise AssertionError(f"{method.upper()} {path} is not documented")

    async def check(self, resp: Any, method: str, path: str) -> Any:
        template, op = self.operation(method, path.split("?")[0])
        self.seen.add((method, template))
        status = str(resp.status)
        assert status in op["responses"], f"{method} {path}: {status} undocumented"
        documented = op["responses"][status]
        content = documented.get("content", {})
        if not content:
            assert not await resp.read(), f"{method} {path}: {status} should have no body"
            return None
        media = resp.content_type
        assert media in content, f"{method} {path}: {media} not among {list(content)}"
        schema = content[media]["schema"]
        body: Any = await resp.json(content_type=None) if "json" in media else await resp.text()
        root = {"components": self.doc["components"], "allOf": [schema]}
        validator = Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
        assert not errors, f"{method} {path} {status}: " + "; ".join(
            f"{list(e.path)}: {e.message}" for e in errors[:5]
        )
        for name in documented.get("headers", {}):
            if name == "Location":
                assert name in resp.headers, f"{method} {path}: no Location"
        return body


@pytest.fixture
def contract() -> Contract:
    return Contract(document())


async def test_real_responses_of_every_route_match_the_document(
    client: Client, db: sessionmaker[Session], contract: Contract
) -> None:
    ids = seed(db)
    c = contract

    async def call(method: str, path: str, **kw: Any) -> Any:
        resp = await client.request(method.upper(), path, allow_redirects=False, **kw)
        return await c.check(resp, method, path)

    await call("get", "/healthz")
    await call("get", "/readyz")
    await call("get", "/openapi.json")
    await call("get", "/docs")
    await call("get", "/metrics")
    page = await call("get", "/v1/articles?limit=1")
    assert page["next"] and page["next_cursor"]
    await call("get", page["next"])
    await call("get", f"/v1/articles?entity={ids.entity}&feed={ids.feed}")
    await call("get", f"/v1/articles/{ids.article}")
    await call("get", "/v1/articles/999999")
    await call("get", f"/v1/stories/{ids.story}?limit=1")
    await call("get", "/v1/entities?type=person&prefix=joe")
    await call("get", f"/v1/entities/{ids.entity}")
    await call("get", "/v1/feeds?limit=1")
    await call("get", f"/v1/feeds/{ids.feed}")
    created = await call("post", "/v1/feeds", json={"url": "https://new.test/rss", "title": "N"})
    await call("post", "/v1/feeds", json={"url": "https://new.test/rss"})  # 409
    await call("post", "/v1/feeds", json={"url": 5})  # 422
    await call("patch", f"/v1/feeds/{created['id']}", json={"interval": None, "enabled": False})
    await call("post", f"/v1/feeds/{created['id']}/poll")  # 409: disabled
    await call("post", f"/v1/feeds/{ids.feed}/poll")
    await call("get", "/v1/feeds.opml")
    opml = b'<opml version="2.0"><body><outline xmlUrl="https://o.test/rss"/></body></opml>'
    await call("post", "/v1/feeds.opml", data=opml, headers={"Content-Type": "text/x-opml"})
    await call("post", "/v1/feeds.opml", data=b"<html/>")  # 422
    await call("delete", f"/v1/feeds/{created['id']}")
    await call("get", "/v1/subscriptions")
    await call("get", f"/v1/subscriptions/{ids.subscription}")
    sub = await call(
        "post", "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/other", "filters": {"languages": ["en"]}},
    )  # fmt: skip
    await call("post", "/v1/subscriptions", json={"url": "http://127.0.0.1:9/", "filters": 3})
    await call("patch", f"/v1/subscriptions/{sub['id']}", json={"description": "d"})
    await call("post", f"/v1/subscriptions/{sub['id']}/rotate-secret")
    await call("post", f"/v1/subscriptions/{ids.subscription}/test")
    await call("get", f"/v1/subscriptions/{ids.subscription}/deliveries?status=failed")
    await call("get", f"/v1/deliveries/{ids.delivery}")
    await call("post", f"/v1/deliveries/{ids.delivery}/redeliver")
    await call("delete", f"/v1/subscriptions/{sub['id']}")
    stream = await call("get", "/v1/events?limit=1&type=article.created")
    assert stream["next"].endswith(f"after={stream['next_after']}")
    await call("get", "/v1/events?after=abc")  # 400

    documented = {(m, p) for m, p in documented_operations(document())}
    assert documented - c.seen == set(), "every route had at least one response checked"


async def test_requests_without_a_key_are_documented_refusals(
    settings: Settings, db: sessionmaker[Session], contract: Contract
) -> None:
    async with TestClient(TestServer(create_app(settings))) as anonymous:
        for method, path in (("get", "/v1/articles"), ("post", "/v1/feeds")):
            resp = await anonymous.request(method.upper(), path)
            assert resp.status == 401
            await contract.check(resp, method, path)


# --- /docs -------------------------------------------------------------------------------------


async def test_docs_page_is_self_contained_and_lists_every_operation(client: Client) -> None:
    resp = await client.get("/docs")
    page = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/html"
    # Nothing is fetched from elsewhere: no scripts, external stylesheets, fonts or images.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page and "<script" not in page
    for (method, path), op_id in documented_operations(document()).items():
        assert f'id="op-{op_id}"' in page, (method, path)
    assert "bearer" in page.lower() and "problem+json" in page
    assert render(document()) == page


# --- validation: 4xx with a type, a detail and the parameter ------------------------------------


@pytest.mark.parametrize(
    ("path", "param", "code"),
    [("/v1/entities?prefix=%ff", "prefix", "invalid_encoding"),
     ("/v1/entities?%ff=1", "\ufffd", "invalid_encoding"),
     ("/v1/entities?prefix=a%00b", "prefix", "invalid_text"),
     ("/v1/articles?entity=a%00", "entity", "invalid_text"),
     ("/v1/events?limit=%C2%B2", "limit", "invalid"),  # a superscript two is no number
     ("/v1/events?limit=1001", "limit", "invalid"),
     ("/v1/articles?cursor=eyJrIjoiYXJ0aWNsZXMiLCJ2IjpbIjAwMDEtMDEtMDFUMDA6MDA6MDArMTQ6MDAiLDFdfQ",
      "cursor", "invalid"),  # a year-1 time that cannot be moved to UTC
     ("/v1/subscriptions?cursor=x&cursor=y", "cursor", "invalid"),
     ("/openapi.json?x=1", "x", "unknown_parameter")],
)  # fmt: skip
async def test_bad_query_strings_are_400(
    client: Client, contract: Contract, path: str, param: str, code: str
) -> None:
    resp = await client.get(path)
    body = await contract.check(resp, "get", path)
    assert resp.status == 400, body
    assert body["type"] == f"urn:newsdesk:problem:{code}" and body["param"] == param
    assert body["detail"] and body["title"] == "Bad Request"


@pytest.mark.parametrize(
    ("payload", "status", "param", "code"),
    [(b'{"url": "https://x.test/\\u0000"}', 400, "url", "invalid_text"),
     (b'{"url": "https://x.test/", "title": "\\ud800"}', 400, "title", "invalid_text"),
     (b'{"url": "https://x.test/", "ti\\u0000tle": "t"}', 400, "body", "invalid_text"),
     (b'{"url": "https://x.test/\xff"}', 400, "body", "malformed_json"),
     (b"\xef\xbb\xbf{}", 400, "body", "malformed_json"),
     (b"42", 422, "body", "unprocessable"), (b"null", 422, "body", "unprocessable")],
)  # fmt: skip
async def test_bad_bodies_are_4xx(
    client: Client, contract: Contract, payload: bytes, status: int, param: str, code: str
) -> None:
    resp = await client.post(
        "/v1/feeds", data=payload, headers={"Content-Type": "application/json"}
    )
    body = await contract.check(resp, "post", "/v1/feeds")
    assert resp.status == status, body
    assert body["type"] == f"urn:newsdesk:problem:{code}" and body["param"] == param


async def test_nested_body_text_is_checked_and_named(client: Client, contract: Contract) -> None:
    resp = await client.post(
        "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/", "filters": {"keywords": ["ok", "bad\u0000"]}},
    )
    body = await contract.check(resp, "post", "/v1/subscriptions")
    assert resp.status == 400 and body["param"] == "filters.keywords[1]"


# --- pagination: next links everywhere a list can grow ------------------------------------------


async def test_every_list_links_its_next_page(client: Client, db: sessionmaker[Session]) -> None:
    ids = seed(db)
    lists = [
        "/v1/articles?limit=1&entity=joe%20biden", "/v1/entities?limit=1",
        "/v1/feeds?limit=1", f"/v1/stories/{ids.story}?limit=1",
    ]  # fmt: skip
    for path in lists:
        resp = await client.get(path)
        body = await resp.json()
        assert body["next"] and body["next_cursor"], path
        assert resp.headers["Link"] == f'<{body["next"]}>; rel="next"'
        assert body["next"].startswith(path.split("?")[0] + "?")
        assert "limit=1" in body["next"] and f"cursor={body['next_cursor']}" in body["next"]
        following = await (await client.get(body["next"])).json()
        first = body.get("data", body.get("articles"))
        second = following.get("data", following.get("articles"))
        assert first[0]["id"] != second[0]["id"], path
    last = await client.get("/v1/feeds?limit=200")
    assert "Link" not in last.headers and (await last.json())["next"] is None


async def test_next_links_are_absolute_with_a_public_url(
    settings: Settings, db: sessionmaker[Session], auth_headers: dict[str, str]
) -> None:
    seed(db)
    public = settings.with_overrides(public_url="https://news.example")
    async with TestClient(TestServer(create_app(public)), headers=auth_headers) as c:
        body = await (await c.get("/v1/feeds?limit=1")).json()
    assert body["next"].startswith("https://news.example/v1/feeds?limit=1&cursor=")
