"""Counts read at scrape time for ``/metrics``: sources by state, stored rows, deliveries."""

from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from services.db.models import Article, Delivery, Entity, Feed

FEED_STATES = ("active", "failing", "throttled", "disabled")

# The same rule as FeedRecord.state, in SQL.
_STATE = case(
    (Feed.disabled_at.is_not(None), "disabled"),
    (Feed.throttled_until.is_not(None), "throttled"),
    (Feed.error_count > 0, "failing"),
    else_="active",
)


def feeds_by_state(session: Session) -> dict[str, int]:
    """Every state, zero included, so a series does not vanish when its last feed leaves."""
    found = dict.fromkeys(FEED_STATES, 0)
    for state, count in session.execute(select(_STATE, func.count()).group_by(_STATE)):
        found[state] = int(count)
    return found


def deliveries_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
    return {status: int(count) for status, count in rows}


def row_counts(session: Session) -> dict[str, int]:
    """Stored articles and entities (each one index-only count)."""
    return {
        "articles": int(session.scalar(select(func.count()).select_from(Article)) or 0),
        "entities": int(session.scalar(select(func.count()).select_from(Entity)) or 0),
    }
