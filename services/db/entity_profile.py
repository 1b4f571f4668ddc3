"""Read side of one entity beyond its row: aliases, articles per day, co-occurring entities."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from services.db.entity_names import alias_names
from services.db.models import Article, ArticleEntity, Entity

DEFAULT_DAYS = 30
DEFAULT_CO_OCCURRING = 10


@dataclass(frozen=True)
class DayCount:
    """Articles mentioning an entity on one UTC day (by the article's sort time)."""

    day: date
    articles: int


@dataclass(frozen=True)
class CoEntity:
    """Another entity and the number of articles that mention both."""

    id: int
    name: str
    type: str
    shared: int


@dataclass(frozen=True)
class EntityProfile:
    aliases: tuple[str, ...]
    counts: tuple[DayCount, ...]
    co_occurring: tuple[CoEntity, ...]


def entity_profile(
    session: Session,
    entity_id: int,
    *,
    now: datetime,
    days: int = DEFAULT_DAYS,
    co_limit: int = DEFAULT_CO_OCCURRING,
) -> EntityProfile:
    """Aliases, article counts for each of the last ``days`` UTC days (oldest first, zeros
    included) and the ``co_limit`` entities sharing most articles with ``entity_id``."""
    return EntityProfile(
        aliases=alias_names(session, [entity_id])[entity_id],
        counts=daily_counts(session, entity_id, now=now, days=days),
        co_occurring=co_occurring(session, entity_id, limit=co_limit),
    )


def daily_counts(
    session: Session, entity_id: int, *, now: datetime, days: int
) -> tuple[DayCount, ...]:
    first = now.astimezone(UTC).date() - timedelta(days=days - 1)
    since = datetime.combine(first, time.min, tzinfo=UTC)
    day = _utc_day(session)
    rows = session.execute(
        select(day, func.count())
        .select_from(Article)
        .join(ArticleEntity, ArticleEntity.article_id == Article.id)
        .where(ArticleEntity.entity_id == entity_id, Article.sort_at >= since)
        .group_by(day)
    )
    found = {_as_date(d): int(n) for d, n in rows}
    return tuple(
        DayCount(first + timedelta(days=i), found.get(first + timedelta(days=i), 0))
        for i in range(days)
    )


def co_occurring(session: Session, entity_id: int, *, limit: int) -> tuple[CoEntity, ...]:
    mine = aliased(ArticleEntity)
    other = aliased(ArticleEntity)
    shared = func.count().label("shared")
    rows = session.execute(
        select(Entity.id, Entity.name, Entity.type, shared)
        .select_from(mine)
        .join(other, (other.article_id == mine.article_id) & (other.entity_id != entity_id))
        .join(Entity, Entity.id == other.entity_id)
        .where(mine.entity_id == entity_id)
        .group_by(Entity.id, Entity.name, Entity.type)
        .order_by(shared.desc(), Entity.id)
        .limit(limit)
    )
    return tuple(CoEntity(id=i, name=n, type=t, shared=int(c)) for i, n, t, c in rows)


def _utc_day(session: Session) -> Any:
    """The UTC calendar day of ``Article.sort_at`` in the session's SQL dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", Article.sort_at))
    return func.date(Article.sort_at)  # SQLite stores UTC without an offset


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
