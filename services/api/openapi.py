"""The API's OpenAPI 3.1 document, built from the same constants the handlers validate with.

Tests keep it honest: every route of the app is documented and nothing else is, and real
responses of every route validate against the schemas here (``tests/test_openapi.py``,
``tests/test_contract.py``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from services.api import params, subscriptions
from services.api.context import MAX_LINE_BYTES
from services.api.openapi_schemas import COMPONENT_SCHEMAS, ref
from services.core import search
from services.webhooks.filters import EVENT_TYPES

Json = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
PROBLEM = "application/problem+json"
JSON = "application/json"
OPML = "text/x-opml"

# Problem types every route can answer with, whatever its parameters.
BAD_REQUEST = ("invalid", "unknown_parameter", "invalid_encoding")

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


def _param(
    name: str, where: str, schema: Json, description: str, *, required: bool = False
) -> Json:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema,
    }


def _path_id(noun: str) -> Json:
    return _param("id", "path", {"type": "integer", "minimum": 1, "maximum": params.MAX_ID},
                  f"The {noun}'s id.") | {"example": 1}  # fmt: skip


LIMIT = _param(
    "limit", "query",
    {"type": "integer", "minimum": 1, "maximum": params.MAX_LIMIT,
     "default": params.DEFAULT_LIMIT},
    f"Items per page, 1 to {params.MAX_LIMIT}.",
)  # fmt: skip
CURSOR = _param(
    "cursor", "query", {"type": "string", "minLength": 1, "maxLength": params.MAX_CURSOR_CHARS},
    "Opaque: the `next_cursor` of the previous page of the same listing.",
)  # fmt: skip
PAGE = (LIMIT, CURSOR)


def _problem(description: str, codes: tuple[str, ...] | None) -> Json:
    """A problem+json response; ``codes`` lists the ``type`` codes it may carry (None: any)."""
    schema: Json = ref("Problem")
    if codes:
        types = [f"urn:newsdesk:problem:{code}" for code in sorted(set(codes))]
        schema = {"allOf": [ref("Problem"), {"properties": {"type": {"enum": types}}}]}
    text = description
    if codes:
        text += " Types: " + ", ".join(f"`{c}`" for c in sorted(set(codes))) + "."
    return {"description": text, "content": {PROBLEM: {"schema": schema}}}


def _json(description: str, schema: Json, headers: Json | None = None) -> Json:
    response: Json = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


LINK_HEADER = {
    "Link": {
        "description": 'The next page, as `<url>; rel="next"`; absent on the last page.',
        "schema": {"type": "string"},
    }
}
LOCATION_HEADER = {
    "Location": {"description": "The new resource's path.", "schema": {"type": "string"}}
}
VALIDATOR_HEADERS = {
    "ETag": {"description": "A strong validator of this exact body; send it back as "
             "`If-None-Match` to be told `304` while it is current.",
             "schema": {"type": "string"}},
    "Cache-Control": {"description": "`no-cache`: a copy may be kept but must be revalidated.",
                      "schema": {"type": "string"}},
}  # fmt: skip
IF_NONE_MATCH = _param(
    "If-None-Match", "header", {"type": "string", "maxLength": MAX_LINE_BYTES},
    "ETags of copies the client holds (or `*`): when one is the current body's, the answer is "
    "`304 Not Modified` without a body.",
)  # fmt: skip


def _common(*, body: bool, secured: bool) -> Json:
    """Responses shared by every route of the kind: auth, size, rate limit, storage."""
    responses: Json = {}
    if secured:
        responses["401"] = _problem(
            "No API key was sent, or it is not a valid one.", ("unauthorized", "invalid_key")
        )
        responses["403"] = _problem(
            "The API key lacks the scope this route needs.", ("insufficient_scope",)
        )
        responses["429"] = {
            **_problem(
                "Too many requests for this key (or address); wait `Retry-After` seconds.",
                ("rate_limited",),
            ),
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}},
        }
    if body:
        responses["413"] = _problem("The request body is larger than 1 MiB.", ("too_large",))
    responses["500"] = _problem("An unexpected failure (a bug); nothing internal is shown.",
                                ("internal",))  # fmt: skip
    responses["503"] = {
        **_problem("The database is unavailable; retry after `Retry-After` seconds.",
                   ("storage_unavailable",)),
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}},
    }  # fmt: skip
    return responses


def _op(
    op_id: str, tag: str, summary: str, responses: Json, *, description: str = "",
    parameters: tuple[Json, ...] = (), body: Json | None = None, scope: str | None = "read",
) -> Json:  # fmt: skip
    """One operation, with the error responses every route of its kind can give."""
    operation: Json = {"operationId": op_id, "tags": [tag], "summary": summary}
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = body
    operation["security"] = [{"bearerAuth": [scope]}] if scope else []
    texts = body is not None or any(p["in"] == "query" for p in parameters)
    codes = (*BAD_REQUEST, *(("invalid_text",) if texts else ()))
    codes += ("malformed_json",) if body is not None and JSON in body["content"] else ()
    every: Json = {"400": _problem("A parameter or the body is malformed; see `param`.", codes)}
    # aiohttp's HTTP parser refuses oversized request lines and headers before any handler
    # runs, with a plain-text body.
    every["400"]["description"] += (
        f" A request line or header over {MAX_LINE_BYTES} bytes is refused by the HTTP layer"
        " before the API sees it, as `text/plain`."
    )
    every["400"]["content"]["text/plain"] = {"schema": {"type": "string"}}
    every |= _common(body=body is not None or scope == "write", secured=scope is not None)
    operation["responses"] = dict(sorted((responses | every).items()))
    return operation


def _conditional(path: Json) -> Json:
    """The GET of ``path`` as a route of the response cache: ETag, If-None-Match and 304."""
    operation = path["get"]
    operation["parameters"] = [*operation.get("parameters", []), IF_NONE_MATCH]
    ok = operation["responses"]["200"]
    ok["headers"] = {**ok.get("headers", {}), **VALIDATOR_HEADERS}
    operation["responses"]["304"] = {
        "description": "`If-None-Match` names the current body's ETag: the copy is current.",
        "headers": VALIDATOR_HEADERS,
    }
    operation["responses"] = dict(sorted(operation["responses"].items()))
    return path


def _json_body(schema: Json, description: str) -> Json:
    return {"required": True, "description": description, "content": {JSON: {"schema": schema}}}


def _not_found(noun: str) -> Json:
    return _problem(f"No {noun} with that id.", ("not_found",))


def _unprocessable(*codes: str) -> Json:
    return _problem("The body is JSON but a field is wrong; `param` names it.",
                    ("unprocessable", *codes))  # fmt: skip


ENTITY_PARAM = _param(
    "entity", "query",
    {"type": "array", "maxItems": params.MAX_ENTITY_REFS,
     "items": {"type": "string", "minLength": 1, "maxLength": params.MAX_TEXT_PARAM}},
    "An entity id, name or alias; repeat it to require several entities (all must match). "
    "One value may also list ids separated by commas. An unknown id is a 404; an unknown "
    "name matches nothing.",
)  # fmt: skip
ENTITY_PARAM["style"], ENTITY_PARAM["explode"] = "form", True


SEARCH_PARAM = _param(
    "q", "query", {"type": "string", "minLength": 1, "maxLength": search.MAX_QUERY_CHARS},
    "Full-text search in titles and text; matches stay newest first. Words are ANDed; "
    '`"a phrase"` matches words in order; `OR` (upper case) between terms matches either; '
    "`-word` or `-\"a phrase\"` excludes; `word*` is a prefix (3 characters or more). "
    "Words are letters and digits (other characters separate them) and are matched by their "
    f"English stem. At most {search.MAX_WORDS} words. A query this syntax does not allow "
    "(unbalanced quotes, nothing to search for, an OR at an end) is a 400 `invalid` naming `q`.",
)  # fmt: skip


def _article_paths() -> Json:
    feed = _param("feed", "query", {"type": "integer", "minimum": 1, "maximum": params.MAX_ID},
                  "Only articles seen in this feed.")  # fmt: skip
    return {
        "/v1/articles": _conditional({"get": _op(
            "list_articles", "articles", "Articles, newest first",
            {"200": _json("A page of articles.", ref("ArticlePage"), LINK_HEADER),
             "404": _problem("The `entity` id or `feed` does not exist.", ("not_found",))},
            parameters=(*PAGE, ENTITY_PARAM, feed, SEARCH_PARAM),
        )}),
        "/v1/articles/{id}": _conditional({"get": _op(
            "get_article", "articles", "One article with its entities, sources and story",
            {"200": _json("The article.", ref("ArticleDetail")),
             "308": {"description": "Reprocessing merged this article into an older copy; "
                     "`Location` is that article.", "headers": LOCATION_HEADER},
             "404": _not_found("article")},
            parameters=(_path_id("article"),),
        )}),
        "/v1/stories/{id}": _conditional({"get": _op(
            "get_story", "articles", "A story (near-duplicate articles) and its articles",
            {"200": _json("The story with a page of its articles, newest first.",
                          ref("Story"), LINK_HEADER),
             "404": _not_found("story")},
            parameters=(_path_id("story"), *PAGE),
        )}),
    }  # fmt: skip


def _entity_paths() -> Json:
    kind = _param("type", "query", {"type": "string", "enum": sorted(params.ENTITY_TYPES)},
                  "Only entities of this type.")  # fmt: skip
    prefix = _param("prefix", "query", {"type": "string", "maxLength": params.MAX_TEXT_PARAM},
                    "Only entities whose name starts with this, ignoring case.")  # fmt: skip
    return {
        "/v1/entities": _conditional({"get": _op(
            "list_entities", "entities", "Entities, most mentioned first",
            {"200": _json("A page of entities.", ref("EntityPage"), LINK_HEADER)},
            parameters=(*PAGE, kind, prefix),
        )}),
        "/v1/entities/{id}": _conditional({"get": _op(
            "get_entity", "entities", "One entity with aliases, counts and co-occurring entities",
            {"200": _json("The entity.", ref("EntityDetail")), "404": _not_found("entity")},
            parameters=(_path_id("entity"),),
        )}),
    }  # fmt: skip


def _feed_paths() -> Json:
    new_feed = _json_body(ref("NewFeed"), "The feed to register.")
    patch = _json_body(ref("FeedPatch"), "The fields to change; others stay as they are.")
    opml_body = {"required": True, "description": "An OPML document (at most 1 MiB).",
                 "content": {OPML: {"schema": {"type": "string"}}}}  # fmt: skip
    fid = _path_id("feed")
    return {
        "/v1/feeds": {
            "get": _op("list_feeds", "feeds", "Feeds in id order",
                       {"200": _json("A page of feeds.", ref("FeedPage"), LINK_HEADER)},
                       parameters=PAGE),
            "post": _op(
                "create_feed", "feeds", "Register an HTTP(S) feed, due for polling at once",
                {"201": _json("The new feed.", ref("FeedDetail"), LOCATION_HEADER),
                 "409": _problem("A feed with this URL is already registered.", ("conflict",)),
                 "422": _unprocessable()},
                body=new_feed, scope="write",
            ),
        },
        "/v1/feeds/{id}": {
            "get": _op("get_feed", "feeds", "A feed's health, schedule and recent item errors",
                       {"200": _json("The feed.", ref("FeedDetail")), "404": _not_found("feed")},
                       parameters=(fid,)),
            "patch": _op(
                "patch_feed", "feeds", "Change a feed's title, interval, state or full-text mode",
                {"200": _json("The feed as changed.", ref("FeedDetail")),
                 "404": _not_found("feed"), "422": _unprocessable()},
                parameters=(fid,), body=patch, scope="write",
            ),
            "delete": _op(
                "delete_feed", "feeds", "Forget a feed and its items (its articles stay)",
                {"204": {"description": "Deleted."}, "404": _not_found("feed"),
                 "409": _problem("The folder source cannot be deleted; disable it instead.",
                                 ("folder_source",))},
                parameters=(fid,), scope="write",
            ),
        },
        "/v1/feeds/{id}/poll": {"post": _op(
            "poll_feed", "feeds", "Make a feed due now; the poller picks it up on its next tick",
            {"202": _json("The feed, now due.", ref("FeedDetail")), "404": _not_found("feed"),
             "409": _problem("The feed is disabled; enable it first.", ("conflict",))},
            parameters=(fid,), scope="write",
        )},
        "/v1/feeds.opml": {
            "get": _op("export_opml", "feeds", "Every HTTP feed as OPML 2.0 (streamed)",
                       {"200": {"description": "The OPML document.",
                                "content": {OPML: {"schema": {"type": "string"}}}}}),
            "post": _op(
                "import_opml", "feeds", "Register every feed of an OPML document",
                {"200": _json("What the import did.", ref("OpmlImport")),
                 "422": _problem("The body is not a usable OPML document.", ("bad_opml",))},
                body=opml_body, scope="write",
            ),
        },
    }  # fmt: skip


def _subscription_paths() -> Json:
    sid = _path_id("subscription")
    created = _json("The subscription and its secret, shown this once.",
                    ref("SubscriptionWithSecret"), LOCATION_HEADER)  # fmt: skip
    body_codes = ("invalid", "invalid_filter", "invalid_url", "private_address", "unresolvable")
    status = _param("status", "query", {"type": "string", "enum": list(subscriptions.STATUSES)},
                    "Only deliveries in this state.")  # fmt: skip
    return {
        "/v1/subscriptions": {
            "get": _op("list_subscriptions", "webhooks", "Webhook subscriptions in id order",
                       {"200": _json("A page of subscriptions.", ref("SubscriptionPage"),
                                     LINK_HEADER)}, parameters=PAGE),
            "post": _op(
                "create_subscription", "webhooks", "Register a webhook endpoint",
                {"201": created, "422": _unprocessable(*body_codes)},
                body=_json_body(ref("NewSubscription"), "The endpoint and what it wants."),
                scope="write",
            ),
        },
        "/v1/subscriptions/{id}": {
            "get": _op("get_subscription", "webhooks", "One subscription",
                       {"200": _json("The subscription.", ref("Subscription")),
                        "404": _not_found("subscription")}, parameters=(sid,)),
            "patch": _op(
                "patch_subscription", "webhooks", "Change a subscription",
                {"200": _json("The subscription as changed.", ref("Subscription")),
                 "404": _not_found("subscription"), "422": _unprocessable(*body_codes)},
                parameters=(sid,), scope="write",
                body=_json_body(ref("SubscriptionPatch"), "The fields to change."),
            ),
            "delete": _op("delete_subscription", "webhooks", "Forget a subscription",
                          {"204": {"description": "Deleted."},
                           "404": _not_found("subscription")},
                          parameters=(sid,), scope="write"),
        },
        "/v1/subscriptions/{id}/rotate-secret": {"post": _op(
            "rotate_secret", "webhooks", "A new signing secret, shown this once",
            {"200": _json("The subscription and its new secret; the old one also signs "
                          "until `rotating_until`.", ref("SubscriptionWithSecret")),
             "404": _not_found("subscription")},
            parameters=(sid,), scope="write",
        )},
        "/v1/subscriptions/{id}/test": {"post": _op(
            "test_subscription", "webhooks", "Send a signed `webhook.ping` now",
            {"200": _json("What the endpoint answered.", ref("PingResult")),
             "404": _not_found("subscription")},
            parameters=(sid,), scope="write",
        )},
        "/v1/subscriptions/{id}/deliveries": {"get": _op(
            "list_deliveries", "webhooks", "A subscription's deliveries, newest first",
            {"200": _json("A page of deliveries.", ref("DeliveryPage"), LINK_HEADER),
             "404": _not_found("subscription")},
            parameters=(sid, *PAGE, status),
        )},
        "/v1/deliveries/{id}": {"get": _op(
            "get_delivery", "webhooks", "One delivery with every attempt",
            {"200": _json("The delivery.", ref("DeliveryDetail")),
             "404": _not_found("delivery")},
            parameters=(_path_id("delivery"),),
        )},
        "/v1/deliveries/{id}/redeliver": {"post": _op(
            "redeliver", "webhooks", "Send a delivery again now, with a fresh retry schedule",
            {"202": _json("The delivery, due now.", ref("Delivery")),
             "404": _not_found("delivery"),
             "409": _problem("The subscription is disabled, or the delivery is being sent.",
                             ("subscription_disabled", "in_flight"))},
            parameters=(_path_id("delivery"),), scope="write",
        )},
    }  # fmt: skip


def _event_paths() -> Json:
    after = _param("after", "query", {"type": "integer", "minimum": 0, "maximum": params.MAX_ID,
                                      "default": 0},
                   "Events with an id above this; pass the previous `next_after`.")  # fmt: skip
    limit = _param("limit", "query", {"type": "integer", "minimum": 1,
                                      "maximum": subscriptions.MAX_EVENTS_PAGE,
                                      "default": params.DEFAULT_LIMIT},
                   f"Events read, 1 to {subscriptions.MAX_EVENTS_PAGE}.")  # fmt: skip
    kinds = _param(
        "type",
        "query",
        {"type": "array", "items": {"enum": list(EVENT_TYPES)}},
        "Only events of these types (repeatable). The filter applies after the "
        "page is read, so a page can be empty while `next_after` moves on.",
    )
    kinds["style"], kinds["explode"] = "form", True
    return {"/v1/events": {"get": _op(
        "list_events", "events", "The event stream, oldest first (a gap-free cursor)",
        {"200": _json("Events after `after`; an empty `data` means caught up.",
                      ref("EventPage"), LINK_HEADER)},
        parameters=(after, limit, kinds),
    )}}  # fmt: skip


def _open_paths() -> Json:
    return {
        "/healthz": {"get": _op("healthz", "health", "The process is up",
                                {"200": _json("Serving.", ref("Health"))}, scope=None)},
        "/readyz": {"get": _op(
            "readyz", "health", "SQL and Redis answer",
            {"200": _json("Ready.", ref("Readiness")),
             "503": _problem("A dependency does not answer; `checks` says which.",
                             ("not_ready", "storage_unavailable"))},
            scope=None,
        )},
        "/openapi.json": {"get": _op(
            "openapi_document", "meta", "This document",
            {"200": _json("The OpenAPI 3.1 document.", {"type": "object"})}, scope=None,
        )},
        "/docs": {"get": _op(
            "docs_page", "meta", "This document as a readable page (works offline)",
            {"200": {"description": "An HTML page.",
                     "content": {"text/html": {"schema": {"type": "string"}}}}},
            scope=None,
        )},
        "/metrics": {"get": _op(
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
