"""Sightings repository (read side): what is already known of a feed item, by feed and item
key, before its job extracts or stores anything."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from services.db.feeds import key_hash
from services.db.models import Sighting
from services.db.upsert import core

_SIGHTINGS = cast(Table, Sighting.__table__)


@dataclass(frozen=True)
class SightingState:
    article_id: int | None
    content_hash: str
    error_code: str | None

    def accounts_for(self, content_hash: str) -> bool:
        """Whether the item's version ``content_hash`` needs no new article: the item is on a
        stored article already (a new version is an update), or this version was handled."""
        return self.article_id is not None or self.content_hash == content_hash


_SIGHTING_STATE = select(
    _SIGHTINGS.c.article_id, _SIGHTINGS.c.content_hash, _SIGHTINGS.c.error_code
).where(_SIGHTINGS.c.feed_id == bindparam("feed_id"), _SIGHTINGS.c.item_key_hash == bindparam("h"))


def sighting_state(session: Session, *, feed_id: int, item_key: str) -> SightingState | None:
    row = core(session).execute(_SIGHTING_STATE, {"feed_id": feed_id, "h": key_hash(item_key)})
    found = row.first()
    return None if found is None else SightingState(found[0], found[1], found[2])


# Both lists go to the (feed_id, item_key_hash) unique index; pairs across them are dropped.
_SIGHTING_STATES = select(
    _SIGHTINGS.c.feed_id, _SIGHTINGS.c.item_key_hash, _SIGHTINGS.c.article_id,
    _SIGHTINGS.c.content_hash, _SIGHTINGS.c.error_code,
).where(
    _SIGHTINGS.c.feed_id.in_(bindparam("feeds", expanding=True)),
    _SIGHTINGS.c.item_key_hash.in_(bindparam("hashes", expanding=True)),
)  # fmt: skip


def sighting_states(
    session: Session, items: Sequence[tuple[int, str]]
) -> dict[tuple[int, str], SightingState]:
    """:func:`sighting_state` of each (feed id, item key) in ``items``, in one round trip;
    items never seen are left out."""
    if not items:
        return {}
    wanted = {(feed_id, key_hash(key)): (feed_id, key) for feed_id, key in items}
    params = {
        "feeds": sorted({feed_id for feed_id, _ in wanted}),
        "hashes": sorted({h for _, h in wanted}),
    }
    found: dict[tuple[int, str], SightingState] = {}
    for feed_id, h, article_id, content_hash, error in core(session).execute(
        _SIGHTING_STATES, params
    ):
        item = wanted.get((feed_id, h))
        if item is not None:
            found[item] = SightingState(article_id, content_hash, error)
    return found
