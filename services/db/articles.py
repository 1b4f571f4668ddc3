"""Articles repository (write side): dedup lookups and the one-transaction article store."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from services.core.extract import Extracted
from services.db.entity_links import drop_links
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
from services.db.upsert import InsertFactory, Prepared, core, ids_by_key, insert_ignore


@dataclass(frozen=True)
class ItemRef:
    """Which feed item an article was seen as."""

    feed_id: int
    item_key: str
    content_hash: str
    url: str | None
    payload: dict[str, Any] = field(default_factory=dict, repr=False)  # the job's payload


_ARTICLES = cast(Table, Article.__table__)
_SIGHTINGS = cast(Table, Sighting.__table__)
_URLS = cast(Table, ArticleUrl.__table__)
_SOURCES = cast(Table, ArticleSource.__table__)


def _by_urls(*, excluding: bool) -> Any:
    urls: BindParameter[str] = bindparam("urls", expanding=True)
    by_alias = select(_URLS.c.article_id.label("id")).where(_URLS.c.url.in_(urls))
    by_canonical = select(_ARTICLES.c.id.label("id")).where(_ARTICLES.c.canonical_url.in_(urls))
    if excluding:
        by_alias = by_alias.where(_URLS.c.article_id != bindparam("exclude"))
        by_canonical = by_canonical.where(_ARTICLES.c.id != bindparam("exclude"))
    # One round trip: every URL is also recorded in article_urls, the canonical column is
    # the fallback for articles stored before that.
    return union_all(by_alias, by_canonical).limit(1)


_BY_URLS = _by_urls(excluding=False)
_BY_URLS_EXCLUDING = _by_urls(excluding=True)
_BY_CONTENT = select(_ARTICLES.c.id).where(_ARTICLES.c.content_hash == bindparam("h"))


def find_by_urls(
    session: Session, urls: Sequence[str], *, exclude: int | None = None
) -> int | None:
    """The article already known under one of ``urls`` (canonical or alias), other than
    article ``exclude``."""
    if not urls:
        return None
    if exclude is None:
        found = core(session).scalar(_BY_URLS, {"urls": list(urls)})
    else:
        found = core(session).scalar(_BY_URLS_EXCLUDING, {"urls": list(urls), "exclude": exclude})
    return None if found is None else int(found)


def find_by_content(session: Session, content_hash: str) -> int | None:
    found = core(session).scalar(_BY_CONTENT, {"h": content_hash})
    return None if found is None else int(found)


def _copies_of() -> Any:
    urls: BindParameter[str] = bindparam("urls", expanding=True)
    hashes: BindParameter[str] = bindparam("hashes", expanding=True)
    kind = literal_column
    return union_all(
        select(kind("0").label("kind"), _URLS.c.url.label("k"), _URLS.c.article_id.label("id"))
        .where(_URLS.c.url.in_(urls)),
        select(kind("1"), _ARTICLES.c.canonical_url, _ARTICLES.c.id)
        .where(_ARTICLES.c.canonical_url.in_(urls)),
        select(kind("2"), _ARTICLES.c.content_hash, _ARTICLES.c.id)
        .where(_ARTICLES.c.content_hash.in_(hashes)),
    )  # fmt: skip


_COPIES_OF = _copies_of()


def find_copies(
    session: Session, items: Sequence[tuple[Sequence[str], str]]
) -> list[tuple[str, int] | None]:
    """For each (URLs, text hash), the article already known under one of the URLs (reason
    ``url``; the first of them that is known, in the order given) or else with the same text
    (``content``), or None: one statement for all of them."""
    if not items:
        return []
    urls = sorted({u for seen, _ in items for u in seen})
    hashes = sorted({h for _, h in items})
    # Every URL is also recorded in article_urls; the canonical column is the fallback for
    # articles stored before that.
    found_by: tuple[dict[str, int], dict[str, int], dict[str, int]] = ({}, {}, {})
    for kind, key, article_id in core(session).execute(
        _COPIES_OF, {"urls": urls, "hashes": hashes}
    ):
        found_by[int(kind)].setdefault(key, int(article_id))
    alias, canonical, by_hash = found_by
    by_url = canonical | alias
    found: list[tuple[str, int] | None] = []
    for seen, digest in items:
        hit = next((by_url[u] for u in seen if u in by_url), None)
        if hit is not None:
            found.append(("url", hit))
        elif digest in by_hash:
            found.append(("content", by_hash[digest]))
        else:
            found.append(None)
    return found


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


def _sighting_upsert(insert: InsertFactory) -> Any:
    stmt = insert(_SIGHTINGS)
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[_SIGHTINGS.c.feed_id, _SIGHTINGS.c.item_key_hash],
        set_={
            "article_id": new.article_id,
            "content_hash": new.content_hash,
            "url": new.url,
            "error_code": None,
            "error_detail": None,
            "last_seen_at": new.last_seen_at,
        },
    )


_SIGHTING_UPSERT = Prepared(_sighting_upsert)
_URLS_INSERT = Prepared(lambda insert: insert(_URLS).on_conflict_do_nothing())


def attach(
    session: Session, *, article_id: int, item: ItemRef, urls: Sequence[str], now: datetime
) -> None:
    """Record that ``item`` carries ``article_id`` (idempotent) and remember its URLs."""
    attach_many(session, [(article_id, item, urls)], now=now)


def attach_many(
    session: Session, items: Sequence[tuple[int, ItemRef, Sequence[str]]], *, now: datetime
) -> None:
    """:func:`attach` for several (article id, item, URLs): two statements for all of them."""
    if not items:
        return
    conn = core(session)
    sightings = [
        {
            "feed_id": item.feed_id,
            "item_key": item.item_key,
            "item_key_hash": key_hash(item.item_key),
            "article_id": article_id,
            "url": item.url,
            "content_hash": item.content_hash,
            "first_seen_at": now,
            "last_seen_at": now,
        }
        for article_id, item, _ in items
    ]
    conn.execute(_SIGHTING_UPSERT.on(conn), sightings)
    urls = [
        {"article_id": article_id, "url": url, "created_at": now}
        for article_id, _, seen in items
        for url in seen
    ]
    if urls:
        conn.execute(_URLS_INSERT.on(conn), urls)


_ARTICLE_INSERT = Prepared(
    lambda insert: insert(_ARTICLES).on_conflict_do_nothing().returning(_ARTICLES.c.id)
)
# Several articles in one statement, each back with its text hash (upsert.ids_by_key).
_ARTICLES_INSERT = insert(_ARTICLES).returning(_ARTICLES.c.id, _ARTICLES.c.content_hash)


def _article_row(extracted: Extracted, now: datetime) -> dict[str, Any]:
    published = extracted.published_at
    return {
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
    }


def insert_article(session: Session, *, extracted: Extracted, now: datetime) -> int | None:
    """Insert a new article; None when another writer stored the same URL or text first."""
    conn = core(session)
    row = conn.execute(_ARTICLE_INSERT.on(conn), _article_row(extracted, now)).first()
    return None if row is None else int(row[0])


def insert_articles(
    session: Session, extracted: Sequence[Extracted], *, now: datetime
) -> list[int]:
    """Insert several new articles in one statement; their ids, in order.

    For writers holding the dedup lock, which have checked that none of them is stored: a
    URL or text stored meanwhile fails the statement (and the transaction).
    """
    if not extracted:
        return []
    rows = [_article_row(e, now) for e in extracted]
    ids = ids_by_key(core(session), _ARTICLES_INSERT, rows)
    return [ids[e.content_hash] for e in extracted]


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


def _source_upsert(insert: InsertFactory) -> Any:
    stmt = insert(_SOURCES)
    return stmt.on_conflict_do_update(
        index_elements=[_SOURCES.c.article_id],
        set_={"payload": stmt.excluded.payload, "stored_at": stmt.excluded.stored_at},
    )


_SOURCE_UPSERT = Prepared(_source_upsert)


def save_source(
    session: Session, *, article_id: int, payload: dict[str, Any], now: datetime
) -> None:
    """Keep the job payload the article's current text came from (for reprocessing)."""
    save_sources(session, [(article_id, payload)], now=now)


def save_sources(
    session: Session, items: Sequence[tuple[int, dict[str, Any]]], *, now: datetime
) -> None:
    """:func:`save_source` for several (article id, payload) in one statement."""
    if not items:
        return
    rows = [
        {
            "article_id": article_id,
            "payload": zlib.compress(json.dumps(payload, separators=(",", ":")).encode(), 1),
            "stored_at": now,
        }
        for article_id, payload in items
    ]
    conn = core(session)
    conn.execute(_SOURCE_UPSERT.on(conn), rows)


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
