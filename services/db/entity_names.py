"""Entity names for readers: the names the recogniser learns, what a client's reference
denotes, an entity's aliases."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.core.entity_recall import KnownName
from services.core.entity_resolution import reference_keys
from services.core.gazetteer import Gazetteer, default_gazetteer
from services.db.models import Entity, EntityAlias


def known_names(
    session: Session, *, limit: int, min_articles: int = 2, min_articles_one_word: int = 5
) -> list[KnownName]:
    """Names (display names and aliases) of the ``limit`` most mentioned entities.

    Only entities seen in ``min_articles`` articles or more, and ``min_articles_one_word``
    for a one-word name ("Trump", "Hamas"): one sighting is weak evidence that a string is a
    name, and a single word is the likeliest to be an ordinary word too. The recogniser
    applies its own safeguards on top.
    """
    top = (
        select(Entity.id)
        .where(Entity.article_count >= min_articles)
        .order_by(Entity.article_count.desc(), Entity.id)
        .limit(limit)
        .scalar_subquery()
    )
    rows = session.execute(
        select(EntityAlias.alias, EntityAlias.type, Entity.article_count)
        .join(Entity, Entity.id == EntityAlias.entity_id)
        .where(Entity.id.in_(top))
        .union_all(select(Entity.name, Entity.type, Entity.article_count).where(Entity.id.in_(top)))
    )
    found = dict.fromkeys(
        KnownName(text, type)
        for text, type, count in rows
        if len(text.split()) > 1 or count >= min_articles_one_word
    )
    return list(found)


def find_entity_ids(session: Session, ref: str, *, gazetteer: Gazetteer | None = None) -> list[int]:
    """Entities a name or any alias of theirs denotes, of every type, most mentioned first.

    "America", "U.S." and "United States" all find the United States.
    """
    keys = reference_keys(ref, gazetteer or default_gazetteer())
    if not keys:
        return []
    by_alias = select(EntityAlias.entity_id).where(EntityAlias.key.in_(keys))
    stmt = (
        select(Entity.id)
        .where(Entity.key.in_(keys) | Entity.id.in_(by_alias))
        .order_by(Entity.article_count.desc(), Entity.id)
    )
    return list(session.scalars(stmt))


def alias_names(session: Session, entity_ids: Iterable[int]) -> dict[int, tuple[str, ...]]:
    """Each entity's aliases other than its display name, sorted."""
    ids = list(entity_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(EntityAlias.entity_id, EntityAlias.alias)
        .join(Entity, Entity.id == EntityAlias.entity_id)
        .where(EntityAlias.entity_id.in_(ids), EntityAlias.alias != Entity.name)
    )
    found: defaultdict[int, set[str]] = defaultdict(set)
    for entity_id, alias in rows:
        found[entity_id].add(alias)
    return {i: tuple(sorted(found.get(i, ()))) for i in ids}
