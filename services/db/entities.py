"""Entities repository: an article's entities resolved through the alias table and stored.

One entity has a stable id and many names (``entity_aliases``); an article's entities reach
it through any of them (see :mod:`services.core.entity_resolution` for the rules).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, select, text
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
    pending = _Pending(session, now, known, names)
    planned = plan.store(pending, known, taken)
    pending.flush()
    links = _final(planned)
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
    resolves in turn, seeing the entities and aliases the ones before it added. Their new
    entities go in one statement, their new aliases in one, their links in one and their
    counts in one per distinct increment.
    """
    gaz = gazetteer or default_gazetteer()
    plans = [_Plan(found, gaz) for _, found in items]
    wanted: defaultdict[str, set[str]] = defaultdict(set)
    for plan in plans:
        for type_, keys in plan.wanted().items():
            wanted[type_] |= keys
    names: dict[int, StoredEntity] = {}
    known, taken = _known_names(session, wanted, names)
    pending = _Pending(session, now, known, names)
    planned = [plan.store(pending, known, taken) for plan in plans]
    pending.flush()
    every = [_final(links) for links in planned]
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
        self, pending: _Pending, known: _Known, taken: defaultdict[str, set[str]]
    ) -> dict[int | _New, Link]:
        """Resolve each slot to an entity (one to create goes to ``pending``), note the
        aliases to record, and return the article's links; ``known`` and ``taken`` gain
        them at once, as a new lookup would find them once stored."""
        ids = _entities_for(pending, sorted(self.groups.items()), self.gazetteer, known)
        for (type_, key), entity in _record_aliases(self.groups, ids, taken, pending):
            known[type_].setdefault(key, entity)  # an entity's own key goes first
            taken[type_].add(key)
        links: dict[int | _New, Link] = {}
        for ent, res in self.resolved:
            entity = ids[(res.type, res.key)]
            link = links.setdefault(entity, Link(0, ent.first_offset))
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


class _New:
    """An entity decided on but not inserted yet; ``id`` is set once it is."""

    __slots__ = ("id",)

    def __init__(self) -> None:
        self.id: int | None = None


# Per type, the entity each known name denotes: stored, or to be inserted.
_Known = defaultdict[str, dict[str, "int | _New"]]


def _id(entity: int | _New) -> int:
    if isinstance(entity, int):
        return entity
    assert entity.id is not None, "the pending entities are flushed first"
    return entity.id


def _final(links: dict[int | _New, Link]) -> dict[int, Link]:
    """An article's links by stored entity id, once its pending entities are inserted."""
    final: dict[int, Link] = {}
    for entity, link in links.items():
        entity_id = _id(entity)
        if entity_id in final:  # one already stored by another writer under this name
            kept = final[entity_id]
            kept.mentions += link.mentions
            kept.first_offset = min(kept.first_offset, link.first_offset)
        else:
            final[entity_id] = link
    return final


class _Pending:
    """The entities and aliases the articles stored together decided to create, inserted
    together: one statement for the entities, one for the aliases (each in (type, key)
    order, as lock order requires). ``known`` maps their names to them meanwhile."""

    def __init__(
        self, session: Session, now: datetime, known: _Known, names: dict[int, StoredEntity]
    ) -> None:
        self.session, self.now, self.known, self.names = session, now, known, names
        self.entities: list[tuple[Resolution, _New]] = []
        self.aliases: list[tuple[tuple[str, str], int | _New, str]] = []

    def entity(self, res: Resolution) -> _New:
        new = _New()
        self.entities.append((res, new))
        return new

    def alias(self, type_: str, key: str, entity: int | _New, text: str) -> None:
        self.aliases.append(((type_, key), entity, text))

    def flush(self) -> None:
        """Insert what is pending; the names that denoted it then map to the stored ids."""
        if self.entities:
            ordered = sorted(self.entities, key=lambda e: (e[0].type, e[0].key))
            ids = _insert_entities(self.session, [r for r, _ in ordered], self.now, self.names)
            for (_, new), entity_id in zip(ordered, ids, strict=True):
                new.id = entity_id
            for hits in self.known.values():
                for key, entity in hits.items():
                    if isinstance(entity, _New):
                        hits[key] = _id(entity)
            self.entities.clear()
        if self.aliases:
            rows = [
                {"entity_id": _id(entity), "type": type_, "key": key, "alias": text,
                 "created_at": self.now}
                for (type_, key), entity, text in sorted(self.aliases, key=lambda a: a[0])
            ]  # fmt: skip
            conn = core(self.session)
            conn.execute(_ALIASES_INSERT.on(conn), rows)
            self.aliases.clear()


def _entities_for(
    pending: _Pending,
    slots: list[tuple[tuple[str, str], list[Resolution]]],
    gazetteer: Gazetteer,
    known: _Known,
) -> dict[tuple[str, str], int | _New]:
    """The entity each slot (its (type, key) and resolutions, in (type, key) order) belongs
    to: one a name of it already denotes (``known``, by type, which gains the entities
    created here, so later slots and articles see them), a known organisation it is a
    country-qualified name of, or a new one (``pending``). A fallback lookup reads storage,
    so what is pending is inserted first, as one by one it would have been."""
    found: dict[tuple[str, str], int | _New] = {}
    for slot, group in slots:
        hits = known[slot[0]]
        keys = list(dict.fromkeys(k for res in group for k in res.lookup_keys))
        entity: int | _New | None = next((hits[k] for k in keys if k in hits), None)
        if entity is None and any(res.fallback and res.qualifier is not None for res in group):
            pending.flush()
            entity = next(
                (m for res in group if (m := _by_fallback(pending.session, res, gazetteer))
                 is not None),
                None,
            )  # fmt: skip
        if entity is None:
            entity = hits[group[0].key] = pending.entity(group[0])
        found[slot] = entity
    return found


def _insert_entities(
    session: Session, new: list[Resolution], now: datetime, names: dict[int, StoredEntity]
) -> list[int]:
    """Insert an entity for each of ``new`` (distinct (type, key)), in order, in one
    statement; their ids. One stored meanwhile by a writer without the dedup lock is kept."""
    conn = core(session)
    rows = [
        {"type": res.type, "key": res.key, "name": res.name, "aliases": [], "article_count": 0,
         "first_seen_at": now, "last_seen_at": now}
        for res in new
    ]  # fmt: skip
    inserted = {(t, k): int(i) for i, t, k in conn.execute(_ENTITIES_INSERT.on(conn), rows)}
    ids = []
    for res in new:
        entity_id = inserted.get((res.type, res.key))
        if entity_id is None:  # stored since the lookup
            entity_id = int(
                conn.execute(_ENTITY_ID, {"type": res.type, "key": res.key}).scalar_one()
            )
        else:
            names[entity_id] = StoredEntity(id=entity_id, name=res.name, type=res.type)
        ids.append(entity_id)
    return ids


def _known_names(
    session: Session, wanted: dict[str, set[str]], names: dict[int, StoredEntity] | None = None
) -> tuple[_Known, defaultdict[str, set[str]]]:
    """For each type, which of its ``wanted`` keys name an entity (its own key first, then
    its aliases), and which of them are stored aliases: one query for all of them. The
    entities found go into ``names`` with their display name."""
    known: _Known = defaultdict(dict)
    taken: defaultdict[str, set[str]] = defaultdict(set)
    pairs = sorted((type_, key) for type_, keys in wanted.items() for key in keys)
    if not pairs:
        return known, taken
    conn = core(session)
    dialect = conn.dialect.name
    rows = conn.execute(_KNOWN_KEYS[dialect], _pairs_params(dialect, pairs))
    for alias, type_, key, entity_id, name, entity_type in rows:
        if names is not None:
            names[entity_id] = StoredEntity(id=entity_id, name=name, type=entity_type)
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
            entity_id = _id(hits[key])
            names = session.scalars(
                select(EntityAlias.alias).where(EntityAlias.entity_id == entity_id)
            )
            if qualifier_fits(res.qualifier, names, gazetteer):
                return entity_id
    return None


def _record_aliases(
    groups: dict[tuple[str, str], list[Resolution]],
    ids: dict[tuple[str, str], int | _New],
    taken: dict[str, set[str]],
    pending: _Pending,
) -> list[tuple[tuple[str, str], int | _New]]:
    """Remember every name seen for each entity; a name already taken keeps its entity.

    ``taken`` holds, per type, the alias keys known to exist already; the rest go to
    ``pending``, inserted together, skipping any a concurrent writer got first. Returns the
    ((type, key), entity) recorded.
    """
    wanted: dict[tuple[str, str], tuple[int | _New, str]] = {}
    for slot, group in groups.items():
        for res in group:
            for alias in res.aliases:
                if alias.key not in taken.get(res.type, ()):
                    wanted.setdefault((res.type, alias.key), (ids[slot], alias.text))
    for (type_, key), (entity, text_) in wanted.items():
        pending.alias(type_, key, entity, text_)
    return [(slot, entity) for slot, (entity, _) in sorted(wanted.items())]


# Core tables: multi-row statements here are plain executemany (no ORM bulk semantics).
_ENTITIES = cast(Table, Entity.__table__)
_ALIASES = cast(Table, EntityAlias.__table__)
# Entities' own keys (alias 0), then stored aliases (1), in one round trip, each with the
# entity's display name and type, for exactly the wanted (type, key) pairs: each pair probes
# the (type, key) unique index on both columns. Lists of types and of keys would look up
# every type with every key, and PostgreSQL (before 17) then matches the second column of
# the index by filtering every entry of the wanted types: a scan that grows with the table.
# The pairs travel as list parameters, so the statement's text is the same for any number
# of them (SQLite keeps it prepared, PostgreSQL can plan it once): one JSON array of
# [type, key] arrays on SQLite, read first (CROSS JOIN keeps it the outer loop), two text
# arrays unnested side by side on PostgreSQL.
_WANTED = {
    "sqlite": (
        "(SELECT json_extract(value, '$[0]') AS type, json_extract(value, '$[1]') AS key "
        "FROM json_each(:pairs)) AS w CROSS JOIN"
    ),
    "postgresql": "unnest(CAST(:types AS text[]), CAST(:keys AS text[])) AS w(type, key) JOIN",
}
_KNOWN_KEYS = {
    dialect: text(
        "SELECT 0 AS alias, e.type, e.key, e.id, e.name, e.type AS entity_type "
        f"FROM {wanted} entities AS e ON e.type = w.type AND e.key = w.key "
        "UNION ALL "
        "SELECT 1 AS alias, a.type, a.key, a.entity_id, e.name, e.type AS entity_type "
        f"FROM {wanted} entity_aliases AS a ON a.type = w.type AND a.key = w.key "
        "JOIN entities AS e ON e.id = a.entity_id "
        "ORDER BY alias"
    )
    for dialect, wanted in _WANTED.items()
}


def _pairs_params(dialect: str, pairs: list[tuple[str, str]]) -> dict[str, object]:
    if dialect == "sqlite":
        return {"pairs": json.dumps(pairs)}
    return {"types": [t for t, _ in pairs], "keys": [k for _, k in pairs]}


_NAMES = select(_ENTITIES.c.id, _ENTITIES.c.name, _ENTITIES.c.type).where(
    _ENTITIES.c.id.in_(bindparam("ids", expanding=True))
)
_ENTITY_ID = select(_ENTITIES.c.id).where(
    _ENTITIES.c.type == bindparam("type"), _ENTITIES.c.key == bindparam("key")
)
# Several entities in one statement; each row comes back with its (type, key), so RETURNING
# needs no order (SQLite would insert them one statement each to give one).
_ENTITIES_INSERT = Prepared(
    lambda insert: (
        insert(_ENTITIES)
        .on_conflict_do_nothing()
        .returning(_ENTITIES.c.id, _ENTITIES.c.type, _ENTITIES.c.key)
    )
)
_ALIASES_INSERT = Prepared(lambda insert: insert(_ALIASES).on_conflict_do_nothing())
