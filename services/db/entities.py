"""Entities repository: an article's entities resolved through the alias table and stored.

One entity has a stable id and many names (``entity_aliases``); an article's entities reach
it through any of them (see :mod:`services.core.entity_resolution` for the rules).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
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
from services.db.entity_pending import (
    Known,
    NewEntity,
    Pending,
    StoredEntity,
    final_links,
    stored_id,
)
from services.db.models import Entity, EntityAlias
from services.db.upsert import core

__all__ = ["StoredEntity", "store_entities", "store_new_entities"]


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
    pending = Pending(session, now, names)
    planned = plan.store(pending, known, taken)
    pending.flush()
    links = final_links(planned)
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
    pending = Pending(session, now, names)
    planned = [plan.store(pending, known, taken) for plan in plans]
    pending.flush()
    every = [final_links(links) for links in planned]
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
        self, pending: Pending, known: Known, taken: defaultdict[str, set[str]]
    ) -> dict[int | NewEntity, Link]:
        """Resolve each slot to an entity (one to create goes to ``pending``), note the
        aliases to record, and return the article's links; ``known`` and ``taken`` gain
        them at once, as a new lookup would find them once stored."""
        ids = _entities_for(pending, sorted(self.groups.items()), self.gazetteer, known)
        for (type_, key), entity in _record_aliases(self.groups, ids, taken, pending):
            known[type_].setdefault(key, entity)  # an entity's own key goes first
            taken[type_].add(key)
        links: dict[int | NewEntity, Link] = {}
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


def _entities_for(
    pending: Pending,
    slots: list[tuple[tuple[str, str], list[Resolution]]],
    gazetteer: Gazetteer,
    known: Known,
) -> dict[tuple[str, str], int | NewEntity]:
    """The entity each slot (its (type, key) and resolutions, in (type, key) order) belongs
    to: one a name of it already denotes (``known``, by type, which gains the entities
    created here, so later slots and articles see them), a known organisation it is a
    country-qualified name of, or a new one (``pending``). A fallback lookup reads storage,
    so what is pending is inserted first, as one by one it would have been."""
    found: dict[tuple[str, str], int | NewEntity] = {}
    for slot, group in slots:
        hits = known[slot[0]]
        keys = list(dict.fromkeys(k for res in group for k in res.lookup_keys))
        entity: int | NewEntity | None = next((hits[k] for k in keys if k in hits), None)
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


def _known_names(
    session: Session, wanted: dict[str, set[str]], names: dict[int, StoredEntity] | None = None
) -> tuple[Known, defaultdict[str, set[str]]]:
    """For each type, which of its ``wanted`` keys name an entity (its own key first, then
    its aliases), and which of them are stored aliases: one query for all of them. The
    entities found go into ``names`` with their display name."""
    known: Known = defaultdict(dict)
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
            entity_id = stored_id(hits[key])
            names = session.scalars(
                select(EntityAlias.alias).where(EntityAlias.entity_id == entity_id)
            )
            if qualifier_fits(res.qualifier, names, gazetteer):
                return entity_id
    return None


def _record_aliases(
    groups: dict[tuple[str, str], list[Resolution]],
    ids: dict[tuple[str, str], int | NewEntity],
    taken: dict[str, set[str]],
    pending: Pending,
) -> list[tuple[tuple[str, str], int | NewEntity]]:
    """Remember every name seen for each entity; a name already taken keeps its entity.

    ``taken`` holds, per type, the alias keys known to exist already; the rest go to
    ``pending``, inserted together, skipping any a concurrent writer got first. Returns the
    ((type, key), entity) recorded.
    """
    wanted: dict[tuple[str, str], tuple[int | NewEntity, str]] = {}
    for slot, group in groups.items():
        for res in group:
            for alias in res.aliases:
                if alias.key not in taken.get(res.type, ()):
                    wanted.setdefault((res.type, alias.key), (ids[slot], alias.text))
    for (type_, key), (entity, text_) in wanted.items():
        pending.alias(type_, key, entity, text_)
    return [(slot, entity) for slot, (entity, _) in sorted(wanted.items())]


_ENTITIES = cast(Table, Entity.__table__)
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
