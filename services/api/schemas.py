"""Request and response shapes: records to JSON documents, feed bodies validated."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from services.api.context import SETTINGS
from services.api.errors import Unprocessable
from services.api.params import check_text
from services.core.errors import InvalidInput
from services.core.feedurl import normalise_feed_url
from services.core.records import FULLTEXT_MODES, FeedRecord, ItemError
from services.db.entity_reads import EntityDetail, EntitySummary
from services.db.reads import ArticleDetail, ArticleSummary

Json = dict[str, Any]

MAX_TITLE_CHARS = 1000
FEED_FIELDS = frozenset({"url", "title"})
PATCH_FIELDS = frozenset({"title", "interval", "enabled", "fulltext"})


def iso(when: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` suffix."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def next_url(request: web.Request, **changes: str) -> str:
    """This request's URL with query parameters ``changes`` replaced: the next page's URL.

    Absolute when ``NEWSDESK_PUBLIC_URL`` is set, else a path with its query.
    """
    query = [(k, v) for k, v in request.query.items() if k not in changes]
    query += list(changes.items())
    public_url = request.app[SETTINGS].public_url
    return f"{public_url}{request.path}?{urlencode(query, quote_via=quote)}"


def link_header(url: str | None) -> dict[str, str]:
    """``Link: <url>; rel="next"`` (RFC 8288), or no header on the last page."""
    return {"Link": f'<{url}>; rel="next"'} if url else {}


def page(request: web.Request, items: list[Json], next_cursor: str | None) -> web.Response:
    """A keyset page: ``data``, ``next_cursor`` and ``next`` (its URL), plus a ``Link`` header."""
    url = next_url(request, cursor=next_cursor) if next_cursor else None
    body = {"data": items, "next_cursor": next_cursor, "next": url}
    return web.json_response(body, headers=link_header(url))


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
        "story": {"id": a.story.id, "article_count": a.story.article_count} if a.story else None,
        "story_articles": [{"id": m.id, "title": m.title} for m in a.story.others]
        if a.story
        else [],
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
        "counts": [{"date": c.day.isoformat(), "articles": c.articles} for c in e.counts],
        "co_occurring": [
            {"id": c.id, "name": c.name, "type": c.type, "shared_articles": c.shared}
            for c in e.co_occurring
        ],
    }


def feed(f: FeedRecord) -> Json:
    """A feed and its health; validators (ETag, Last-Modified) are shown only as present."""
    return {
        "id": f.id,
        "url": f.url,
        "kind": f.kind,
        "title": f.title,
        "site_url": f.site_url,
        "state": f.state,
        "disabled_reason": f.disabled_reason,
        "interval_seconds": f.interval_seconds,
        "interval_override": f.interval_override,
        "ttl_seconds": f.ttl_seconds,
        "last_status": f.last_status,
        "error_count": f.error_count,
        "last_error_code": f.last_error_code,
        "last_error_detail": f.last_error_detail,
        "first_error_at": iso(f.first_error_at),
        "throttled_until": iso(f.throttled_until),
        "last_success_at": iso(f.last_success_at),
        "last_polled_at": iso(f.last_polled_at),
        "next_poll_at": iso(f.next_poll_at),
        "disabled_at": iso(f.disabled_at),
        "moved_from": f.moved_from,
        "fulltext": f.fulltext,
        "has_etag": f.etag is not None,
        "has_last_modified": f.last_modified is not None,
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
    """The request body as JSON; 400 when it is not UTF-8 JSON, or holds text no column
    can store (NUL, unpaired surrogates)."""
    try:
        data = json.loads(body.decode())
    except (ValueError, RecursionError):
        raise InvalidInput(
            "request body is not valid JSON (UTF-8, one JSON value)",
            param="body",
            code="malformed_json",
        ) from None
    _check_strings(data, "body")
    return data


def _check_strings(value: Any, where: str) -> None:
    """Every string and key in ``value`` passes :func:`params.check_text`."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            check_text(item, path)
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, dict):
            for key, v in item.items():
                check_text(key, path)
                stack.append((v, key if path == "body" else f"{path}.{key}"))


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
    """The feed URL rule of :func:`services.core.feedurl.normalise_feed_url`, as a 422."""
    try:
        return normalise_feed_url(value)
    except InvalidInput as exc:
        raise Unprocessable(str(exc), param="url") from None


def feed_patch(data: Any, *, min_interval: int, max_interval: int) -> dict[str, Any]:
    """Validate a PATCH body into keyword arguments of ``feeds.update_feed``.

    ``title`` (string or null), ``interval`` (whole seconds within the bounds, or null for
    the adaptive schedule), ``enabled`` (boolean) and ``fulltext`` (``auto``, ``always`` or
    ``never``); each failure is a 422 naming the field.
    """
    if not isinstance(data, dict):
        raise Unprocessable("request body must be a JSON object", param="body")
    unknown = sorted(set(data) - PATCH_FIELDS)
    if unknown:
        raise Unprocessable(
            f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(PATCH_FIELDS))}",
            param=", ".join(unknown),
        )
    changes: dict[str, Any] = {}
    if "title" in data:
        changes["title"] = _title(data["title"])
    if "interval" in data:
        changes["interval_override"] = _interval(data["interval"], min_interval, max_interval)
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            raise Unprocessable("enabled must be true or false", param="enabled")
        changes["enabled"] = data["enabled"]
    if "fulltext" in data:
        if data["fulltext"] not in FULLTEXT_MODES:
            raise Unprocessable(
                f"fulltext must be one of {', '.join(FULLTEXT_MODES)}", param="fulltext"
            )
        changes["fulltext"] = data["fulltext"]
    return changes


def _interval(value: Any, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Unprocessable(
            f"interval must be whole seconds from {low} to {high}, or null for adaptive",
            param="interval",
        )
    return value


def opml_import(created: int, existing: int, invalid: list[tuple[str, str]]) -> Json:
    return {
        "created": created,
        "existing": existing,
        "invalid": [{"url": url, "detail": detail} for url, detail in invalid],
    }


def _title(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Unprocessable("title must be a string", param="title")
    # The bound applies to what was sent, as documented, not to what is left after trimming.
    if len(value) > MAX_TITLE_CHARS:
        raise Unprocessable(f"title is longer than {MAX_TITLE_CHARS} characters", param="title")
    return value.strip() or None
