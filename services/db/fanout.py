"""Fan-out: events past the dispatcher's cursor become one delivery per matching subscription.

Run by the dispatcher at every tick, so the statements it repeats are built once (Core,
bound parameters) and the deliveries are inserted as one executemany.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.db import lease_statements, subscriptions
from services.db.deliveries import FANOUT_LOCK_KEY
from services.db.engine import advisory_lock
from services.db.entity_names import find_entity_ids
from services.db.events import EventRecord, events_after
from services.db.models import Article, Delivery, Event, WebhookCursor
from services.db.upsert import insert_ignore
from services.webhooks.filters import ARTICLE_TYPES, Candidate, matches
from services.webhooks.schedule import first_attempt_at

D = cast(Table, Delivery.__table__)
C = cast(Table, WebhookCursor.__table__)

_READ_CURSOR = select(C.c.last_event_id).where(C.c.id == 1)
_E = cast(Table, Event.__table__)
# Whether a tick has anything to do: events past the cursor, or deliveries due.
_WORK = select(
    exists().where(_E.c.id > func.coalesce(_READ_CURSOR.scalar_subquery(), 0)),
    exists().where(lease_statements.due(lease_statements.NOW)),
)
_MOVE_CURSOR = (
    update(C)
    .where(C.c.id == 1)
    .values(last_event_id=bindparam("last"), updated_at=bindparam("now"))
)
# (event, subscription) is unique: a repeated fan-out inserts nothing twice.
_ADD_DELIVERIES = {
    "postgresql": postgresql.insert(D).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(D).on_conflict_do_nothing(),
}


def _cursor(conn: Connection, session: Session, now: datetime) -> int:
    found = conn.execute(_READ_CURSOR).scalar()
    if found is None:
        insert_ignore(session, WebhookCursor, {"id": 1, "last_event_id": 0, "updated_at": now})
        found = conn.execute(_READ_CURSOR).scalar_one()
    return int(found)


def work_waiting(session: Session, *, now: datetime) -> bool:
    """Whether there are events to fan out or deliveries to hand out (one cheap read, so
    that an idle dispatcher's tick takes no lock and writes nothing)."""
    fresh, due = session.connection().execute(_WORK, {"now": now}).one()
    return bool(fresh or due)


def fan_out(session: Session, *, now: datetime, schedule: Sequence[float], limit: int) -> int:
    """Turn up to ``limit`` events past the cursor into deliveries; returns events read.

    Safe with several dispatchers: they take turns on a lock, and (event, subscription) is
    unique, so a repeated fan-out creates nothing twice.
    """
    advisory_lock(session, FANOUT_LOCK_KEY)
    conn = session.connection()
    found = events_after(session, after=_cursor(conn, session, now), limit=limit)
    if not found:
        return 0
    subs = subscriptions.enabled_subscriptions(session)
    rows = _matching(session, found, subs, due=first_attempt_at(schedule, now), now=now)
    if rows:
        conn.execute(_ADD_DELIVERIES[conn.dialect.name], rows)
    conn.execute(_MOVE_CURSOR, {"last": found[-1].id, "now": now})
    return len(found)


def _matching(
    session: Session,
    found: list[EventRecord],
    subs: list[subscriptions.SubscriptionRecord],
    *,
    due: datetime,
    now: datetime,
) -> list[dict[str, Any]]:
    if not subs:
        return []
    names: dict[str, set[int]] = {}
    for sub in subs:
        for name in sub.filters.entity_names:
            if name not in names:
                names[name] = set(find_entity_ids(session, name))
    wanted = {
        sub.id: {e for e in sub.filters.entities if isinstance(e, int)}.union(
            *(names[n] for n in sub.filters.entity_names)
        )
        for sub in subs
    }
    texts = _texts(session, found) if any(s.filters.keywords for s in subs) else {}
    rows = []
    for event in found:
        candidate = _candidate(event, texts)
        for sub in subs:
            if event.id <= sub.start_event_id:
                continue
            if matches(sub.filters, sub.event_types, candidate, entity_ids=wanted[sub.id]):
                rows.append(
                    {
                        "event_id": event.id,
                        "subscription_id": sub.id,
                        "status": "pending",
                        "attempts": 0,
                        "token": 0,
                        "next_attempt_at": due,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
    return rows


def _texts(session: Session, found: list[EventRecord]) -> dict[int, str]:
    ids = {e.article_id for e in found if e.type in ARTICLE_TYPES and e.article_id}
    if not ids:
        return {}
    rows = session.execute(
        select(Article.id, Article.title, Article.text).where(Article.id.in_(ids))
    )
    return {aid: f"{title}\n{body}" for aid, title, body in rows}


def _candidate(event: EventRecord, texts: dict[int, str]) -> Candidate:
    payload = event.payload
    found = payload.get("article")
    article: dict[str, Any] = found if isinstance(found, dict) else {}
    feed_ids = set(article.get("feed_ids") or ())
    if event.feed_id is not None:
        feed_ids.add(event.feed_id)
    entity_ids = {e["id"] for e in payload.get("entities", ()) if isinstance(e, dict) and "id" in e}
    text_ = texts.get(event.article_id or 0) or str(article.get("title") or "")
    return Candidate(
        type=event.type,
        feed_ids=frozenset(feed_ids),
        entity_ids=frozenset(entity_ids),
        language=article.get("language"),
        text=text_,
    )
