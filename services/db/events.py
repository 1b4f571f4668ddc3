"""Events repository: the transactional outbox, written in the same transaction as a change.

The event id is a gap-free cursor in commit order. On SQLite that holds by construction
(one writer at a time). On PostgreSQL, ids come from a sequence and two transactions can
commit them out of order: a reader that saw id 11 would skip id 10 committed a moment later.
``add_event`` therefore takes a transaction-scoped advisory lock before taking an id, so
event-writing transactions take ids and commit one after the other. The lock is taken last
in the writer's transaction (just before its commit), so it is held briefly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from services.db.engine import advisory_lock
from services.db.models import Event
from services.db.upsert import core, ids_by_key

# pg_advisory_xact_lock key serialising event writers ("newsevt" in ASCII).
EVENTS_LOCK_KEY = 0x6E657773657674


@dataclass(frozen=True)
class EventRecord:
    id: int
    type: str
    article_id: int | None
    feed_id: int | None
    payload: dict[str, Any]
    created_at: datetime


def lock_events(session: Session) -> None:
    """Serialise event writers until this transaction ends (PostgreSQL; SQLite already is)."""
    advisory_lock(session, EVENTS_LOCK_KEY)


_EVENTS = cast(Table, Event.__table__)
_EVENT_INSERT = insert(_EVENTS).returning(_EVENTS.c.id)
_EVENTS_INSERT = insert(_EVENTS).returning(_EVENTS.c.id, sort_by_parameter_order=True)
# Events of distinct articles, each back with its article (upsert.ids_by_key). Both
# databases number the rows of one multi-row INSERT in the order they are listed.
_ARTICLE_EVENTS_INSERT = insert(_EVENTS).returning(_EVENTS.c.id, _EVENTS.c.article_id)


def add_event(
    session: Session,
    *,
    type: str,
    now: datetime,
    article_id: int | None = None,
    feed_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> int:
    """Append an event; its id orders it for subscribers and API cursors (see module doc)."""
    lock_events(session)
    row = {
        "type": type, "article_id": article_id, "feed_id": feed_id, "payload": payload or {},
        "created_at": now,
    }  # fmt: skip
    return int(core(session).execute(_EVENT_INSERT, row).scalar_one())


def add_events(
    session: Session, type: str, rows: Sequence[tuple[int | None, int | None, dict[str, Any]]],
    *, now: datetime,
) -> list[int]:  # fmt: skip
    """:func:`add_event` for several (article id, feed id, payload) of one type, in one
    statement; their ids, in the order given (and so in that order for subscribers)."""
    if not rows:
        return []
    lock_events(session)
    params = [
        {"type": type, "article_id": article_id, "feed_id": feed_id, "payload": payload,
         "created_at": now}
        for article_id, feed_id, payload in rows
    ]  # fmt: skip
    conn = core(session)
    articles = [article_id for article_id, _, _ in rows if article_id is not None]
    if len(set(articles)) < len(rows):  # an event without an article, or two of one
        return [int(i) for i in conn.execute(_EVENTS_INSERT, params).scalars()]
    ids = ids_by_key(conn, _ARTICLE_EVENTS_INSERT, params)
    return [ids[a] for a in articles]


def _record(row: Event) -> EventRecord:
    return EventRecord(
        id=row.id,
        type=row.type,
        article_id=row.article_id,
        feed_id=row.feed_id,
        payload=dict(row.payload or {}),
        created_at=row.created_at,
    )


def events_after(
    session: Session, *, after: int, limit: int, types: Sequence[str] = ()
) -> list[EventRecord]:
    """Events with an id above ``after``, oldest first (optionally of some types only)."""
    query = select(Event).where(Event.id > after).order_by(Event.id).limit(limit)
    if types:
        query = query.where(Event.type.in_(types))
    return [_record(row) for row in session.scalars(query)]


def get_event(session: Session, event_id: int) -> EventRecord | None:
    row = session.get(Event, event_id)
    return None if row is None else _record(row)


def last_event_id(session: Session) -> int:
    """The highest committed event id (0 when there is none)."""
    return session.scalar(select(Event.id).order_by(Event.id.desc()).limit(1)) or 0
