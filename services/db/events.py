"""Events repository: the transactional outbox, written in the same transaction as a change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.db.models import Event


def add_event(
    session: Session,
    *,
    type: str,
    now: datetime,
    article_id: int | None = None,
    feed_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> int:
    """Append an event; its id orders it for subscribers and API cursors."""
    row = Event(
        type=type, article_id=article_id, feed_id=feed_id, payload=payload or {}, created_at=now
    )
    session.add(row)
    session.flush()
    return row.id
