"""Entities repository: an article's entities resolved through the alias table and stored.

One entity has a stable id and many names (``entity_aliases``); an article's entities reach
it through any of them (see :mod:`services.core.entity_resolution` for the rules).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

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

from services.core.entities import ArticleEntity as FoundEntity
from services.core.entity_recall import KnownName
from services.core.entity_resolution import (
    Resolution,
    qualifier_fits,
    reference_keys,
    resolve,
)
from services.core.gazetteer import Gazetteer, default_gazetteer
from services.db.models import Article, ArticleEntity, Entity, EntityAlias
from services.db.upsert import Prepared, core

__all__ = ["StoredEntity", "drop_links", "find_entity_ids", "known_names", "store_entities"]


@dataclass(frozen=True)
class StoredEntity:
    """An entity as stored: its stable id, display name and type."""

    id: int
    name: str
    type: str


@dataclass
class _Link:
    mentions: int
    first_offset: int


def store_entities(
    session: Session,
    *,
    article_id: int,
    found: Sequence[FoundEntity],
    now: datetime,
    gazetteer: Gazetteer | None = None,
    fresh: bool = False,
) -> list[StoredEntity]:
    """Make the article's entities exactly ``found``, each resolved to its stored entity.

    ``fresh`` says the article was inserted in this transaction (it has no links yet).

    Article counts stay exact however often an article is stored again with other entities.
    Writers take locks in one order: entities and aliases are inserted in (type, key)
    order and counts are updated in entity id order, so concurrent articles cannot deadlock.

    Returns:
        The stored entities in the order of ``found`` (one per entity, however many of the
        article's entities resolved to it).
    """
    gaz = gazetteer or default_gazetteer()
    resolved = [(ent, resolve(ent, gaz)) for ent in found]
    groups: defaultdict[tuple[str, str], list[Resolution]] = defaultdict(list)
    for _, res in resolved:
        groups[(res.type, res.key)].append(res)
    # Every name this article could resolve through, looked up in two queries in all.
    wanted: defaultdict[str, set[str]] = defaultdict(set)
    for (type_, _), group in groups.items():
        for res in group:
            wanted[type_].update(res.lookup_keys)
    names: dict[int, StoredEntity] = {}  # what the lookups and inserts already tell
    known, taken = _known_names(session, wanted, names)
    ids = {
        slot: _entity_for(session, group, now, gaz, known[slot[0]], names)
        for slot, group in sorted(groups.items())
    }
    _record_aliases(session, groups, ids, taken, now)
    links: dict[int, _Link] = {}
    for ent, res in resolved:
        entity_id = ids[(res.type, res.key)]
        link = links.setdefault(entity_id, _Link(0, ent.first_offset))
        link.mentions += ent.mentions
        link.first_offset = min(link.first_offset, ent.first_offset)
    _replace_links(session, article_id, links, now, fresh=fresh)
    missing = [i for i in links if i not in names]  # found through a fallback, or a race
    if missing:
        rows = core(session).execute(_NAMES, {"ids": missing})
        names.update({i: StoredEntity(id=i, name=n, type=t) for i, n, t in rows})
    return [names[i] for i in links]


def _entity_for(
    session: Session,
    group: list[Resolution],
    now: datetime,
    gazetteer: Gazetteer,
    hits: dict[str, int],
    names: dict[int, StoredEntity],
) -> int:
    """The id of the entity a group of resolutions with one (type, key) belongs to.

    ``hits`` maps the names already known for this type to their entity; an entity created
    here is added to it, so later groups of the same article see it (and to ``names``).
    """
    first = group[0]
    keys = list(dict.fromkeys(k for res in group for k in res.lookup_keys))
    for key in keys:
        if key in hits:
            return hits[key]
    for res in group:
        merged = _by_fallback(session, res, gazetteer)
        if merged is not None:
            return merged
    conn = core(session)
    row = conn.execute(
        _ENTITY_INSERT.on(conn),
        {
            "type": first.type,
            "key": first.key,
            "name": first.name,
            "aliases": [],
            "article_count": 0,
            "first_seen_at": now,
            "last_seen_at": now,
        },
    ).first()
    if row is None:  # stored since the lookup (by a writer without the dedup lock)
        slot = {"type": first.type, "key": first.key}
        entity_id = int(conn.execute(_ENTITY_ID, slot).scalar_one())
    else:
        entity_id = int(row[0])
        names[entity_id] = StoredEntity(id=entity_id, name=first.name, type=first.type)
    hits[first.key] = entity_id
    return entity_id


def _known_names(
    session: Session, wanted: dict[str, set[str]], names: dict[int, StoredEntity] | None = None
) -> tuple[defaultdict[str, dict[str, int]], defaultdict[str, set[str]]]:
    """For each type, which of its ``wanted`` keys name an entity (its own key first, then
    its aliases), and which of them are stored aliases: one query for all types. The entities
    found go into ``names`` with their display name.

    Both halves filter on ``type IN (...) AND key IN (...)`` so the (type, key) unique indexes
    serve them; pairs of a type with another type's key are dropped here.
    """
    known: defaultdict[str, dict[str, int]] = defaultdict(dict)
    taken: defaultdict[str, set[str]] = defaultdict(set)
    keys = sorted(set().union(*wanted.values())) if wanted else []
    if not keys:
        return known, taken
    conn = core(session)
    params = {"types": sorted(wanted), "keys": keys}
    for alias, type_, key, entity_id, name, entity_type in conn.execute(_KNOWN_KEYS, params):
        if names is not None:
            names[entity_id] = StoredEntity(id=entity_id, name=name, type=entity_type)
        if key not in wanted[type_]:
            continue
        if alias:
            known[type_].setdefault(key, entity_id)
            taken[type_].add(key)
        else:
            known[type_][key] = entity_id
    return known, taken


def _by_fallback(session: Session, res: Resolution, gazetteer: Gazetteer) -> int | None:
    """The known organisation a country-qualified name joins ("U.S. State Department")."""
    if not res.fallback or res.qualifier is None:
        return None
    known, _ = _known_names(session, {res.type: set(res.fallback)})
    hits = known[res.type]
    for key in res.fallback:
        if key in hits:
            entity_id = hits[key]
            names = session.scalars(
                select(EntityAlias.alias).where(EntityAlias.entity_id == entity_id)
            )
            if qualifier_fits(res.qualifier, names, gazetteer):
                return entity_id
    return None


def _record_aliases(
    session: Session,
    groups: dict[tuple[str, str], list[Resolution]],
    ids: dict[tuple[str, str], int],
    taken: dict[str, set[str]],
    now: datetime,
) -> None:
    """Remember every name seen for each entity; a name already taken keeps its entity.

    ``taken`` holds, per type, the alias keys known to exist already; the rest are inserted
    in one statement, in (type, key) order, skipping any a concurrent writer got first.
    """
    wanted: dict[tuple[str, str], tuple[int, str]] = {}
    for slot, group in groups.items():
        for res in group:
            for alias in res.aliases:
                if alias.key not in taken.get(res.type, ()):
                    wanted.setdefault((res.type, alias.key), (ids[slot], alias.text))
    if not wanted:
        return
    rows = [
        {"entity_id": entity_id, "type": type, "key": key, "alias": text, "created_at": now}
        for (type, key), (entity_id, text) in sorted(wanted.items())
    ]
    conn = core(session)
    conn.execute(_ALIASES_INSERT.on(conn), rows)


# Core tables: multi-row statements here are plain executemany (no ORM bulk semantics).
_LINKS = cast(Table, ArticleEntity.__table__)
_ENTITIES = cast(Table, Entity.__table__)
_ALIASES = cast(Table, EntityAlias.__table__)
_TYPES: BindParameter[str] = bindparam("types", expanding=True)
_KEYS: BindParameter[str] = bindparam("keys", expanding=True)
# Entities' own keys (alias 0), then stored aliases (1), in one round trip, each with the
# entity's display name and type.
_KNOWN_KEYS = union_all(
    select(literal_column("0").label("alias"), _ENTITIES.c.type, _ENTITIES.c.key,
           _ENTITIES.c.id, _ENTITIES.c.name, _ENTITIES.c.type.label("entity_type"))
    .where(_ENTITIES.c.type.in_(_TYPES), _ENTITIES.c.key.in_(_KEYS)),
    select(literal_column("1").label("alias"), _ALIASES.c.type, _ALIASES.c.key,
           _ALIASES.c.entity_id, _ENTITIES.c.name, _ENTITIES.c.type)
    .select_from(_ALIASES.join(_ENTITIES, _ENTITIES.c.id == _ALIASES.c.entity_id))
    .where(_ALIASES.c.type.in_(_TYPES), _ALIASES.c.key.in_(_KEYS)),
).order_by("alias")  # fmt: skip
_NAMES = select(_ENTITIES.c.id, _ENTITIES.c.name, _ENTITIES.c.type).where(
    _ENTITIES.c.id.in_(bindparam("ids", expanding=True))
)
_ENTITY_ID = select(_ENTITIES.c.id).where(
    _ENTITIES.c.type == bindparam("type"), _ENTITIES.c.key == bindparam("key")
)
_ENTITY_INSERT = Prepared(
    lambda insert: insert(_ENTITIES).on_conflict_do_nothing().returning(_ENTITIES.c.id)
)
_ALIASES_INSERT = Prepared(lambda insert: insert(_ALIASES).on_conflict_do_nothing())
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
        article_count=_ENTITIES.c.article_count + 1,
        last_seen_at=bindparam("seen", type_=_ENTITIES.c.last_seen_at.type),
    )
)
_LINK_UPDATE = (
    update(_LINKS)
    .where(_LINKS.c.article_id == bindparam("aid"), _LINKS.c.entity_id == bindparam("eid"))
    .values(mentions=bindparam("m"), first_offset=bindparam("o"))
)


def _replace_links(
    session: Session, article_id: int, links: dict[int, _Link], now: datetime, *, fresh: bool
) -> None:
    """Set the article's entity links to ``links`` and move article counts by exactly one.

    The article's row is locked first (PostgreSQL), so two writers re-storing the same
    article one after the other each see the links the other committed. A ``fresh``
    article (inserted in this transaction) has no links yet: nothing to lock or read.
    """
    before: dict[int, tuple[int, int]] = {}
    conn = core(session)
    if not fresh:
        if conn.dialect.name != "sqlite":  # SQLite: the writer lock suffices
            conn.execute(_ARTICLE_LOCK.with_for_update(), {"id": article_id})
        rows = conn.execute(_LINKS_OF, {"id": article_id})
        before = {entity_id: (mentions, offset) for entity_id, mentions, offset in rows}
    removed = sorted(set(before) - set(links))
    if removed:
        conn.execute(
            delete(_LINKS).where(_LINKS.c.article_id == article_id, _LINKS.c.entity_id.in_(removed))
        )
    added = [
        {
            "article_id": article_id,
            "entity_id": i,
            "mentions": k.mentions,
            "first_offset": k.first_offset,
        }
        for i, k in sorted(links.items())
        if i not in before
    ]
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
    if fresh:  # every linked entity gains this article: one execution for all of them
        if links:
            conn.execute(_COUNT_UP, {"ids": sorted(links), "seen": now})
        return
    moves: list[tuple[int, int, datetime | None]] = [(i, -1, None) for i in removed]
    moves += [(i, 0 if i in before else 1, now) for i in links]
    if moves:
        conn.execute(
            _COUNT_UPDATE, [{"eid": i, "delta": d, "seen": t} for i, d, t in sorted(moves)]
        )


def drop_links(session: Session, *, article_id: int, now: datetime) -> None:
    """Remove all of an article's entity links, lowering each entity's article count."""
    _replace_links(session, article_id, {}, now, fresh=False)


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
