"""Articles repository (write side): dedup lookups and the one-transaction article store."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, union_all, update
from sqlalchemy.orm import Session

from services.core.extract import Extracted
from services.db.entities import StoredEntity, drop_links
from services.db.feeds import key_hash
from services.db.models import (
    Article,
    ArticleMerge,
    ArticleSource,
    ArticleUrl,
    Event,
    Sighting,
    Story,
)
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
    payload: dict[str, Any] = field(default_factory=dict, repr=False)  # the job's payload


def sighting_state(session: Session, *, feed_id: int, item_key: str) -> SightingState | None:
    row = session.execute(
        select(Sighting.article_id, Sighting.content_hash, Sighting.error_code).where(
            Sighting.feed_id == feed_id, Sighting.item_key_hash == key_hash(item_key)
        )
    ).first()
    return None if row is None else SightingState(row[0], row[1], row[2])


def find_by_urls(
    session: Session, urls: Sequence[str], *, exclude: int | None = None
) -> int | None:
    """The article already known under one of ``urls`` (canonical or alias), other than
    article ``exclude``."""
    if not urls:
        return None
    by_alias = select(ArticleUrl.article_id.label("id")).where(ArticleUrl.url.in_(urls))
    by_canonical = select(Article.id.label("id")).where(Article.canonical_url.in_(urls))
    if exclude is not None:
        by_alias = by_alias.where(ArticleUrl.article_id != exclude)
        by_canonical = by_canonical.where(Article.id != exclude)
    # One round trip: every URL is also recorded in article_urls, the canonical column is
    # the fallback for articles stored before that.
    return session.scalar(union_all(by_alias, by_canonical).limit(1))


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
    if urls:
        session.execute(
            insert_for(session, ArticleUrl).on_conflict_do_nothing(),
            [{"article_id": article_id, "url": url, "created_at": now} for url in urls],
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
    """The ``data`` of an ``article.*`` event (webhook payload version 1, README "Webhooks").

    Thin on purpose (well under 20 KB): the summary and entity list are capped, and the full
    article is one API call away (its path is added when the webhook is sent).
    """
    row = session.execute(
        select(
            Article.id, Article.title, Article.canonical_url, Article.published_at,
            Article.language, Article.summary, Article.story_id,
        ).where(Article.id == article_id)
    ).one()  # fmt: skip
    url = row.canonical_url or session.scalar(
        select(ArticleUrl.url)
        .where(ArticleUrl.article_id == article_id)
        .order_by(ArticleUrl.id)
        .limit(1)
    )
    feed_ids = sorted(
        set(session.scalars(select(Sighting.feed_id).where(Sighting.article_id == article_id)))
        | {feed_id}
    )
    summary = row.summary[:1000] if row.summary else row.summary
    return {
        "version": 1,
        "article": {
            "id": row.id,
            "title": row.title[:500],
            "url": url,
            "canonical_url": row.canonical_url,
            "published_at": row.published_at.isoformat() if row.published_at else None,
            "language": row.language,
            "summary": summary,
            "story_id": row.story_id,
            "feed_ids": feed_ids,
        },
        "feed_id": feed_id,
        "entities": [{"id": e.id, "name": e.name, "type": e.type} for e in entities[:100]],
    }


def save_source(
    session: Session, *, article_id: int, payload: dict[str, Any], now: datetime
) -> None:
    """Keep the job payload the article's current text came from (for reprocessing)."""
    blob = zlib.compress(json.dumps(payload, separators=(",", ":")).encode("utf-8"), 1)
    stmt = insert_for(session, ArticleSource).values(
        article_id=article_id, payload=blob, stored_at=now
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[ArticleSource.article_id], set_={"payload": blob, "stored_at": now}
        )
    )


def load_source(session: Session, article_id: int) -> dict[str, Any] | None:
    """The payload kept by :func:`save_source`, or None for an article stored without one."""
    blob = session.scalar(
        select(ArticleSource.payload).where(ArticleSource.article_id == article_id)
    )
    if blob is None:
        return None
    found: dict[str, Any] = json.loads(zlib.decompress(blob))
    return found


def merged_into(session: Session, article_id: int) -> int | None:
    """The article a merged-away id now belongs to, or None."""
    return session.scalar(select(ArticleMerge.article_id).where(ArticleMerge.old_id == article_id))


def merge_article(session: Session, *, loser: int, winner: int, reason: str, now: datetime) -> None:
    """Fold article ``loser`` into ``winner``: its sightings and URLs move, it is deleted.

    Entity counts drop by the loser's links (the winner keeps its own), the loser's story
    loses a member (the winner joins it when it had none), and ``article_merges`` remembers
    the old id so links to it keep working. Events keep their payload; their article
    reference is cleared by the foreign key.
    """
    row = session.get(Article, loser, with_for_update=True)
    if row is None:
        return
    session.execute(update(Sighting).where(Sighting.article_id == loser).values(article_id=winner))
    session.execute(
        update(ArticleUrl).where(ArticleUrl.article_id == loser).values(article_id=winner)
    )
    if row.canonical_url:
        canonical = row.canonical_url
        row.canonical_url = None
        session.flush()
        insert_ignore(
            session, ArticleUrl, {"article_id": winner, "url": canonical, "created_at": now}
        )
    drop_links(session, article_id=loser, now=now)
    if row.story_id is not None:
        _leave_story(session, story_id=row.story_id, loser=loser, winner=winner, now=now)
    session.execute(
        update(ArticleMerge).where(ArticleMerge.article_id == loser).values(article_id=winner)
    )
    session.execute(
        insert(ArticleMerge).values(old_id=loser, article_id=winner, reason=reason, merged_at=now)
    )
    session.execute(delete(Article).where(Article.id == loser))


def _leave_story(
    session: Session, *, story_id: int, loser: int, winner: int, now: datetime
) -> None:
    winner_story = session.scalar(select(Article.story_id).where(Article.id == winner))
    if winner_story is None:
        # The winner takes the loser's place in its story: the count does not move.
        session.execute(update(Article).where(Article.id == winner).values(story_id=story_id))
        members = 0
    else:
        members = -1
    first = session.scalar(select(Story.first_article_id).where(Story.id == story_id))
    values: dict[str, Any] = {"article_count": Story.article_count + members, "updated_at": now}
    if first == loser:
        values["first_article_id"] = session.scalar(
            select(func.min(Article.id)).where(Article.story_id == story_id, Article.id != loser)
        )
    session.execute(update(Story).where(Story.id == story_id).values(values))
