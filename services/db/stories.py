"""Stories repository: the dedup lock and story membership (the near-duplicate index that
finds a story's members is services/db/bands.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import (
    Table,
    bindparam,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from services.core.errors import NotFound
from services.db.engine import advisory_lock
from services.db.models import Article, Story
from services.db.upsert import core, ids_by_key

# pg_advisory_xact_lock key of the "find a duplicate, then insert" step ("newsdup" in ASCII).
DEDUP_LOCK_KEY = 0x6E_65_77_73_64_75_70


@dataclass(frozen=True)
class StoryMember:
    id: int
    title: str


@dataclass(frozen=True)
class StoryRef:
    """An article's story, for the article detail: counts and the other members."""

    id: int
    article_count: int
    others: tuple[StoryMember, ...]


@dataclass(frozen=True)
class StoryArticle:
    id: int
    title: str
    url: str | None
    published_at: datetime | None
    sort_at: datetime
    summary: str | None


@dataclass(frozen=True)
class StoryDetail:
    id: int
    article_count: int
    first_article_id: int | None
    created_at: datetime
    updated_at: datetime
    articles: tuple[StoryArticle, ...]
    more: bool


def lock_dedup(session: Session) -> None:
    """Serialise dedup decisions with their writes until the transaction ends.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: nothing to do, the writer's
    ``BEGIN IMMEDIATE`` already holds the database's single write lock.
    """
    advisory_lock(session, DEDUP_LOCK_KEY)


_ARTICLES = cast(Table, Article.__table__)
_STORIES = cast(Table, Story.__table__)


# Stories in one statement, each back with its first article (upsert.ids_by_key).
_STORIES_INSERT = insert(_STORIES).returning(_STORIES.c.id, _STORIES.c.first_article_id)
_SET_STORY = (
    update(_ARTICLES)
    .where(_ARTICLES.c.id == bindparam("article"))
    .values(story_id=bindparam("story"), updated_at=bindparam("now"))
)
_STORIES_OF = select(_ARTICLES.c.id, _ARTICLES.c.story_id).where(
    _ARTICLES.c.id.in_(bindparam("ids", expanding=True))
)
_STORIES_GROW = (
    update(_STORIES)
    .where(_STORIES.c.id == bindparam("story"))
    .values(article_count=_STORIES.c.article_count + bindparam("n"), updated_at=bindparam("now"))
)


def start_story(session: Session, *, article_id: int, now: datetime) -> int:
    """A new story whose first member is ``article_id``."""
    return start_stories(session, [article_id], now=now)[0]


def start_stories(session: Session, article_ids: Sequence[int], *, now: datetime) -> list[int]:
    """:func:`start_story` for several articles (distinct): one statement for the stories,
    one for the articles. Returns the story ids in the order of ``article_ids``."""
    if not article_ids:
        return []
    conn = core(session)
    rows = [
        {"article_count": 1, "first_article_id": a, "created_at": now, "updated_at": now}
        for a in article_ids
    ]
    story_of = ids_by_key(conn, _STORIES_INSERT, rows)
    story_ids = [story_of[a] for a in article_ids]
    conn.execute(
        _SET_STORY,
        [
            {"article": a, "story": s, "now": now}
            for a, s in zip(article_ids, story_ids, strict=True)
        ],
    )
    return story_ids


def join_story(session: Session, *, article_id: int, like: int, now: datetime) -> int:
    """Put ``article_id`` in the story of article ``like`` (starting one if it has none)."""
    return join_stories(session, [(article_id, like)], now=now)[0]


def join_stories(session: Session, items: Sequence[tuple[int, int]], *, now: datetime) -> list[int]:
    """:func:`join_story` for several (article id, like) pairs, distinct articles that are not
    any pair's ``like``: one statement to read the likes' stories, two to start any missing
    ones (in order of first mention, as one by one), one to set the articles' story and one
    to count them in. Returns the story ids in the order of ``items``."""
    if not items:
        return []
    conn = core(session)
    likes = list(dict.fromkeys(like for _, like in items))
    story_of = {
        int(like): int(story)
        for like, story in conn.execute(_STORIES_OF, {"ids": likes})
        if story is not None
    }
    missing = [like for like in likes if like not in story_of]
    story_of.update(zip(missing, start_stories(session, missing, now=now), strict=True))
    joined = [story_of[like] for _, like in items]
    conn.execute(
        _SET_STORY,
        [{"article": a, "story": s, "now": now} for (a, _), s in zip(items, joined, strict=True)],
    )
    grown = Counter(joined)
    conn.execute(_STORIES_GROW, [{"story": s, "n": n, "now": now} for s, n in grown.items()])
    return joined


def story_ref(
    session: Session, story_id: int | None, *, article_id: int, others: int = 20
) -> StoryRef | None:
    """The story of an article with up to ``others`` other members, newest first."""
    if story_id is None:
        return None
    count = session.scalar(select(Story.article_count).where(Story.id == story_id))
    if count is None:
        return None
    members = session.execute(
        select(Article.id, Article.title)
        .where(Article.story_id == story_id, Article.id != article_id)
        .order_by(Article.sort_at.desc(), Article.id.desc())
        .limit(others)
    )
    return StoryRef(story_id, count, tuple(StoryMember(i, t) for i, t in members))


def get_story(
    session: Session, story_id: int, *, limit: int, cursor: tuple[datetime, int] | None = None
) -> StoryDetail:
    """A story with a page of its articles, newest first (keyset on sort_at, id). NotFound."""
    story = session.get(Story, story_id)
    if story is None:
        raise NotFound(f"no story with id {story_id}")
    stmt = (
        select(
            Article.id, Article.title, Article.canonical_url, Article.published_at,
            Article.sort_at, Article.summary,
        )
        .where(Article.story_id == story_id)
        .order_by(Article.sort_at.desc(), Article.id.desc())
        .limit(limit + 1)
    )  # fmt: skip
    if cursor is not None:
        stmt = stmt.where(tuple_(Article.sort_at, Article.id) < cursor)
    rows = list(session.execute(stmt))
    return StoryDetail(
        id=story.id,
        article_count=story.article_count,
        first_article_id=story.first_article_id,
        created_at=story.created_at,
        updated_at=story.updated_at,
        articles=tuple(
            StoryArticle(id=i, title=t, url=u, published_at=p, sort_at=s, summary=m)
            for i, t, u, p, s, m in rows[:limit]
        ),
        more=len(rows) > limit,
    )
