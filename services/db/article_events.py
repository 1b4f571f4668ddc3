"""The payload of ``article.*`` events: what subscribers are told about an article."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from services.core.extract import Extracted
from services.db.entities import StoredEntity
from services.db.models import Article, ArticleUrl, Sighting
from services.db.upsert import core

_ARTICLES = cast(Table, Article.__table__)
_SIGHTINGS = cast(Table, Sighting.__table__)
_URLS = cast(Table, ArticleUrl.__table__)

_EVENT_ARTICLE = select(
    _ARTICLES.c.id, _ARTICLES.c.title, _ARTICLES.c.canonical_url, _ARTICLES.c.published_at,
    _ARTICLES.c.language, _ARTICLES.c.summary, _ARTICLES.c.story_id,
).where(_ARTICLES.c.id == bindparam("id"))  # fmt: skip
_FIRST_URL = (
    select(_URLS.c.url).where(_URLS.c.article_id == bindparam("id")).order_by(_URLS.c.id).limit(1)
)
_FEEDS_OF = select(_SIGHTINGS.c.feed_id).where(_SIGHTINGS.c.article_id == bindparam("id"))


def article_event_payload(
    session: Session, *, article_id: int, feed_id: int, entities: Sequence[StoredEntity]
) -> dict[str, Any]:
    """The ``data`` of an ``article.*`` event (webhook payload version 1, README "Webhooks"),
    from the stored article.

    Thin on purpose (well under 20 KB): the summary and entity list are capped, and the full
    article is one API call away (its path is added when the webhook is sent).
    """
    conn = core(session)
    key = {"id": article_id}
    row = conn.execute(_EVENT_ARTICLE, key).one()
    return _event_payload(
        row._asdict(),
        url=row.canonical_url or conn.scalar(_FIRST_URL, key),
        feed_ids=sorted(set(conn.scalars(_FEEDS_OF, key)) | {feed_id}),
        feed_id=feed_id,
        entities=entities,
    )


def new_article_event_payload(
    *,
    article_id: int,
    extracted: Extracted,
    story_id: int | None,
    feed_id: int,
    entities: Sequence[StoredEntity],
) -> dict[str, Any]:
    """What :func:`article_event_payload` reads for an article just inserted by
    :func:`insert_article` and :func:`attach` in this transaction, without reading it: its
    columns are ``extracted``'s, its one sighting is ``feed_id``'s, and its first URL is the
    first of ``extracted.urls`` (none of them was known, or it would be a copy)."""
    published = extracted.published_at
    fields = {
        "id": article_id,
        "title": extracted.title,
        "canonical_url": extracted.canonical_url,
        "published_at": None if published is None else published.astimezone(UTC),
        "language": extracted.language,
        "summary": extracted.summary,
        "story_id": story_id,
    }
    urls = extracted.urls
    return _event_payload(
        fields,
        url=extracted.canonical_url or (urls[0] if urls else None),
        feed_ids=[feed_id],
        feed_id=feed_id,
        entities=entities,
    )


def _event_payload(
    article: dict[str, Any],
    *,
    url: str | None,
    feed_ids: list[int],
    feed_id: int,
    entities: Sequence[StoredEntity],
) -> dict[str, Any]:
    summary = article["summary"]
    published = article["published_at"]
    return {
        "version": 1,
        "article": {
            "id": article["id"],
            "title": article["title"][:500],
            "url": url,
            "canonical_url": article["canonical_url"],
            "published_at": published.isoformat() if published else None,
            "language": article["language"],
            "summary": summary[:1000] if summary else summary,
            "story_id": article["story_id"],
            "feed_ids": feed_ids,
        },
        "feed_id": feed_id,
        "entities": [{"id": e.id, "name": e.name, "type": e.type} for e in entities[:100]],
    }
