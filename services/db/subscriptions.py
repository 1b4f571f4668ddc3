"""Subscriptions repository: webhook endpoints, their filters, secrets and enabled state."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Row, Table, select, update
from sqlalchemy.orm import Session

from services.core.errors import NotFound
from services.db.events import add_event, last_event_id, lock_events
from services.db.models import Delivery, Subscription
from services.webhooks.filters import Filters, parse_filters

OPEN_STATUSES = ("pending", "failed", "delivering")


@dataclass(frozen=True)
class SubscriptionRecord:
    id: int
    url: str
    description: str | None
    event_types: tuple[str, ...]
    filters: Filters
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    failing_since: datetime | None
    start_event_id: int
    rotating_until: datetime | None
    created_at: datetime
    updated_at: datetime
    # Never shown by repr (logs); the API returns them only at creation and rotation.
    secret: str = field(repr=False)
    previous_secret: str | None = field(repr=False, default=None)

    def signing_secrets(self, now: datetime) -> list[str]:
        """The current secret, and the previous one while its grace period lasts."""
        found = [self.secret]
        if self.previous_secret and self.rotating_until and now < self.rotating_until:
            found.append(self.previous_secret)
        return found


def record(row: Subscription | Row[Any]) -> SubscriptionRecord:
    """The domain record of a subscription (an ORM row, or a Core row of every column)."""
    return SubscriptionRecord(
        id=row.id,
        url=row.url,
        description=row.description,
        event_types=tuple(row.event_types or ()),
        filters=parse_filters(row.filters or {}),
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        disabled_at=row.disabled_at,
        failing_since=row.failing_since,
        start_event_id=row.start_event_id,
        rotating_until=row.previous_secret_expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        secret=row.secret,
        previous_secret=row.previous_secret,
    )


def _row(session: Session, subscription_id: int, *, lock: bool = False) -> Subscription:
    row = session.get(Subscription, subscription_id, with_for_update=lock)
    if row is None:
        raise NotFound(f"no subscription {subscription_id}")
    return row


def create_subscription(
    session: Session,
    *,
    url: str,
    description: str | None,
    event_types: tuple[str, ...],
    filters: Filters,
    secret: str,
    now: datetime,
    enabled: bool = True,
) -> SubscriptionRecord:
    """A new subscription; it receives only events committed after it.

    The events lock makes the boundary exact on PostgreSQL: no event-writing transaction is
    half-way through when the last event id is read.
    """
    lock_events(session)
    row = Subscription(
        url=url,
        description=description,
        event_types=list(event_types),
        filters=filters.as_json(),
        enabled=enabled,
        secret=secret,
        start_event_id=last_event_id(session),
        created_at=now,
        updated_at=now,
        disabled_at=None if enabled else now,
        disabled_reason=None if enabled else "operator",
    )
    session.add(row)
    session.flush()
    return record(row)


def get_subscription(session: Session, subscription_id: int) -> SubscriptionRecord:
    return record(_row(session, subscription_id))


def list_subscriptions(session: Session, *, after_id: int, limit: int) -> list[SubscriptionRecord]:
    rows = session.scalars(
        select(Subscription)
        .where(Subscription.id > after_id)
        .order_by(Subscription.id)
        .limit(limit)
    )
    return [record(r) for r in rows]


_S = cast(Table, Subscription.__table__)
_ENABLED = select(_S).where(_S.c.enabled.is_(True)).order_by(_S.c.id)


def enabled_subscriptions(session: Session) -> list[SubscriptionRecord]:
    """Every enabled subscription, in id order (read at each fan-out: Core, no ORM state)."""
    return [record(r) for r in session.connection().execute(_ENABLED)]


def update_subscription(
    session: Session, subscription_id: int, *, now: datetime, **changes: Any
) -> SubscriptionRecord:
    """Apply ``url``, ``description``, ``event_types``, ``filters`` or ``enabled``.

    Enabling a subscription clears its failure streak and disabled reason; deliveries given
    up while it was disabled stay so (redeliver them one by one).
    """
    row = _row(session, subscription_id, lock=True)
    if "url" in changes:
        row.url = changes["url"]
    if "description" in changes:
        row.description = changes["description"]
    if "event_types" in changes:
        row.event_types = list(changes["event_types"])
    if "filters" in changes:
        row.filters = changes["filters"].as_json()
    if "enabled" in changes and changes["enabled"] != row.enabled:
        if changes["enabled"]:
            row.enabled, row.disabled_reason, row.disabled_at = True, None, None
            row.failing_since = None
        else:
            _disable(session, row, reason="operator", now=now, announce=False)
    row.updated_at = now
    session.flush()
    return record(row)


def delete_subscription(session: Session, subscription_id: int) -> None:
    session.delete(_row(session, subscription_id))


def rotate_secret(
    session: Session, subscription_id: int, *, secret: str, now: datetime, grace: int
) -> SubscriptionRecord:
    """Make ``secret`` current; the old one keeps signing for ``grace`` seconds."""
    row = _row(session, subscription_id, lock=True)
    row.previous_secret, row.secret = row.secret, secret
    row.previous_secret_expires_at = now + timedelta(seconds=grace)
    row.updated_at = now
    session.flush()
    return record(row)


def disable(session: Session, subscription_id: int, *, reason: str, now: datetime) -> None:
    """Disable after delivery failures (``gone``: a 410; ``failing``: the failure window)."""
    row = _row(session, subscription_id, lock=True)
    if row.enabled:
        _disable(session, row, reason=reason, now=now, announce=True)


def _disable(
    session: Session, row: Subscription, *, reason: str, now: datetime, announce: bool
) -> None:
    row.enabled, row.disabled_reason, row.disabled_at, row.updated_at = False, reason, now, now
    # What was still owed is given up; each delivery can be redelivered through the API.
    session.execute(
        update(Delivery)
        .where(Delivery.subscription_id == row.id, Delivery.status.in_(OPEN_STATUSES))
        .values(
            status="dead",
            next_attempt_at=None,
            updated_at=now,
            last_error_code="subscription_disabled",
        )
    )
    if announce and _listened(session, "subscription.disabled", but=row.id):
        add_event(
            session,
            type="subscription.disabled",
            now=now,
            payload={
                "subscription": {"id": row.id, "url": row.url, "description": row.description},
                "reason": reason,
                "failing_since": row.failing_since.isoformat() if row.failing_since else None,
            },
        )


def _listened(session: Session, event_type: str, *, but: int) -> bool:
    """Whether another enabled subscription listens for ``event_type``."""
    rows = session.execute(
        select(Subscription.id, Subscription.event_types).where(Subscription.enabled.is_(True))
    )
    return any(sid != but and event_type in (types or ()) for sid, types in rows)
