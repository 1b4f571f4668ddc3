"""Articles repository (write side): dedup lookups and the one-transaction article store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.core.extract import Extracted
from services.db.entities import StoredEntity
from services.db.feeds import key_hash
from services.db.models import Article, ArticleUrl, Event, Sighting
from services.db.upsert import insert_for, insert_ignore


@dataclass(frozen=True)
class SightingState:
    article_id: int | None
    content_hash: str
    error_code: str | None


@dataclass(frozen=True)
class ItemRef:
    """Which feed item an article was seen as."""

    feed_id: int
    item_key: str
    content_hash: str
    url: str | None


def sighting_state(session: Session, *, feed_id: int, item_key: str) -> SightingState | None:
    row = session.execute(
        select(Sighting.article_id, Sighting.content_hash, Sighting.error_code).where(
            Sighting.feed_id == feed_id, Sighting.item_key_hash == key_hash(item_key)
        )
    ).first()
    return None if row is None else SightingState(row[0], row[1], row[2])


def find_by_urls(session: Session, urls: Sequence[str]) -> int | None:
    """The article already known under one of ``urls`` (canonical or alias)."""
    if not urls:
        return None
    found = session.scalar(select(ArticleUrl.article_id).where(ArticleUrl.url.in_(urls)).limit(1))
    if found is None:
        found = session.scalar(select(Article.id).where(Article.canonical_url.in_(urls)).limit(1))
    return found


def find_by_content(session: Session, content_hash: str) -> int | None:
    return session.scalar(select(Article.id).where(Article.content_hash == content_hash))


def events_since(session: Session, *, article_id: int, type: str, since: datetime) -> int:
    """How many ``type`` events the article had from ``since`` on (caps update events)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.article_id == article_id, Event.type == type, Event.created_at >= since)
        )
        or 0
    )


def attach(
    session: Session, *, article_id: int, item: ItemRef, urls: Sequence[str], now: datetime
) -> None:
    """Record that ``item`` carries ``article_id`` (idempotent) and remember its URLs."""
    stmt = insert_for(session, Sighting).values(
        feed_id=item.feed_id,
        item_key=item.item_key,
        item_key_hash=key_hash(item.item_key),
        article_id=article_id,
        url=item.url,
        content_hash=item.content_hash,
        first_seen_at=now,
        last_seen_at=now,
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Sighting.feed_id, Sighting.item_key_hash],
            set_={
                "article_id": article_id,
                "content_hash": item.content_hash,
                "url": item.url,
                "error_code": None,
                "error_detail": None,
                "last_seen_at": now,
            },
        )
    )
    for url in urls:
        insert_ignore(
            session, ArticleUrl, {"article_id": article_id, "url": url, "created_at": now}
        )


def insert_article(session: Session, *, extracted: Extracted, now: datetime) -> int | None:
    """Insert a new article; None when another writer stored the same URL or text first."""
    published = extracted.published_at
    row = insert_ignore(
        session,
        Article,
        {
            "canonical_url": extracted.canonical_url,
            "title": extracted.title,
            "byline": extracted.byline,
            "published_at": published,
            "sort_at": published if published is not None and published <= now else now,
            "language": extracted.language,
            "text": extracted.text,
            "summary": extracted.summary,
            "content_hash": extracted.content_hash,
            "boilerplate": extracted.boilerplate,
            "created_at": now,
            "updated_at": now,
        },
        returning=[Article.id],
    )
    return None if row is None else int(row[0])


def update_article(
    session: Session, *, article_id: int, extracted: Extracted, now: datetime
) -> dict[str, Any]:
    """Apply a material change; returns what changed (field -> [old, new]) for the event."""
    row = session.get(Article, article_id, with_for_update=True)
    if row is None:
        return {}
    new = {
        "title": extracted.title,
        "text": extracted.text,
        "summary": extracted.summary,
        "byline": extracted.byline,
        "content_hash": extracted.content_hash,
        "boilerplate": extracted.boilerplate,
        "language": extracted.language,
    }
    changed: dict[str, Any] = {}
    for name, value in new.items():
        old = getattr(row, name)
        if old != value:
            changed[name] = [old, value] if name in {"title", "byline"} else None
            setattr(row, name, value)
    if not changed:
        return {}
    row.updated_at = now
    return {"fields": sorted(changed)} | {k: v for k, v in changed.items() if v is not None}


def article_event_payload(
    session: Session, *, article_id: int, feed_id: int, entities: Sequence[StoredEntity]
) -> dict[str, Any]:
    row = session.get(Article, article_id)
    assert row is not None
    return {
        "article": {
            "id": row.id,
            "title": row.title,
            "canonical_url": row.canonical_url,
            "published_at": row.published_at.isoformat() if row.published_at else None,
            "summary": row.summary,
            "story_id": row.story_id,
        },
        "feed_id": feed_id,
        "entities": [{"id": e.id, "name": e.name, "type": e.type} for e in entities],
    }
