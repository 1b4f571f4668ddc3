"""Deliveries repository: reads of deliveries and their attempt log, redelivery.

The write side that workers and dispatchers run is in ``services.db.leases`` (hand-out) and
``services.db.attempts`` (attempt results); a delivery's retry schedule lives in its row
either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from services.core.errors import Conflict, NotFound
from services.db import subscriptions
from services.db.lease_statements import DUE_STATUSES
from services.db.models import Delivery, DeliveryAttempt, Event, Subscription

# pg_advisory_xact_lock key: one fan-out at a time across dispatchers.
FANOUT_LOCK_KEY = 0x6E6577666F7574  # "newfout"


@dataclass(frozen=True)
class DeliveryRecord:
    id: int
    event_id: int
    event_type: str
    subscription_id: int
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_latency_ms: int | None
    last_error_code: str | None
    last_error_detail: str | None
    response_excerpt: str | None
    delivered_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class AttemptRecord:
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error_code: str | None
    error_detail: str | None
    response_excerpt: str | None


def _due(now: datetime) -> Any:
    return and_(Delivery.status.in_(DUE_STATUSES), Delivery.next_attempt_at <= now)


# -- reads and operator actions ----------------------------------------------------------------


def _delivery_record(row: Delivery, event_type: str) -> DeliveryRecord:
    return DeliveryRecord(
        id=row.id,
        event_id=row.event_id,
        event_type=event_type,
        subscription_id=row.subscription_id,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_attempt_at=row.last_attempt_at,
        last_status_code=row.last_status_code,
        last_latency_ms=row.last_latency_ms,
        last_error_code=row.last_error_code,
        last_error_detail=row.last_error_detail,
        response_excerpt=row.response_excerpt,
        delivered_at=row.delivered_at,
        created_at=row.created_at,
    )


def list_deliveries(
    session: Session,
    *,
    subscription_id: int,
    before_id: int | None,
    limit: int,
    status: str | None = None,
) -> list[DeliveryRecord]:
    """A subscription's deliveries, newest first."""
    subscriptions.get_subscription(session, subscription_id)  # NotFound
    query = (
        select(Delivery, Event.type)
        .join(Event, Event.id == Delivery.event_id)
        .where(Delivery.subscription_id == subscription_id)
        .order_by(Delivery.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(Delivery.id < before_id)
    if status is not None:
        query = query.where(Delivery.status == status)
    return [_delivery_record(d, t) for d, t in session.execute(query)]


def get_delivery(session: Session, delivery_id: int) -> tuple[DeliveryRecord, list[AttemptRecord]]:
    """One delivery and its attempts, oldest first."""
    row = session.execute(
        select(Delivery, Event.type)
        .join(Event, Event.id == Delivery.event_id)
        .where(Delivery.id == delivery_id)
    ).first()
    if row is None:
        raise NotFound(f"no delivery {delivery_id}")
    attempts = session.scalars(
        select(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_id == delivery_id)
        .order_by(DeliveryAttempt.id)
    )
    return _delivery_record(row[0], row[1]), [
        AttemptRecord(
            a.attempted_at,
            a.status_code,
            a.latency_ms,
            a.error_code,
            a.error_detail,
            a.response_excerpt,
        )
        for a in attempts
    ]


def redeliver(session: Session, delivery_id: int, *, now: datetime) -> DeliveryRecord:
    """Send a delivery again now, on a fresh schedule (its attempt log is kept).

    Raises:
        NotFound: no such delivery.
        Conflict: it is being delivered right now, or its subscription is disabled.
    """
    row = session.get(Delivery, delivery_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no delivery {delivery_id}")
    sub = session.get(Subscription, row.subscription_id)
    assert sub is not None
    if not sub.enabled:
        raise Conflict(
            f"subscription {sub.id} is disabled; enable it first", code="subscription_disabled"
        )
    if row.status == "delivering" and row.next_attempt_at and row.next_attempt_at > now:
        raise Conflict(f"delivery {delivery_id} is being sent", code="in_flight")
    row.status, row.attempts, row.next_attempt_at, row.updated_at = "pending", 0, now, now
    event_type = session.scalar(select(Event.type).where(Event.id == row.event_id)) or ""
    session.flush()
    return _delivery_record(row, event_type)


def pending_count(session: Session, *, now: datetime) -> int:
    """Deliveries due now or leased (a backlog gauge for the dispatcher's log line)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(or_(_due(now), Delivery.status == "delivering"))
        )
        or 0
    )
