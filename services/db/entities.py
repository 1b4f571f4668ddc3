"""Entities repository: an article's entities resolved through the alias table and stored.

One entity has a stable id and many names (``entity_aliases``); an article's entities reach
it through any of them (see :mod:`services.core.entity_resolution` for the rules).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import (
    BindParameter,
    Table,
    bindparam,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from services.core.entities import ArticleEntity as FoundEntity
from services.core.entity_resolution import (
    Resolution,
    qualifier_fits,
    resolve,
)
from services.core.gazetteer import Gazetteer, default_gazetteer
from services.db.entity_links import Link, add_links, replace_links
from services.db.models import Entity, EntityAlias
from services.db.upsert import Prepared, core

__all__ = ["StoredEntity", "store_entities", "store_new_entities"]


@dataclass(frozen=True)
class StoredEntity:
    """An entity as stored: its stable id, display name and type."""

    id: int
    name: str
    type: str


def store_entities(
    session: Session,
    *,
    article_id: int,
    found: Sequence[FoundEntity],
    now: datetime,
    gazetteer: Gazetteer | None = None,
) -> list[StoredEntity]:
    """Make the article's entities exactly ``found``, each resolved to its stored entity
    (for articles inserted in this transaction, :func:`store_new_entities`).

    Article counts stay exact however often an article is stored again with other entities.
    Writers take locks in one order: entities and aliases are inserted in (type, key)
    order and counts are updated in entity id order, so concurrent articles cannot deadlock.

    Returns:
        The stored entities in the order of ``found`` (one per entity, however many of the
        article's entities resolved to it).
    """
    gaz = gazetteer or default_gazetteer()
    plan = _Plan(found, gaz)
    names: dict[int, StoredEntity] = {}  # what the lookups and inserts already tell
    known, taken = _known_names(session, plan.wanted(), names)
    links = plan.store(session, known, taken, names, now)
    replace_links(session, article_id, links, now)
    return _named(session, [links], names)[0]


def store_new_entities(
    session: Session,
    items: Sequence[tuple[int, Sequence[FoundEntity]]],
    *,
    now: datetime,
    gazetteer: Gazetteer | None = None,
) -> list[list[StoredEntity]]:
    """:func:`store_entities` for articles inserted in this transaction, given as (article
    id, found), in order: the same entities, aliases, links and counts as one by one.

    Every name any of them could resolve through is looked up once; each article then
    resolves in turn, seeing the entities and aliases the ones before it added; their links
    go in one statement and their counts in one per distinct increment.
    """
    gaz = gazetteer or default_gazetteer()
    plans = [_Plan(found, gaz) for _, found in items]
    wanted: defaultdict[str, set[str]] = defaultdict(set)
    for plan in plans:
        for type_, keys in plan.wanted().items():
            wanted[type_] |= keys
    names: dict[int, StoredEntity] = {}
    known, taken = _known_names(session, wanted, names)
    every = [plan.store(session, known, taken, names, now) for plan in plans]
    add_links(
        session,
        [(article_id, links) for (article_id, _), links in zip(items, every, strict=True)],
        now=now,
    )
    return _named(session, every, names)


class _Plan:
    """One article's entities resolved to (type, key) slots, before any storage is read."""

    def __init__(self, found: Sequence[FoundEntity], gazetteer: Gazetteer) -> None:
        self.gazetteer = gazetteer
        self.resolved = [(ent, resolve(ent, gazetteer)) for ent in found]
        self.groups: defaultdict[tuple[str, str], list[Resolution]] = defaultdict(list)
        for _, res in self.resolved:
            self.groups[(res.type, res.key)].append(res)

    def wanted(self) -> dict[str, set[str]]:
        """Every name this article could resolve through, by type."""
        wanted: defaultdict[str, set[str]] = defaultdict(set)
        for (type_, _), group in self.groups.items():
            for res in group:
                wanted[type_].update(res.lookup_keys)
        return wanted

    def store(
        self,
        session: Session,
        known: defaultdict[str, dict[str, int]],
        taken: defaultdict[str, set[str]],
        names: dict[int, StoredEntity],
        now: datetime,
    ) -> dict[int, Link]:
        """Resolve each slot to a stored entity (creating it if need be), record the aliases,
        and return the article's links; ``known``, ``taken`` and ``names`` gain what was
        stored, as a new lookup would find it."""
        ids = {
            slot: _entity_for(session, group, now, self.gazetteer, known[slot[0]], names)
            for slot, group in sorted(self.groups.items())
        }
        for (type_, key), entity_id in _record_aliases(session, self.groups, ids, taken, now):
            known[type_].setdefault(key, entity_id)  # an entity's own key goes first
            taken[type_].add(key)
        links: dict[int, Link] = {}
        for ent, res in self.resolved:
            entity_id = ids[(res.type, res.key)]
            link = links.setdefault(entity_id, Link(0, ent.first_offset))
            link.mentions += ent.mentions
            link.first_offset = min(link.first_offset, ent.first_offset)
        return links


def _named(
    session: Session, every: Sequence[dict[int, Link]], names: dict[int, StoredEntity]
) -> list[list[StoredEntity]]:
    """Each article's stored entities, in link order; names not yet at hand are read."""
    missing = sorted({i for links in every for i in links if i not in names})
    if missing:  # found through a fallback, or a race
        rows = core(session).execute(_NAMES, {"ids": missing})
        names.update({i: StoredEntity(id=i, name=n, type=t) for i, n, t in rows})
    return [[names[i] for i in links] for links in every]


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
) -> list[tuple[tuple[str, str], int]]:
    """Remember every name seen for each entity; a name already taken keeps its entity.

    ``taken`` holds, per type, the alias keys known to exist already; the rest are inserted
    in one statement, in (type, key) order, skipping any a concurrent writer got first.
    Returns the ((type, key), entity id) inserted.
    """
    wanted: dict[tuple[str, str], tuple[int, str]] = {}
    for slot, group in groups.items():
        for res in group:
            for alias in res.aliases:
                if alias.key not in taken.get(res.type, ()):
                    wanted.setdefault((res.type, alias.key), (ids[slot], alias.text))
    if not wanted:
        return []
    rows = [
        {"entity_id": entity_id, "type": type, "key": key, "alias": text, "created_at": now}
        for (type, key), (entity_id, text) in sorted(wanted.items())
    ]
    conn = core(session)
    conn.execute(_ALIASES_INSERT.on(conn), rows)
    return [(slot, entity_id) for slot, (entity_id, _) in sorted(wanted.items())]


# Core tables: multi-row statements here are plain executemany (no ORM bulk semantics).
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
