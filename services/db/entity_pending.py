"""Entities and aliases decided on while articles resolve, inserted together.

The articles stored in one transaction resolve their entities in turn (services.db.entities);
an entity or alias one of them creates is known by its names at once, as a :class:`NewEntity`
(its id comes when it is inserted), and inserted with the others at the end: one statement
for the entities, one for the aliases, each in (type, key) order as lock order requires.
Multi-row inserts map ids back by (type, key) (services.db.upsert.ids_by_key).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from services.core.entity_resolution import Resolution
from services.db.entity_links import Link
from services.db.models import Entity, EntityAlias
from services.db.upsert import Prepared, core, ids_by_key


@dataclass(frozen=True)
class StoredEntity:
    """An entity as stored: its stable id, display name and type."""

    id: int
    name: str
    type: str


class NewEntity:
    """An entity decided on but not inserted yet; ``id`` is set once it is."""

    __slots__ = ("id",)

    def __init__(self) -> None:
        self.id: int | None = None


# Per type, the entity each known name denotes: stored, or to be inserted.
Known = defaultdict[str, dict[str, "int | NewEntity"]]


def stored_id(entity: int | NewEntity) -> int:
    """The stored id of an entity, once inserted."""
    if isinstance(entity, int):
        return entity
    assert entity.id is not None, "the pending entities are flushed first"
    return entity.id


def final_links(links: dict[int | NewEntity, Link]) -> dict[int, Link]:
    """An article's links by stored entity id, once its pending entities are inserted."""
    final: dict[int, Link] = {}
    for entity, link in links.items():
        stored = stored_id(entity)
        if stored in final:  # one already stored by another writer under this name
            kept = final[stored]
            kept.mentions += link.mentions
            kept.first_offset = min(kept.first_offset, link.first_offset)
        else:
            final[stored] = link
    return final


class Pending:
    """The entities and aliases the articles stored together decided to create, inserted
    together: one statement for the entities, one for the aliases (each in (type, key)
    order, as lock order requires). Until then the names that denote them map to their
    :class:`NewEntity` (the caller's ``Known``)."""

    def __init__(self, session: Session, now: datetime, names: dict[int, StoredEntity]) -> None:
        self.session, self.now, self.names = session, now, names
        self.entities: list[tuple[Resolution, NewEntity]] = []
        self.aliases: list[tuple[tuple[str, str], int | NewEntity, str]] = []

    def entity(self, res: Resolution) -> NewEntity:
        """A new entity for ``res``, inserted at the next flush."""
        new = NewEntity()
        self.entities.append((res, new))
        return new

    def alias(self, type_: str, key: str, entity: int | NewEntity, text: str) -> None:
        """A new alias of ``entity``, inserted at the next flush."""
        self.aliases.append(((type_, key), entity, text))

    def flush(self) -> None:
        """Insert what is pending; each :class:`NewEntity` then carries its stored id."""
        if self.entities:
            ordered = sorted(self.entities, key=lambda e: (e[0].type, e[0].key))
            ids = insert_entities(self.session, [r for r, _ in ordered], self.now, self.names)
            for (_, new), stored in zip(ordered, ids, strict=True):
                new.id = stored
            self.entities.clear()
        if self.aliases:
            rows = [
                {"entity_id": stored_id(entity), "type": type_, "key": key, "alias": text,
                 "created_at": self.now}
                for (type_, key), entity, text in sorted(self.aliases, key=lambda a: a[0])
            ]  # fmt: skip
            conn = core(self.session)
            conn.execute(_ALIASES_INSERT.on(conn), rows)
            self.aliases.clear()


def insert_entities(
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
    inserted = ids_by_key(conn, _ENTITIES_INSERT.on(conn), rows)
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


_ENTITIES = cast(Table, Entity.__table__)
_ALIASES = cast(Table, EntityAlias.__table__)
_ENTITY_ID = select(_ENTITIES.c.id).where(
    _ENTITIES.c.type == bindparam("type"), _ENTITIES.c.key == bindparam("key")
)
# Several entities in one statement, each back with its (type, key).
_ENTITIES_INSERT = Prepared(
    lambda insert: (
        insert(_ENTITIES)
        .on_conflict_do_nothing()
        .returning(_ENTITIES.c.id, _ENTITIES.c.type, _ENTITIES.c.key)
    )
)
_ALIASES_INSERT = Prepared(lambda insert: insert(_ALIASES).on_conflict_do_nothing())
