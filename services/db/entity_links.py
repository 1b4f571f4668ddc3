"""An article's links to its entities, and the entities' article counts they keep exact."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from services.db.models import Article, ArticleEntity, Entity
from services.db.upsert import core


@dataclass
class Link:
    """How an article mentions one entity."""

    mentions: int
    first_offset: int


_LINKS = cast(Table, ArticleEntity.__table__)
_ENTITIES = cast(Table, Entity.__table__)
_LINKS_INSERT = insert(_LINKS)
_LINKS_OF = select(_LINKS.c.entity_id, _LINKS.c.mentions, _LINKS.c.first_offset).where(
    _LINKS.c.article_id == bindparam("id")
)
_ARTICLE_LOCK = select(Article.__table__.c.id).where(Article.__table__.c.id == bindparam("id"))
_COUNT_UPDATE = (
    update(_ENTITIES)
    .where(_ENTITIES.c.id == bindparam("eid"))
    .values(
        article_count=_ENTITIES.c.article_count + bindparam("delta"),
        last_seen_at=func.coalesce(
            bindparam("seen", type_=_ENTITIES.c.last_seen_at.type), _ENTITIES.c.last_seen_at
        ),
    )
)
_COUNT_UP = (
    update(_ENTITIES)
    .where(_ENTITIES.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        article_count=_ENTITIES.c.article_count + bindparam("delta"),
        last_seen_at=bindparam("seen", type_=_ENTITIES.c.last_seen_at.type),
    )
)
_LINK_UPDATE = (
    update(_LINKS)
    .where(_LINKS.c.article_id == bindparam("aid"), _LINKS.c.entity_id == bindparam("eid"))
    .values(mentions=bindparam("m"), first_offset=bindparam("o"))
)


def add_links(
    session: Session, items: Sequence[tuple[int, dict[int, Link]]], *, now: datetime
) -> None:
    """Link articles inserted in this transaction (no links yet) to their entities, given as
    (article id, links by entity id): one statement for the links, and one per distinct
    increment for the counts (an entity several of them mention gains that many), each in
    entity id order."""
    conn = core(session)
    rows = [row for article_id, links in items for row in _link_rows(article_id, links)]
    if rows:
        conn.execute(_LINKS_INSERT, rows)
    gained: Counter[int] = Counter(i for _, links in items for i in links)
    by_delta: defaultdict[int, list[int]] = defaultdict(list)
    for entity_id, delta in sorted(gained.items()):
        by_delta[delta].append(entity_id)
    for delta, ids in sorted(by_delta.items()):
        conn.execute(_COUNT_UP, {"ids": ids, "delta": delta, "seen": now})


def _link_rows(article_id: int, links: dict[int, Link]) -> list[dict[str, int]]:
    return [
        {"article_id": article_id, "entity_id": i, "mentions": k.mentions,
         "first_offset": k.first_offset}
        for i, k in sorted(links.items())
    ]  # fmt: skip


def replace_links(session: Session, article_id: int, links: dict[int, Link], now: datetime) -> None:
    """Set a stored article's entity links to ``links`` and move article counts by exactly
    one (a new article's: :func:`store_new_entities`).

    The article's row is locked first (PostgreSQL), so two writers re-storing the same
    article one after the other each see the links the other committed.
    """
    conn = core(session)
    if conn.dialect.name != "sqlite":  # SQLite: the writer lock suffices
        conn.execute(_ARTICLE_LOCK.with_for_update(), {"id": article_id})
    rows = conn.execute(_LINKS_OF, {"id": article_id})
    before = {entity_id: (mentions, offset) for entity_id, mentions, offset in rows}
    removed = sorted(set(before) - set(links))
    if removed:
        conn.execute(
            delete(_LINKS).where(_LINKS.c.article_id == article_id, _LINKS.c.entity_id.in_(removed))
        )
    added = _link_rows(article_id, {i: k for i, k in links.items() if i not in before})
    if added:
        conn.execute(_LINKS_INSERT, added)
    changed = [
        {"aid": article_id, "eid": i, "m": k.mentions, "o": k.first_offset}
        for i, k in sorted(links.items())
        if i in before and before[i] != (k.mentions, k.first_offset)
    ]
    if changed:
        conn.execute(_LINK_UPDATE, changed)
    # One statement, in entity id order (the lock order every writer uses): linked entities
    # were seen now, a removed one keeps its last sighting.
    moves: list[tuple[int, int, datetime | None]] = [(i, -1, None) for i in removed]
    moves += [(i, 0 if i in before else 1, now) for i in links]
    if moves:
        conn.execute(
            _COUNT_UPDATE, [{"eid": i, "delta": d, "seen": t} for i, d, t in sorted(moves)]
        )


def drop_links(session: Session, *, article_id: int, now: datetime) -> None:
    """Remove all of an article's entity links, lowering each entity's article count."""
    replace_links(session, article_id, {}, now)
