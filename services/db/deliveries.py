"""Deliveries repository: hand-out of due deliveries, attempt results, reads, redelivery.

SQL holds the whole retry schedule: a delivery is due when its ``next_attempt_at`` has
passed and it is ``pending``, ``failed`` (a retry) or ``delivering`` past its lease (the job
was lost: a flushed Redis, a killed worker). Redis only carries the jobs handed out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.orm import Session

from services.core.errors import Conflict, NotFound
from services.db import subscriptions
from services.db.models import (
    Delivery,
    DeliveryAttempt,
    Event,
    Subscription,
)
from services.webhooks.schedule import AttemptResult, Verdict, judge

# pg_advisory_xact_lock keys: one fan-out and one hand-out at a time across dispatchers.
FANOUT_LOCK_KEY = 0x6E6577666F7574  # "newfout"
HANDOUT_LOCK_KEY = 0x6E6577686E6474  # "newhndt"
DUE_STATUSES = ("pending", "failed", "delivering")


@dataclass(frozen=True)
class Policy:
    """The settings the write side needs (from ``Settings``)."""

    schedule: tuple[float, ...]
    concurrency: int
    lease: float
    disable_after: int
    retry_after_cap: float


@dataclass(frozen=True)
class SendTask:
    """Everything a worker needs to POST one delivery."""

    delivery_id: int
    token: int
    subscription_id: int
    url: str
    secrets: tuple[str, ...]
    event_id: int
    event_type: str
    event_created_at: datetime
    payload: dict[str, Any]


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


def lock(session: Session, key: int) -> None:
    # SQLite needs nothing: BEGIN IMMEDIATE already makes writers take turns.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


# -- hand-out ----------------------------------------------------------------------------------


def _due(now: datetime) -> Any:
    return and_(Delivery.status.in_(DUE_STATUSES), Delivery.next_attempt_at <= now)


def hand_out(
    session: Session,
    *,
    now: datetime,
    policy: Policy,
    limit: int,
    subscription_id: int | None = None,
) -> list[tuple[int, int]]:
    """Lease due deliveries to workers, at most ``policy.concurrency`` in flight per
    subscription; returns ``(delivery id, token)`` pairs to enqueue after the commit.

    A leased delivery is ``delivering`` until ``now + lease``; if its job never reports
    back it becomes due again then (with a new token, so a late stale job does nothing).
    """
    lock(session, HANDOUT_LOCK_KEY)
    busy = select(Delivery.subscription_id, func.count()).where(
        Delivery.status == "delivering", Delivery.next_attempt_at > now
    )
    if subscription_id is not None:
        busy = busy.where(Delivery.subscription_id == subscription_id)
    in_flight = dict(session.execute(busy.group_by(Delivery.subscription_id)).all())
    rank = (
        func.row_number()
        .over(
            partition_by=Delivery.subscription_id, order_by=(Delivery.next_attempt_at, Delivery.id)
        )
        .label("rank")
    )
    due = select(Delivery.id, Delivery.subscription_id, rank).where(_due(now))
    if subscription_id is not None:
        due = due.where(Delivery.subscription_id == subscription_id)
    ranked = due.subquery()
    candidates = session.execute(
        select(ranked.c.id, ranked.c.subscription_id)
        .where(ranked.c.rank <= policy.concurrency)
        .order_by(ranked.c.rank, ranked.c.id)
    ).all()
    chosen: list[int] = []
    for delivery_id, sub_id in candidates:
        if in_flight.get(sub_id, 0) < policy.concurrency and len(chosen) < limit:
            in_flight[sub_id] = in_flight.get(sub_id, 0) + 1
            chosen.append(delivery_id)
    if not chosen:
        return []
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(chosen))
        .values(
            status="delivering",
            token=Delivery.token + 1,
            updated_at=now,
            next_attempt_at=now + timedelta(seconds=policy.lease),
        )
    )
    rows = session.execute(select(Delivery.id, Delivery.token).where(Delivery.id.in_(chosen)))
    return sorted((int(i), int(t)) for i, t in rows)


# -- one delivery ------------------------------------------------------------------------------


def send_task(session: Session, *, delivery_id: int, token: int, now: datetime) -> SendTask | None:
    """What to POST for a leased delivery; None when the job is stale (token or state moved)."""
    row = session.execute(
        select(Delivery, Subscription, Event)
        .join(Subscription, Subscription.id == Delivery.subscription_id)
        .join(Event, Event.id == Delivery.event_id)
        .where(Delivery.id == delivery_id)
    ).first()
    if row is None:
        return None
    delivery, sub, event = row
    if delivery.token != token or delivery.status != "delivering" or not sub.enabled:
        return None
    secrets = subscriptions.record(sub).signing_secrets(now)
    return SendTask(
        delivery_id=delivery.id,
        token=token,
        subscription_id=sub.id,
        url=sub.url,
        secrets=tuple(secrets),
        event_id=event.id,
        event_type=event.type,
        event_created_at=event.created_at,
        payload=dict(event.payload or {}),
    )


def record_attempt(
    session: Session,
    *,
    delivery_id: int,
    token: int,
    result: AttemptResult,
    now: datetime,
    policy: Policy,
    rng: random.Random,
) -> Verdict | None:
    """Log the attempt and move the delivery on (None: the job was stale; logged only).

    A success ends the subscription's failure streak. A 410 disables the subscription, and
    so does a failure when the streak is older than ``policy.disable_after``.
    """
    session.add(
        DeliveryAttempt(
            delivery_id=delivery_id,
            attempted_at=now,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error_code=result.error_code,
            error_detail=result.error_detail,
            response_excerpt=result.excerpt,
        )
    )
    row = session.get(Delivery, delivery_id, with_for_update=True)
    if row is None or row.token != token or row.status != "delivering":
        return None
    row.attempts += 1
    verdict = judge(
        result,
        attempts=row.attempts,
        schedule=policy.schedule,
        now=now,
        rng=rng,
        retry_after_cap=policy.retry_after_cap,
    )
    row.status, row.next_attempt_at = verdict.status, verdict.next_attempt_at
    row.last_attempt_at, row.updated_at = now, now
    row.last_status_code, row.last_latency_ms = result.status_code, result.latency_ms
    row.last_error_code, row.last_error_detail = result.error_code, result.error_detail
    row.response_excerpt = result.excerpt
    sub = session.get(Subscription, row.subscription_id, with_for_update=True)
    assert sub is not None
    if result.ok:
        row.delivered_at = now
        sub.failing_since = None
        return verdict
    sub.failing_since = sub.failing_since or now
    if verdict.gone:
        subscriptions.disable(session, sub.id, reason="gone", now=now)
    elif now - sub.failing_since >= timedelta(seconds=policy.disable_after):
        subscriptions.disable(session, sub.id, reason="failing", now=now)
    return verdict


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
