"""Read-side queries for the API about articles: keyset pages and details as frozen records."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    bindparam,
    func,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy.orm import Session

from services.core.errors import NotFound
from services.core.search import Query
from services.db import search as search_index
from services.db.models import Article, ArticleEntity, ArticleUrl, Entity, Feed, Sighting
from services.db.stories import StoryRef, story_ref

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a keyset listing; ``more`` says whether a next page exists."""

    items: tuple[T, ...]
    more: bool


@dataclass(frozen=True)
class ArticleSummary:
    id: int
    title: str
    url: str | None
    published_at: datetime | None
    sort_at: datetime
    language: str | None
    summary: str | None
    feed_ids: tuple[int, ...]


@dataclass(frozen=True)
class ArticleEntityRef:
    """An entity as mentioned by one article."""

    id: int
    name: str
    type: str
    mentions: int


@dataclass(frozen=True)
class ArticleSource:
    """One feed item that carried the article."""

    feed_id: int
    feed_title: str | None
    feed_url: str
    item_key: str
    url: str | None
    first_seen_at: datetime


@dataclass(frozen=True)
class ArticleDetail:
    id: int
    title: str
    url: str | None
    canonical_url: str | None
    published_at: datetime | None
    sort_at: datetime
    language: str | None
    summary: str | None
    byline: str | None
    text: str
    story_id: int | None
    boilerplate: Mapping[str, Any]
    urls: tuple[str, ...]
    entities: tuple[ArticleEntityRef, ...]
    sources: tuple[ArticleSource, ...]
    created_at: datetime
    updated_at: datetime
    story: StoryRef | None = None

    @property
    def feed_ids(self) -> tuple[int, ...]:
        return tuple(sorted({s.feed_id for s in self.sources}))


SUMMARY_COLUMNS = (
    Article.id,
    Article.title,
    Article.canonical_url,
    Article.published_at,
    Article.sort_at,
    Article.language,
    Article.summary,
)
if TYPE_CHECKING:
    _SummaryRow = Row[int, str, str | None, datetime | None, datetime, str | None, str | None]
NEWEST_FIRST = (Article.sort_at.desc(), Article.id.desc())


def list_articles(
    session: Session,
    *,
    limit: int,
    cursor: tuple[datetime, int] | None = None,
    entity_ids: Sequence[int | Sequence[int]] | None = None,
    feed_id: int | None = None,
    search: Query | None = None,
) -> Page[ArticleSummary]:
    """Articles newest first, ordered by ``(sort_at desc, id desc)``.

    One statement reads the page with each article's feeds and URL. Statements are built
    once per shape (which filters, which plan) and take every value as a bound parameter.

    Args:
        limit: page size.
        cursor: ``(sort_at, id)`` of the last article of the previous page.
        entity_ids: an article must mention every element; an element that is a sequence of
            ids is satisfied by any of them (one name can denote entities of several types).
        feed_id: only articles that this feed carried.
        search: only articles the full-text query finds (still newest first).
    """
    dialect = session.get_bind().dialect.name
    conn = session.connection()
    values: dict[str, Any] = {"limit": limit + 1}
    filters: list[tuple[str, int, str]] = []
    for index, element in enumerate(entity_ids or ()):
        ids = [element] if isinstance(element, int) else list(element)
        if not ids:
            return Page(items=(), more=False)
        values[f"e{index}"] = ids
        filters.append(("entity", index, ""))
    if feed_id is not None:
        values["feed_id"] = feed_id
        filters.append(("feed", 0, ""))
    if search is not None:
        values |= search_index.search_params(search, dialect)
        filters.append(("search", 0, ""))
    if dialect == "sqlite":
        filters = [(kind, i, _sqlite_plan(conn, kind, i, values)) for kind, i, _ in filters]
    if cursor is not None:
        values["cursor_sort"], values["cursor_id"] = cursor
    stmt = _page_statement(dialect, cursor is not None, tuple(filters))
    rows = conn.execute(stmt, values).all()
    items = tuple(
        ArticleSummary(
            id=r[0], title=r[1], url=r[2], published_at=r[3], sort_at=r[4], language=r[5],
            summary=r[6], feed_ids=_id_tuple(r[7]),
        )
        for r in rows[:limit]
    )  # fmt: skip
    return Page(items=items, more=len(rows) > limit)


# Up to this many articles a filter matches, a page reads them all by id and sorts them;
# beyond, it walks ix_articles_sort newest first and stops after a page (about
# sqrt(page size x articles) is where the two cost the same).
FEW_MATCHES = 2000


def _matching_ids(kind: str, index: int) -> Select[Any]:
    """The ids of the articles one filter keeps, its values left to bound parameters."""
    if kind == "entity":
        return select(ArticleEntity.article_id).where(
            ArticleEntity.entity_id.in_(bindparam(f"e{index}", expanding=True))
        )
    if kind == "feed":
        return select(Sighting.article_id).where(Sighting.feed_id == bindparam("feed_id"))
    return search_index.fts_ids()


@lru_cache(maxsize=16)
def _probe_statement(kind: str, index: int) -> Select[Any]:
    bounded: Select[Any] = _matching_ids(kind, index).with_only_columns(literal_column("1"))
    return select(func.count()).select_from(bounded.limit(FEW_MATCHES + 1).subquery())


def _sqlite_plan(conn: Connection, kind: str, index: int, values: Mapping[str, Any]) -> str:
    """SQLite's plan for one filter, from a count of its matches that stops past FEW_MATCHES.

    SQLite has no statistics to tell a filter matching ten articles from one matching half
    of them, and always reads every match by id and sorts (a common entity: tens of
    thousands of rows for a page of 50). Few matches keep that plan (``in``); more make the
    newest-first index lead, each article it reaches checked by one index probe (``exists``)
    or, for FTS5, whose per-row lookups cost more than listing every match once, against
    the matches listed once (``scan``: ``id + 0`` so that no index serves the IN).
    """
    few = (conn.scalar(_probe_statement(kind, index), values) or 0) <= FEW_MATCHES
    if few:
        return "in"
    return "scan" if kind == "search" else "exists"


def _filter(dialect: str, kind: str, index: int, plan: str) -> ColumnElement[bool]:
    if kind == "search" and dialect != "sqlite":
        return search_index.vector_matches()
    ids_query = _matching_ids(kind, index)
    if plan == "scan":
        return (Article.id + 0).in_(ids_query)
    if plan == "exists":
        (column,) = ids_query.selected_columns
        return ids_query.where(column == Article.id).exists()
    return Article.id.in_(ids_query)


@lru_cache(maxsize=128)
def _page_statement(
    dialect: str, with_cursor: bool, filters: tuple[tuple[str, int, str], ...]
) -> Select[Any]:
    """A page of article summaries: the newest ``limit`` articles passing ``filters``, each
    with its feed ids (aggregated) and its URL (canonical, else the first one seen)."""
    inner = select(*SUMMARY_COLUMNS).order_by(*NEWEST_FIRST).limit(bindparam("limit"))
    if with_cursor:
        inner = inner.where(
            tuple_(Article.sort_at, Article.id)
            < tuple_(
                bindparam("cursor_sort", type_=Article.sort_at.type),
                bindparam("cursor_id", type_=Article.id.type),
            )
        )
    for kind, index, plan in filters:
        inner = inner.where(_filter(dialect, kind, index, plan))
    page = inner.subquery("page")
    if dialect == "sqlite":
        feed_ids: ColumnElement[Any] = func.group_concat(Sighting.feed_id)
    else:
        feed_ids = func.array_agg(Sighting.feed_id)
    feeds = select(feed_ids).where(Sighting.article_id == page.c.id).scalar_subquery()
    first_url = (
        select(ArticleUrl.url)
        .where(ArticleUrl.article_id == page.c.id)
        .order_by(ArticleUrl.id)
        .limit(1)
        .scalar_subquery()
    )
    return select(
        page.c.id, page.c.title, func.coalesce(page.c.canonical_url, first_url),
        page.c.published_at, page.c.sort_at, page.c.language, page.c.summary, feeds,
    ).order_by(page.c.sort_at.desc(), page.c.id.desc())  # fmt: skip


def _id_tuple(value: str | Sequence[int] | None) -> tuple[int, ...]:
    """Sorted distinct ids from an aggregate: SQLite's ``group_concat`` text or an array."""
    if not value:
        return ()
    if isinstance(value, str):
        return tuple(sorted({int(part) for part in value.split(",")}))
    return tuple(sorted(set(value)))


def get_article(session: Session, article_id: int) -> ArticleDetail:
    """One article with its URLs, entities and sources. Raises NotFound."""
    row = session.get(Article, article_id)
    if row is None:
        raise NotFound(f"no article with id {article_id}")
    urls = tuple(
        session.scalars(
            select(ArticleUrl.url)
            .where(ArticleUrl.article_id == article_id)
            .order_by(ArticleUrl.id)
        )
    )
    entities = session.execute(
        select(Entity.id, Entity.name, Entity.type, ArticleEntity.mentions)
        .join(ArticleEntity, ArticleEntity.entity_id == Entity.id)
        .where(ArticleEntity.article_id == article_id)
        .order_by(ArticleEntity.mentions.desc(), ArticleEntity.first_offset, Entity.id)
    )
    sources = session.execute(
        select(
            Sighting.feed_id, Feed.title, Feed.url, Sighting.item_key, Sighting.url,
            Sighting.first_seen_at,
        )
        .join(Feed, Feed.id == Sighting.feed_id)
        .where(Sighting.article_id == article_id)
        .order_by(Sighting.first_seen_at, Sighting.id)
    )  # fmt: skip
    return ArticleDetail(
        id=row.id,
        title=row.title,
        url=row.canonical_url or (urls[0] if urls else None),
        canonical_url=row.canonical_url,
        published_at=row.published_at,
        sort_at=row.sort_at,
        language=row.language,
        summary=row.summary,
        byline=row.byline,
        text=row.text,
        story_id=row.story_id,
        boilerplate=dict(row.boilerplate or {}),
        urls=urls,
        entities=tuple(
            ArticleEntityRef(id=i, name=n, type=t, mentions=m) for i, n, t, m in entities
        ),
        sources=tuple(
            ArticleSource(
                feed_id=f, feed_title=ft, feed_url=fu, item_key=k, url=u, first_seen_at=seen
            )
            for f, ft, fu, k, u, seen in sources
        ),
        created_at=row.created_at,
        updated_at=row.updated_at,
        story=story_ref(session, row.story_id, article_id=row.id),
    )


def summaries(session: Session, rows: Sequence[_SummaryRow]) -> list[ArticleSummary]:
    """Summaries for a page of article rows, with their feeds and URLs in two batched queries."""
    feeds = _feed_ids(session, [r.id for r in rows])
    urls = _first_urls(session, [r.id for r in rows if r.canonical_url is None])
    return [
        ArticleSummary(
            id=r.id,
            title=r.title,
            url=r.canonical_url or urls.get(r.id),
            published_at=r.published_at,
            sort_at=r.sort_at,
            language=r.language,
            summary=r.summary,
            feed_ids=feeds.get(r.id, ()),
        )
        for r in rows
    ]


def _feed_ids(session: Session, article_ids: Iterable[int]) -> dict[int, tuple[int, ...]]:
    ids = list(article_ids)
    if not ids:
        return {}
    stmt = (
        select(Sighting.article_id, Sighting.feed_id)
        .where(Sighting.article_id.in_(ids))
        .distinct()
        .order_by(Sighting.article_id, Sighting.feed_id)
    )
    found: defaultdict[int, list[int]] = defaultdict(list)
    for article_id, feed_id in session.execute(stmt):
        if article_id is not None:
            found[article_id].append(feed_id)
    return {k: tuple(v) for k, v in found.items()}


def _first_urls(session: Session, article_ids: Iterable[int]) -> dict[int, str]:
    """The first URL each article was seen under (for articles with no canonical URL)."""
    ids = list(article_ids)
    if not ids:
        return {}
    first = (
        select(func.min(ArticleUrl.id))
        .where(ArticleUrl.article_id.in_(ids))
        .group_by(ArticleUrl.article_id)
    )
    stmt = select(ArticleUrl.article_id, ArticleUrl.url).where(ArticleUrl.id.in_(first))
    return {article_id: url for article_id, url in session.execute(stmt)}
