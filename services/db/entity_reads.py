"""Read-side queries for the API about entities: keyset pages and details as frozen records."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, select, tuple_
from sqlalchemy.orm import Session

from services.core.entities import entity_key
from services.core.errors import NotFound
from services.db import entity_names
from services.db.entity_profile import CoEntity, DayCount, entity_profile
from services.db.models import Article, ArticleEntity, Entity
from services.db.reads import NEWEST_FIRST, SUMMARY_COLUMNS, ArticleSummary, Page, summaries

_DIGITS = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class EntitySummary:
    id: int
    type: str
    name: str
    article_count: int
    first_seen_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True)
class EntityDetail:
    id: int
    type: str
    name: str
    key: str
    aliases: tuple[str, ...]
    article_count: int
    first_seen_at: datetime
    last_seen_at: datetime
    recent_articles: tuple[ArticleSummary, ...]
    counts: tuple[DayCount, ...] = ()
    co_occurring: tuple[CoEntity, ...] = ()


_ENTITY_BY_ID = select(Entity.id).where(Entity.id == bindparam("id"))


def find_entity_ids(session: Session, ref: str) -> list[int]:
    """Entities a client reference denotes: an id, else every entity known by that name or alias.

    A name can match several entities (one per type: "Washington" the person and the place);
    the most mentioned comes first. Unknown references give an empty list.
    """
    ref = ref.strip()
    if _DIGITS.fullmatch(ref):
        found = session.connection().scalar(_ENTITY_BY_ID, {"id": int(ref)})
        return [] if found is None else [found]
    return entity_names.find_entity_ids(session, ref)


def list_entities(
    session: Session,
    *,
    limit: int,
    cursor: tuple[int, int] | None = None,
    type: str | None = None,
    prefix: str | None = None,
) -> Page[EntitySummary]:
    """Entities by ``article_count desc, id desc`` (the order of ``ix_entities_count``).

    Args:
        cursor: ``(article_count, id)`` of the last entity of the previous page. Counts move
            as articles arrive, so a walk is consistent per page, not across a whole walk.
        type: only entities of this type.
        prefix: only entities whose lookup key starts with the key of ``prefix``.
    """
    stmt = select(Entity).order_by(Entity.article_count.desc(), Entity.id.desc()).limit(limit + 1)
    if cursor is not None:
        stmt = stmt.where(tuple_(Entity.article_count, Entity.id) < cursor)
    if type is not None:
        stmt = stmt.where(Entity.type == type)
    if prefix:
        key = prefix_key(prefix)
        if key:
            stmt = stmt.where(Entity.key.like(escape_like(key) + "%", escape="\\"))
    rows = list(session.scalars(stmt))
    items = tuple(
        EntitySummary(
            id=r.id, type=r.type, name=r.name, article_count=r.article_count,
            first_seen_at=r.first_seen_at, last_seen_at=r.last_seen_at,
        )
        for r in rows[:limit]
    )  # fmt: skip
    return Page(items=items, more=len(rows) > limit)


def get_entity(
    session: Session, entity_id: int, recent: int = 20, *, now: datetime | None = None
) -> EntityDetail:
    """One entity with its aliases and the ``recent`` newest articles mentioning it.

    Also its articles per day over the 30 days up to ``now`` and its co-occurring entities
    (see :func:`services.db.entity_profile.entity_profile`).
    """
    row = session.get(Entity, entity_id)
    if row is None:
        raise NotFound(f"no entity with id {entity_id}")
    articles = session.execute(
        select(*SUMMARY_COLUMNS)
        .join(ArticleEntity, ArticleEntity.article_id == Article.id)
        .where(ArticleEntity.entity_id == entity_id)
        .order_by(*NEWEST_FIRST)
        .limit(recent)
    )
    recent_articles = tuple(summaries(session, list(articles)))
    profile = entity_profile(session, entity_id, now=now or datetime.now(UTC))
    return EntityDetail(
        id=row.id,
        type=row.type,
        name=row.name,
        key=row.key,
        aliases=profile.aliases,
        article_count=row.article_count,
        first_seen_at=row.first_seen_at,
        last_seen_at=row.last_seen_at,
        recent_articles=recent_articles,
        counts=profile.counts,
        co_occurring=profile.co_occurring,
    )


def prefix_key(prefix: str) -> str:
    """The lookup key of a name prefix; a trailing space is kept ("new " is not "newark")."""
    key = entity_key(prefix)
    if key and prefix[-1:].isspace():
        key += " "
    return key


def escape_like(value: str) -> str:
    """``value`` as a literal inside a LIKE pattern whose escape character is a backslash."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
