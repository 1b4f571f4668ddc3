"""Request and response shapes: records to JSON documents, and the new-feed body validated."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from services.api.errors import Unprocessable
from services.core.errors import InvalidInput
from services.core.records import FeedRecord, ItemError
from services.db.models import URL_LENGTH
from services.db.reads import ArticleDetail, ArticleSummary, EntityDetail, EntitySummary

Json = dict[str, Any]

MAX_TITLE_CHARS = 1000
FEED_FIELDS = frozenset({"url", "title"})


def iso(when: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` suffix."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def page(items: list[Json], next_cursor: str | None) -> Json:
    return {"data": items, "next_cursor": next_cursor}


def article_summary(a: ArticleSummary) -> Json:
    return {
        "id": a.id,
        "title": a.title,
        "url": a.url,
        "published_at": iso(a.published_at),
        "language": a.language,
        "summary": a.summary,
        "feed_ids": list(a.feed_ids),
    }


def article_detail(a: ArticleDetail) -> Json:
    return {
        "id": a.id,
        "title": a.title,
        "url": a.url,
        "canonical_url": a.canonical_url,
        "published_at": iso(a.published_at),
        "language": a.language,
        "summary": a.summary,
        "byline": a.byline,
        "text": a.text,
        "boilerplate": dict(a.boilerplate),
        "story_id": a.story_id,
        "feed_ids": list(a.feed_ids),
        "urls": list(a.urls),
        "entities": [
            {"id": e.id, "name": e.name, "type": e.type, "mentions": e.mentions} for e in a.entities
        ],
        "sources": [
            {
                "feed_id": s.feed_id,
                "feed_title": s.feed_title,
                "feed_url": s.feed_url,
                "item_key": s.item_key,
                "url": s.url,
                "first_seen_at": iso(s.first_seen_at),
            }
            for s in a.sources
        ],
        "created_at": iso(a.created_at),
        "updated_at": iso(a.updated_at),
    }


def entity_summary(e: EntitySummary | EntityDetail) -> Json:
    return {
        "id": e.id,
        "name": e.name,
        "type": e.type,
        "article_count": e.article_count,
        "first_seen_at": iso(e.first_seen_at),
        "last_seen_at": iso(e.last_seen_at),
    }


def entity_detail(e: EntityDetail) -> Json:
    return entity_summary(e) | {
        "aliases": list(e.aliases),
        "recent_articles": [article_summary(a) for a in e.recent_articles],
    }


def feed(f: FeedRecord) -> Json:
    """A feed and its health; validators (ETag, hashes) stay internal."""
    return {
        "id": f.id,
        "url": f.url,
        "kind": f.kind,
        "title": f.title,
        "site_url": f.site_url,
        "state": f.state,
        "interval_seconds": f.interval_seconds,
        "last_status": f.last_status,
        "error_count": f.error_count,
        "last_error_code": f.last_error_code,
        "last_error_detail": f.last_error_detail,
        "last_success_at": iso(f.last_success_at),
        "last_polled_at": iso(f.last_polled_at),
        "next_poll_at": iso(f.next_poll_at),
        "disabled_at": iso(f.disabled_at),
        "created_at": iso(f.created_at),
    }


def feed_detail(f: FeedRecord, errors: list[ItemError]) -> Json:
    return feed(f) | {
        "item_errors": [
            {"item_key": e.item_key, "code": e.code, "detail": e.detail, "seen_at": iso(e.seen_at)}
            for e in errors
        ]
    }


@dataclass(frozen=True)
class NewFeed:
    url: str
    title: str | None


def parse_json_body(body: bytes) -> Any:
    """The request body as JSON; 400 when it is not JSON at all."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidInput(
            "request body is not valid JSON", param="body", code="malformed_json"
        ) from None


def new_feed(data: Any) -> NewFeed:
    """Validate ``{"url": ..., "title"?: ...}``; every failure is a 422 naming the field."""
    if not isinstance(data, dict):
        raise Unprocessable("request body must be a JSON object", param="body")
    unknown = sorted(set(data) - FEED_FIELDS)
    if unknown:
        raise Unprocessable(f"unknown field(s): {', '.join(unknown)}", param=", ".join(unknown))
    if "url" not in data:
        raise Unprocessable("url is required", param="url")
    return NewFeed(url=feed_url(data["url"]), title=_title(data.get("title")))


def feed_url(value: Any) -> str:
    """An absolute http(s) URL naming a host, without credentials; scheme and host lowercased."""
    if not isinstance(value, str):
        raise Unprocessable("url must be a string", param="url")
    url = value.strip()
    if len(url) > URL_LENGTH:
        raise Unprocessable(f"url is longer than {URL_LENGTH} characters", param="url")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise Unprocessable("url must not contain spaces or control characters", param="url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        raise Unprocessable("url is not a valid URL", param="url") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise Unprocessable("url must be an http:// or https:// URL", param="url")
    if not parts.hostname:
        raise Unprocessable("url must name a host", param="url")
    if parts.username is not None or parts.password is not None:
        # Credentials would be stored and shown by the API; refuse rather than leak them.
        raise Unprocessable("url must not contain credentials", param="url")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))


def _title(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Unprocessable("title must be a string", param="title")
    title = value.strip()
    if len(title) > MAX_TITLE_CHARS:
        raise Unprocessable(f"title is longer than {MAX_TITLE_CHARS} characters", param="title")
    return title or None
