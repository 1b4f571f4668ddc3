"""JSON Schemas of the API's request and response bodies (``components.schemas``).

Response objects list every field as required and allow no others, so a field added to a
response builder without being documented here fails the schema tests.
"""

from __future__ import annotations

from typing import Any

from services.api import params, schemas, subscriptions
from services.core.feedurl import MAX_URL_CHARS
from services.core.records import FULLTEXT_MODES
from services.webhooks import filters

Json = dict[str, Any]

ID = {"type": "integer", "minimum": 1}
COUNT = {"type": "integer", "minimum": 0}
TEXT = {"type": "string"}
WHEN = {"type": "string", "format": "date-time", "examples": ["2024-05-01T12:00:00Z"]}
ENTITY_TYPE = {"type": "string", "enum": sorted(params.ENTITY_TYPES)}
EVENT_TYPE = {"type": "string", "enum": list(filters.EVENT_TYPES)}


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def null(schema: Json) -> Json:
    """``schema`` or JSON null."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return {k: v for k, v in schema.items() if k != "examples"} | {"type": [schema["type"], "null"]}


def array(items: Json) -> Json:
    return {"type": "array", "items": items}


def record(description: str, fields: Json, *, optional: tuple[str, ...] = ()) -> Json:
    """A closed object: every field except ``optional`` is required, no others allowed."""
    return {
        "type": "object",
        "description": description,
        "properties": fields,
        "required": [name for name in fields if name not in optional],
        "additionalProperties": False,
    }


def page_of(item: str, description: str) -> Json:
    return record(description, {
        "data": array(ref(item)),
        "next_cursor": null({"type": "string", "description": "Pass as `cursor` for the "
                             "next page; null on the last page."}),
        "next": null({"type": "string", "description": "The next page's URL; null on the "
                      "last page."}),
    })  # fmt: skip


ARTICLE_SUMMARY = {
    "id": ID, "title": TEXT, "url": null(TEXT), "published_at": null(WHEN),
    "language": null(TEXT), "summary": null(TEXT), "feed_ids": array(ID),
}  # fmt: skip

_SOURCE = record("A feed item that carried the article.", {
    "feed_id": ID, "feed_title": null(TEXT), "feed_url": TEXT, "item_key": TEXT,
    "url": null(TEXT), "first_seen_at": WHEN,
})  # fmt: skip

ARTICLE_DETAIL = ARTICLE_SUMMARY | {
    "canonical_url": null(TEXT), "byline": null(TEXT), "text": TEXT,
    "boilerplate": {"type": "object", "description": "Text that is not the article's body: "
                    "captions, credits, related-story blurbs."},
    "story_id": null(ID),
    "story": null(record("The story (near-duplicate cluster) the article belongs to.",
                         {"id": ID, "article_count": COUNT})),
    "story_articles": array(record("Another member of the story.", {"id": ID, "title": TEXT})),
    "urls": array(TEXT),
    "entities": array(record("An entity the article mentions.", {
        "id": ID, "name": TEXT, "type": ENTITY_TYPE, "mentions": COUNT,
    })),
    "sources": array(_SOURCE), "created_at": WHEN, "updated_at": WHEN,
}  # fmt: skip

ENTITY_SUMMARY = {
    "id": ID, "name": TEXT, "type": ENTITY_TYPE, "article_count": COUNT,
    "first_seen_at": WHEN, "last_seen_at": WHEN,
}  # fmt: skip

ENTITY_DETAIL = ENTITY_SUMMARY | {
    "aliases": array(TEXT),
    "recent_articles": array(ref("ArticleSummary")),
    "counts": array(record("Articles mentioning the entity on one UTC day.", {
        "date": {"type": "string", "format": "date"}, "articles": COUNT,
    })),
    "co_occurring": array(record("An entity often mentioned alongside.", {
        "id": ID, "name": TEXT, "type": ENTITY_TYPE, "shared_articles": COUNT,
    })),
}  # fmt: skip

STORY = {
    "id": ID, "article_count": COUNT, "first_article_id": null(ID),
    "created_at": WHEN, "updated_at": WHEN,
    "articles": array(record("A story member.", {
        "id": ID, "title": TEXT, "url": null(TEXT), "published_at": null(WHEN),
        "summary": null(TEXT),
    })),
    "next_cursor": null(TEXT), "next": null(TEXT),
}  # fmt: skip

FEED = {
    "id": ID, "url": TEXT, "kind": {"type": "string", "enum": ["http", "folder"]},
    "title": null(TEXT), "site_url": null(TEXT),
    "state": {"type": "string", "enum": ["active", "failing", "throttled", "disabled"]},
    "disabled_reason": null(TEXT), "interval_seconds": ID, "interval_override": null(ID),
    "ttl_seconds": null(COUNT), "last_status": null({"type": "integer"}),
    "error_count": COUNT, "last_error_code": null(TEXT), "last_error_detail": null(TEXT),
    "first_error_at": null(WHEN), "throttled_until": null(WHEN),
    "last_success_at": null(WHEN), "last_polled_at": null(WHEN), "next_poll_at": null(WHEN),
    "disabled_at": null(WHEN), "moved_from": null(TEXT),
    "fulltext": {"type": "string", "enum": list(FULLTEXT_MODES)},
    "has_etag": {"type": "boolean"}, "has_last_modified": {"type": "boolean"},
    "created_at": WHEN,
}  # fmt: skip

FEED_DETAIL = FEED | {
    "item_errors": array(record("A recent item of the feed that could not become an article.", {
        "item_key": TEXT, "code": TEXT, "detail": null(TEXT), "seen_at": null(WHEN),
    })),
}  # fmt: skip

FEED_URL = {"type": "string", "format": "uri", "maxLength": MAX_URL_CHARS,
            "description": "An absolute http(s) URL without credentials.",
            "examples": ["https://news.example/rss"]}  # fmt: skip
TITLE = null({"type": "string", "maxLength": schemas.MAX_TITLE_CHARS})

_FILTER_TEXT = {"type": "string", "minLength": 1, "maxLength": filters.MAX_VALUE_CHARS}
FILTERS = {
    "type": "object",
    "description": "Within a kind any value matches; across kinds every kind given must.",
    "properties": {
        "feeds": array(ID) | {"maxItems": filters.MAX_VALUES},
        "entities": array({"anyOf": [ID, _FILTER_TEXT]}) | {"maxItems": filters.MAX_VALUES},
        "keywords": array(_FILTER_TEXT) | {"maxItems": filters.MAX_VALUES},
        "languages": array({"type": "string", "pattern": "^[a-zA-Z]{2,3}$"})
        | {"maxItems": filters.MAX_VALUES},
    },
    "additionalProperties": False,
}

SUBSCRIPTION = {
    "id": ID, "url": TEXT, "description": null(TEXT), "event_types": array(EVENT_TYPE),
    "filters": record("The subscription's filters.", {
        "feeds": array(ID), "entities": array({"anyOf": [ID, TEXT]}),
        "keywords": array(TEXT), "languages": array(TEXT),
    }),
    "enabled": {"type": "boolean"}, "disabled_reason": null(TEXT),
    "disabled_at": null(WHEN), "failing_since": null(WHEN), "rotating_until": null(WHEN),
    "created_at": WHEN, "updated_at": WHEN,
}  # fmt: skip

SUBSCRIPTION_INPUT = {
    "url": FEED_URL | {"description": "Where to POST events: a public http(s) URL."},
    "description": null({"type": "string", "maxLength": subscriptions.MAX_DESCRIPTION}),
    "event_types": array(EVENT_TYPE) | {"minItems": 1, "maxItems": len(filters.EVENT_TYPES)},
    "filters": null(FILTERS),
    "enabled": {"type": "boolean"},
}  # fmt: skip

DELIVERY = {
    "id": ID, "event_id": ID, "event_type": EVENT_TYPE, "subscription_id": ID,
    "status": {"type": "string", "enum": list(subscriptions.STATUSES)},
    "attempts": COUNT, "next_attempt_at": null(WHEN), "last_attempt_at": null(WHEN),
    "response_code": null({"type": "integer"}), "latency_ms": null(COUNT),
    "error_code": null(TEXT), "error_detail": null(TEXT), "response_excerpt": null(TEXT),
    "delivered_at": null(WHEN), "created_at": WHEN,
}  # fmt: skip

DELIVERY_DETAIL = DELIVERY | {
    "attempt_log": array(record("One attempt, oldest first.", {
        "attempted_at": WHEN, "response_code": null({"type": "integer"}),
        "latency_ms": COUNT, "error_code": null(TEXT), "error_detail": null(TEXT),
        "response_excerpt": null(TEXT),
    })),
}  # fmt: skip

EVENT = record("An event: the same envelope a webhook POST carries, plus its id.", {
    "id": ID, "type": EVENT_TYPE, "timestamp": WHEN,
    "data": {"type": "object", "description": "What happened; for article events "
             "`article` holds the article's id, title, URL and `api_url`."},
})  # fmt: skip

PROBLEM = {
    "type": "object",
    "description": "An error (RFC 9457).",
    "properties": {
        "type": {"type": "string", "pattern": "^urn:newsdesk:problem:[a-z0-9_]+$",
                 "description": "Stable: `urn:newsdesk:problem:<code>`."},
        "title": {"type": "string", "description": "The HTTP status phrase."},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "What went wrong and what to fix."},
        "param": {"type": "string", "description": "The offending parameter, body field "
                  "(dotted, like `filters.keywords`) or `body`."},
        "checks": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "`/readyz` only: the state of each dependency."},
    },
    "required": ["type", "title", "status", "detail"],
}  # fmt: skip

COMPONENT_SCHEMAS: Json = {
    "Problem": PROBLEM,
    "ArticleSummary": record("An article in a list.", ARTICLE_SUMMARY),
    "ArticleDetail": record("An article with its text, entities, sources and story.",
                            ARTICLE_DETAIL),
    "ArticlePage": page_of("ArticleSummary", "A page of articles, newest first."),
    "Story": record("A story: articles that are different texts of one news story.", STORY),
    "EntitySummary": record("An entity in a list.", ENTITY_SUMMARY),
    "EntityDetail": record("An entity with aliases, recent articles, daily counts (last 30 "
                           "days) and co-occurring entities.", ENTITY_DETAIL),
    "EntityPage": page_of("EntitySummary", "A page of entities, most mentioned first."),
    "Feed": record("A source and its health.", FEED),
    "FeedDetail": record("A source, its health and its recent item errors.", FEED_DETAIL),
    "FeedPage": page_of("Feed", "A page of feeds in id order."),
    "NewFeed": record("A feed to register.", {"url": FEED_URL, "title": TITLE},
                      optional=("title",)),
    "FeedPatch": record("Changes to a feed; every field optional.", {
        "title": TITLE,
        "interval": null({"type": "integer", "minimum": 1, "description": "Seconds between "
                          "polls within the operator's bounds; null for the adaptive schedule."}),
        "enabled": {"type": "boolean"},
        "fulltext": {"type": "string", "enum": list(FULLTEXT_MODES)},
    }, optional=("title", "interval", "enabled", "fulltext")),
    "OpmlImport": record("What an OPML import did.", {
        "created": COUNT, "existing": COUNT,
        "invalid": array(record("An outline that was not imported.",
                                {"url": TEXT, "detail": TEXT})),
    }),
    "Subscription": record("A webhook subscription.", SUBSCRIPTION),
    "SubscriptionWithSecret": record(
        "A webhook subscription and its signing secret (shown only here).",
        SUBSCRIPTION | {"secret": {"type": "string", "pattern": "^whsec_"}},
    ),
    "SubscriptionPage": page_of("Subscription", "A page of subscriptions in id order."),
    "NewSubscription": record("A webhook endpoint to register.", SUBSCRIPTION_INPUT,
                              optional=("description", "event_types", "filters", "enabled")),
    "SubscriptionPatch": record("Changes to a subscription; every field optional.",
                                SUBSCRIPTION_INPUT, optional=tuple(SUBSCRIPTION_INPUT)),
    "PingResult": record("What the endpoint answered to a test ping.", {
        "webhook_id": TEXT, "ok": {"type": "boolean"},
        "response_code": null({"type": "integer"}), "latency_ms": null(COUNT),
        "error_code": null(TEXT), "error_detail": null(TEXT), "response_excerpt": null(TEXT),
    }),
    "Delivery": record("One event owed to one subscription.", DELIVERY),
    "DeliveryDetail": record("A delivery with every attempt.", DELIVERY_DETAIL),
    "DeliveryPage": page_of("Delivery", "A page of deliveries, newest first."),
    "Event": EVENT,
    "EventPage": record("Events in id order.", {
        "data": array(ref("Event")),
        "next_after": {"type": "integer", "minimum": 0,
                       "description": "Pass as `after` to continue."},
        "next": {"type": "string", "description": "The URL that continues the stream."},
    }),
    "Health": record("The process is up.", {"status": {"const": "ok"}}),
    "Readiness": record("Every dependency answers.", {
        "status": {"const": "ok"},
        "checks": record("Each dependency's state.", {"database": {"const": "ok"},
                                                       "redis": {"const": "ok"}}),
    }),
}  # fmt: skip
