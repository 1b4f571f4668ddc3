"""The API's OpenAPI 3.1 document, built from the same constants the handlers validate with.

Tests keep it honest: every route of the app is documented and nothing else is, and real
responses of every route validate against the schemas here (``tests/test_openapi.py``,
``tests/test_contract.py``). The parameters, responses and operation builder it is made of
are in ``services.api.openapi_parts``.
"""

from __future__ import annotations

from functools import cache

from services.api import params, subscriptions
from services.api.openapi_parts import (
    ENTITY_PARAM,
    LINK_HEADER,
    LOCATION_HEADER,
    OPML,
    PAGE,
    SEARCH_PARAM,
    Json,
    conditional,
    json_body,
    not_found,
    op,
    param,
    path_id,
    problem,
    reply,
    unprocessable,
)
from services.api.openapi_schemas import COMPONENT_SCHEMAS, ref
from services.webhooks.filters import EVENT_TYPES

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"

DESCRIPTION = """\
newsdesk watches news sources and serves what they publish as deduplicated articles, the
named entities in them, the feeds they come from, and webhook subscriptions.

**Authentication.** Send an API key as `Authorization: Bearer <key>`. Keys carry scopes:
every route that writes needs `write`; reads need `read` unless the operator has made reads
public. `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and `/docs` are open.

**Errors** are `application/problem+json` (RFC 9457): a stable `type`
(`urn:newsdesk:problem:<code>`), a `title`, the `status`, a `detail` that says what to fix
and, when one part of the request is at fault, the offending `param`. Unknown query
parameters are refused with 400 `unknown_parameter`; a request never answers 5xx because of
what it sent.

**Pagination.** Lists that can grow are keyset-paginated: `limit` (bounded) and an opaque
`cursor`. A page carries `next_cursor` and `next` (the URL of the following page, also sent
as a `Link: <...>; rel="next"` header); both are null on the last page. The event stream
continues with `next_after` instead, which is never null.

**Conditional reads.** Articles, stories and entities answer with a strong `ETag` and
`Cache-Control: no-cache`; send the ETag back as `If-None-Match` and an unchanged answer is
`304 Not Modified` without a body.
"""


def _article_paths() -> Json:
    feed = param("feed", "query", {"type": "integer", "minimum": 1, "maximum": params.MAX_ID},
                 "Only articles seen in this feed.")  # fmt: skip
    return {
        "/v1/articles": conditional({"get": op(
            "list_articles", "articles", "Articles, newest first",
            {"200": reply("A page of articles.", ref("ArticlePage"), LINK_HEADER),
             "404": problem("The `entity` id or `feed` does not exist.", ("not_found",))},
            parameters=(*PAGE, ENTITY_PARAM, feed, SEARCH_PARAM),
        )}),
        "/v1/articles/{id}": conditional({"get": op(
            "get_article", "articles", "One article with its entities, sources and story",
            {"200": reply("The article.", ref("ArticleDetail")),
             "308": {"description": "Reprocessing merged this article into an older copy; "
                     "`Location` is that article.", "headers": LOCATION_HEADER},
             "404": not_found("article")},
            parameters=(path_id("article"),),
        )}),
        "/v1/stories/{id}": conditional({"get": op(
            "get_story", "articles", "A story (near-duplicate articles) and its articles",
            {"200": reply("The story with a page of its articles, newest first.",
                         ref("Story"), LINK_HEADER),
             "404": not_found("story")},
            parameters=(path_id("story"), *PAGE),
        )}),
    }  # fmt: skip


def _entity_paths() -> Json:
    kind = param("type", "query", {"type": "string", "enum": sorted(params.ENTITY_TYPES)},
                 "Only entities of this type.")  # fmt: skip
    prefix = param("prefix", "query", {"type": "string", "maxLength": params.MAX_TEXT_PARAM},
                   "Only entities whose name starts with this, ignoring case.")  # fmt: skip
    return {
        "/v1/entities": conditional({"get": op(
            "list_entities", "entities", "Entities, most mentioned first",
            {"200": reply("A page of entities.", ref("EntityPage"), LINK_HEADER)},
            parameters=(*PAGE, kind, prefix),
        )}),
        "/v1/entities/{id}": conditional({"get": op(
            "get_entity", "entities", "One entity with aliases, counts and co-occurring entities",
            {"200": reply("The entity.", ref("EntityDetail")), "404": not_found("entity")},
            parameters=(path_id("entity"),),
        )}),
    }  # fmt: skip


def _feed_paths() -> Json:
    new_feed = json_body(ref("NewFeed"), "The feed to register.")
    patch = json_body(ref("FeedPatch"), "The fields to change; others stay as they are.")
    opml_body = {"required": True, "description": "An OPML document (at most 1 MiB).",
                 "content": {OPML: {"schema": {"type": "string"}}}}  # fmt: skip
    fid = path_id("feed")
    return {
        "/v1/feeds": {
            "get": op("list_feeds", "feeds", "Feeds in id order",
                      {"200": reply("A page of feeds.", ref("FeedPage"), LINK_HEADER)},
                      parameters=PAGE),
            "post": op(
                "create_feed", "feeds", "Register an HTTP(S) feed, due for polling at once",
                {"201": reply("The new feed.", ref("FeedDetail"), LOCATION_HEADER),
                 "409": problem("A feed with this URL is already registered.", ("conflict",)),
                 "422": unprocessable()},
                body=new_feed, scope="write",
            ),
        },
        "/v1/feeds/{id}": {
            "get": op("get_feed", "feeds", "A feed's health, schedule and recent item errors",
                      {"200": reply("The feed.", ref("FeedDetail")), "404": not_found("feed")},
                      parameters=(fid,)),
            "patch": op(
                "patch_feed", "feeds", "Change a feed's title, interval, state or full-text mode",
                {"200": reply("The feed as changed.", ref("FeedDetail")),
                 "404": not_found("feed"), "422": unprocessable()},
                parameters=(fid,), body=patch, scope="write",
            ),
            "delete": op(
                "delete_feed", "feeds", "Forget a feed and its items (its articles stay)",
                {"204": {"description": "Deleted."}, "404": not_found("feed"),
                 "409": problem("The folder source cannot be deleted; disable it instead.",
                                ("folder_source",))},
                parameters=(fid,), scope="write",
            ),
        },
        "/v1/feeds/{id}/poll": {"post": op(
            "poll_feed", "feeds", "Make a feed due now; the poller picks it up on its next tick",
            {"202": reply("The feed, now due.", ref("FeedDetail")), "404": not_found("feed"),
             "409": problem("The feed is disabled; enable it first.", ("conflict",))},
            parameters=(fid,), scope="write",
        )},
        "/v1/feeds.opml": {
            "get": op("export_opml", "feeds", "Every HTTP feed as OPML 2.0 (streamed)",
                      {"200": {"description": "The OPML document.",
                               "content": {OPML: {"schema": {"type": "string"}}}}}),
            "post": op(
                "import_opml", "feeds", "Register every feed of an OPML document",
                {"200": reply("What the import did.", ref("OpmlImport")),
                 "422": problem("The body is not a usable OPML document.", ("bad_opml",))},
                body=opml_body, scope="write",
            ),
        },
    }  # fmt: skip


def _subscription_paths() -> Json:
    sid = path_id("subscription")
    created = reply("The subscription and its secret, shown this once.",
                   ref("SubscriptionWithSecret"), LOCATION_HEADER)  # fmt: skip
    body_codes = ("invalid", "invalid_filter", "invalid_url", "private_address", "unresolvable")
    status = param("status", "query", {"type": "string", "enum": list(subscriptions.STATUSES)},
                   "Only deliveries in this state.")  # fmt: skip
    return {
        "/v1/subscriptions": {
            "get": op("list_subscriptions", "webhooks", "Webhook subscriptions in id order",
                      {"200": reply("A page of subscriptions.", ref("SubscriptionPage"),
                                   LINK_HEADER)}, parameters=PAGE),
            "post": op(
                "create_subscription", "webhooks", "Register a webhook endpoint",
                {"201": created, "422": unprocessable(*body_codes)},
                body=json_body(ref("NewSubscription"), "The endpoint and what it wants."),
                scope="write",
            ),
        },
        "/v1/subscriptions/{id}": {
            "get": op("get_subscription", "webhooks", "One subscription",
                      {"200": reply("The subscription.", ref("Subscription")),
                       "404": not_found("subscription")}, parameters=(sid,)),
            "patch": op(
                "patch_subscription", "webhooks", "Change a subscription",
                {"200": reply("The subscription as changed.", ref("Subscription")),
                 "404": not_found("subscription"), "422": unprocessable(*body_codes)},
                parameters=(sid,), scope="write",
                body=json_body(ref("SubscriptionPatch"), "The fields to change."),
            ),
            "delete": op("delete_subscription", "webhooks", "Forget a subscription",
                         {"204": {"description": "Deleted."},
                          "404": not_found("subscription")},
                         parameters=(sid,), scope="write"),
        },
        "/v1/subscriptions/{id}/rotate-secret": {"post": op(
            "rotate_secret", "webhooks", "A new signing secret, shown this once",
            {"200": reply("The subscription and its new secret; the old one also signs "
                         "until `rotating_until`.", ref("SubscriptionWithSecret")),
             "404": not_found("subscription")},
            parameters=(sid,), scope="write",
        )},
        "/v1/subscriptions/{id}/test": {"post": op(
            "test_subscription", "webhooks", "Send a signed `webhook.ping` now",
            {"200": reply("What the endpoint answered.", ref("PingResult")),
             "404": not_found("subscription")},
            parameters=(sid,), scope="write",
        )},
        "/v1/subscriptions/{id}/deliveries": {"get": op(
            "list_deliveries", "webhooks", "A subscription's deliveries, newest first",
            {"200": reply("A page of deliveries.", ref("DeliveryPage"), LINK_HEADER),
             "404": not_found("subscription")},
            parameters=(sid, *PAGE, status),
        )},
        "/v1/deliveries/{id}": {"get": op(
            "get_delivery", "webhooks", "One delivery with every attempt",
            {"200": reply("The delivery.", ref("DeliveryDetail")),
             "404": not_found("delivery")},
            parameters=(path_id("delivery"),),
        )},
        "/v1/deliveries/{id}/redeliver": {"post": op(
            "redeliver", "webhooks", "Send a delivery again now, with a fresh retry schedule",
            {"202": reply("The delivery, due now.", ref("Delivery")),
             "404": not_found("delivery"),
             "409": problem("The subscription is disabled, or the delivery is being sent.",
                            ("subscription_disabled", "in_flight"))},
            parameters=(path_id("delivery"),), scope="write",
        )},
    }  # fmt: skip


def _event_paths() -> Json:
    after = param("after", "query", {"type": "integer", "minimum": 0, "maximum": params.MAX_ID,
                                     "default": 0},
                  "Events with an id above this; pass the previous `next_after`.")  # fmt: skip
    limit = param("limit", "query", {"type": "integer", "minimum": 1,
                                     "maximum": subscriptions.MAX_EVENTS_PAGE,
                                     "default": params.DEFAULT_LIMIT},
                  f"Events read, 1 to {subscriptions.MAX_EVENTS_PAGE}.")  # fmt: skip
    kinds = param(
        "type",
        "query",
        {"type": "array", "items": {"enum": list(EVENT_TYPES)}},
        "Only events of these types (repeatable). The filter applies after the "
        "page is read, so a page can be empty while `next_after` moves on.",
    )
    kinds["style"], kinds["explode"] = "form", True
    return {"/v1/events": {"get": op(
        "list_events", "events", "The event stream, oldest first (a gap-free cursor)",
        {"200": reply("Events after `after`; an empty `data` means caught up.",
                     ref("EventPage"), LINK_HEADER)},
        parameters=(after, limit, kinds),
    )}}  # fmt: skip


def _open_paths() -> Json:
    return {
        "/healthz": {"get": op("healthz", "health", "The process is up",
                               {"200": reply("Serving.", ref("Health"))}, scope=None)},
        "/readyz": {"get": op(
            "readyz", "health", "SQL and Redis answer",
            {"200": reply("Ready.", ref("Readiness")),
             "503": problem("A dependency does not answer; `checks` says which.",
                            ("not_ready", "storage_unavailable"))},
            scope=None,
        )},
        "/openapi.json": {"get": op(
            "openapi_document", "meta", "This document",
            {"200": reply("The OpenAPI 3.1 document.", {"type": "object"})}, scope=None,
        )},
        "/docs": {"get": op(
            "docs_page", "meta", "This document as a readable page (works offline)",
            {"200": {"description": "An HTML page.",
                     "content": {"text/html": {"schema": {"type": "string"}}}}},
            scope=None,
        )},
        "/metrics": {"get": op(
            "metrics", "health", "Prometheus metrics of every role (text exposition 0.0.4)",
            {"200": {"description": "Counters, histograms and gauges (README, Metrics).",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}},
            scope=None,
        )},
    }  # fmt: skip


TAGS = [
    {"name": "articles", "description": "Deduplicated articles and stories (near-duplicates)."},
    {"name": "entities", "description": "Named entities found in articles."},
    {"name": "feeds", "description": "Sources: registration, health, polling, OPML."},
    {"name": "webhooks", "description": "Subscriptions, deliveries and redelivery."},
    {"name": "events", "description": "The event stream that webhooks also carry."},
    {"name": "health", "description": "Probes for orchestrators; no key needed."},
    {"name": "meta", "description": "This description of the API."},
]


@cache
def document() -> Json:
    """The OpenAPI 3.1 document of every route ``create_app`` serves."""
    paths: Json = {}
    for part in (_article_paths, _entity_paths, _feed_paths, _subscription_paths,
                 _event_paths, _open_paths):  # fmt: skip
        paths |= part()
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "newsdesk API",
            "version": API_VERSION,
            "description": DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/"}],
        "tags": TAGS,
        "security": [{"bearerAuth": ["read"]}],
        "paths": paths,
        "components": {
            "schemas": COMPONENT_SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from `newsdesk keys create`, with scopes "
                    "`read` and/or `write`.",
                }
            },
        },
    }
