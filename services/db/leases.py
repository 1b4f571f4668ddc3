"""Delivery leases: hand-out of due deliveries, what to send for them, and attempt results.

The write side of webhook delivery, run by the dispatcher and by every delivery worker many
times a second, so its statements are built once (Core, bound parameters) and each call only
executes them. A delivery is due when its ``next_attempt_at`` has passed and it is
``pending``, ``failed`` (a retry) or ``delivering`` past its lease (the job was lost: a
flushed Redis, a killed worker). A hand-out bumps the delivery's ``token``; a result carrying
an older token is stale and changes nothing but the attempt log.

Writers that change a subscription's leases (hand-out, attempt results, disabling) hold its
row lock on PostgreSQL, taken before any of its deliveries' rows and in id order; there is no
global lock, so work on different subscriptions never waits. SQLite has one writer at a time
(``BEGIN IMMEDIATE``) and ignores the row locks.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    CompoundSelect,
    Table,
    and_,
    bindparam,
    func,
    insert,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from services.db import subscriptions
from services.db.models import Delivery, DeliveryAttempt, Event, Subscription
from services.webhooks.schedule import AttemptResult, Verdict, judge

DUE_STATUSES = ("pending", "failed", "delivering")
UNION_CHUNK = 200  # subscriptions per hand-out query (SQLite allows 500 compound terms)

D = cast(Table, Delivery.__table__)
S = cast(Table, Subscription.__table__)
E = cast(Table, Event.__table__)
A = cast(Table, DeliveryAttempt.__table__)


@dataclass(frozen=True)
class Policy:
    """The settings the write side needs (from ``Settings``)."""

    schedule: tuple[float, ...]
    concurrency: int
    lease: float
    disable_after: int
    retry_after_cap: float


class Lease(NamedTuple):
    """A delivery handed to a worker: the job carries ``(delivery_id, token)``."""

    delivery_id: int
    token: int
    subscription_id: int


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
class Outcome:
    """One POST's result, to record against the lease it was made under."""

    delivery_id: int
    token: int
    subscription_id: int
    result: AttemptResult


def _due(now: Any) -> Any:
    return and_(D.c.status.in_(DUE_STATUSES), D.c.next_attempt_at <= now)


_NOW = bindparam("now", type_=D.c.next_attempt_at.type)
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)

# Enabled subscriptions, row-locked in id order (see the module docstring).
_LOCK = (
    select(S.c.id, S.c.failing_since)
    .where(S.c.id.in_(_IDS), S.c.enabled == true())
    .order_by(S.c.id)
    .with_for_update()
)
_LOCK_SKIP = _LOCK.with_for_update(skip_locked=True)
_DUE_SUBSCRIPTIONS = select(D.c.subscription_id).where(_due(_NOW)).distinct()
_IN_FLIGHT = (
    select(D.c.subscription_id, func.count())
    .where(D.c.subscription_id.in_(_IDS), D.c.status == "delivering", D.c.next_attempt_at > _NOW)
    .group_by(D.c.subscription_id)
)
# The due condition again: a delivery changed since it was chosen (a redelivery) is left.
_LEASE = (
    update(D)
    .where(D.c.id.in_(_IDS), _due(_NOW))
    .values(
        status="delivering",
        token=D.c.token + 1,
        updated_at=_NOW,
        next_attempt_at=bindparam("until", type_=D.c.next_attempt_at.type),
    )
    .returning(D.c.id, D.c.token, D.c.subscription_id)
)
_TASKS = (
    select(
        D.c.id, D.c.token, D.c.status, S.c.id, S.c.url, S.c.enabled, S.c.secret,
        S.c.previous_secret, S.c.previous_secret_expires_at, E.c.id, E.c.type, E.c.created_at,
        E.c.payload,
    )
    .select_from(D.join(S, S.c.id == D.c.subscription_id).join(E, E.c.id == D.c.event_id))
    .where(D.c.id.in_(_IDS))
    .order_by(D.c.id)
)  # fmt: skip
_CURRENT = (
    select(D.c.id, D.c.token, D.c.status, D.c.attempts)
    .where(D.c.id.in_(_IDS))
    .order_by(D.c.id)
    .with_for_update()
)
_LOG = insert(A)
_MOVE = (
    update(D)
    .where(D.c.id == bindparam("b_id"))
    .values(
        {
            name: bindparam(f"b_{name}", type_=D.c[name].type)
            for name in (
                "attempts", "status", "next_attempt_at", "last_attempt_at", "updated_at",
                "last_status_code", "last_latency_ms", "last_error_code", "last_error_detail",
                "response_excerpt",
            )
        }
        # A failure keeps the time of an earlier success (a redelivered delivery).
        | {"delivered_at": func.coalesce(bindparam("b_delivered_at", type_=D.c.delivered_at.type),
                                         D.c.delivered_at)}
    )
)  # fmt: skip
_STREAK = (
    update(S)
    .where(S.c.id == bindparam("b_id"))
    .values(failing_since=bindparam("b_since", type_=S.c.failing_since.type))
)


@lru_cache(maxsize=64)
def _next_due_query(parts: int) -> CompoundSelect[int, datetime, int]:
    """Up to ``n{i}`` due deliveries of subscription ``s{i}`` for each ``i < parts``: one
    short index range each (``ix_deliveries_subscription_due``), however long the backlog."""
    queries = []
    for i in range(parts):
        one = (
            select(D.c.subscription_id, D.c.next_attempt_at, D.c.id)
            .where(D.c.subscription_id == bindparam(f"s{i}"), _due(_NOW))
            .order_by(D.c.next_attempt_at, D.c.id)
            .limit(bindparam(f"n{i}"))
            .subquery()
        )
        queries.append(select(*one.c))
    return union_all(*queries)


def _lock_subscriptions(
    session: Session, ids: Iterable[int], *, skip_locked: bool
) -> dict[int, datetime | None]:
    """Lock the enabled subscriptions among ``ids``; returns each one's failure streak start.

    ``skip_locked`` passes over rows another transaction holds (a worker recording results
    for them hands out their next deliveries itself).
    """
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.connection().execute(_LOCK_SKIP if skip_locked else _LOCK, {"ids": wanted})
    return {int(i): since for i, since in rows}


# -- hand-out ----------------------------------------------------------------------------------


def hand_out(
    session: Session,
    *,
    now: datetime,
    policy: Policy,
    limit: int,
    subscription_ids: Collection[int] | None = None,
) -> list[Lease]:
    """Lease due deliveries to workers, at most ``policy.concurrency`` in flight per
    subscription; returns the leases to enqueue after the commit, in delivery id order.

    Without ``subscription_ids`` every subscription with something due is considered, and on
    PostgreSQL those another transaction holds are skipped (dispatchers and workers never wait
    on each other). A leased delivery is ``delivering`` until ``now + lease``; if its job
    never reports back it becomes due again then, with a new token.
    """
    if limit <= 0:
        return []
    conn = session.connection()
    if subscription_ids is None:
        due = conn.execute(_DUE_SUBSCRIPTIONS, {"now": now}).scalars()
        subs = _lock_subscriptions(session, due, skip_locked=True)
    else:
        subs = _lock_subscriptions(session, subscription_ids, skip_locked=False)
    if not subs:
        return []
    in_flight = {
        int(s): int(n) for s, n in conn.execute(_IN_FLIGHT, {"ids": list(subs), "now": now})
    }
    room = {s: policy.concurrency - in_flight.get(s, 0) for s in subs}
    # Round-robin over subscriptions (every one's first due, then every one's second...).
    ranked = sorted(
        (rank, delivery_id)
        for due_ids in _next_due(session, room, now=now).values()
        for rank, delivery_id in enumerate(due_ids)
    )
    chosen = [delivery_id for _, delivery_id in ranked[:limit]]
    if not chosen:
        return []
    until = now + timedelta(seconds=policy.lease)
    leased = conn.execute(_LEASE, {"ids": chosen, "now": now, "until": until})
    return sorted(Lease(int(i), int(t), int(s)) for i, t, s in leased)


def _next_due(session: Session, room: dict[int, int], *, now: datetime) -> dict[int, list[int]]:
    """Up to ``room[s]`` due delivery ids of each subscription ``s``, in due order."""
    wanted = [(s, n) for s, n in sorted(room.items()) if n > 0]
    rows: list[tuple[int, datetime, int]] = []
    for start in range(0, len(wanted), UNION_CHUNK):
        chunk = wanted[start : start + UNION_CHUNK]
        params: dict[str, Any] = {"now": now}
        for i, (sub_id, n) in enumerate(chunk):
            params[f"s{i}"], params[f"n{i}"] = sub_id, n
        found = session.connection().execute(_next_due_query(len(chunk)), params)
        rows.extend((int(s), at, int(i)) for s, at, i in found)
    by_subscription: dict[int, list[int]] = {}
    for sub_id, _, delivery_id in sorted(rows):
        by_subscription.setdefault(sub_id, []).append(delivery_id)
    return by_subscription


# -- sending -----------------------------------------------------------------------------------


def send_tasks(
    session: Session, *, leased: Iterable[Sequence[int]], now: datetime
) -> list[SendTask]:
    """What to POST for leased deliveries (``(delivery id, token, ...)``), in delivery id
    order; one whose token or state moved on (a stale job) or whose subscription is disabled
    is left out."""
    tokens = {int(lease[0]): int(lease[1]) for lease in leased}
    if not tokens:
        return []
    tasks = []
    for row in session.connection().execute(_TASKS, {"ids": list(tokens)}):
        d_id, token, status, s_id, url, enabled, secret, previous, until, *event = row
        if token != tokens[d_id] or status != "delivering" or not enabled:
            continue
        rotating = previous is not None and until is not None and now < until
        e_id, e_type, e_created, e_payload = event
        tasks.append(
            SendTask(
                delivery_id=d_id, token=token, subscription_id=s_id, url=url,
                secrets=(secret, previous) if rotating else (secret,), event_id=e_id,
                event_type=e_type, event_created_at=e_created, payload=dict(e_payload or {}),
            )
        )  # fmt: skip
    return tasks


# -- results -----------------------------------------------------------------------------------


def record_attempts(
    session: Session,
    *,
    outcomes: Sequence[Outcome],
    now: datetime,
    policy: Policy,
    rng: random.Random,
) -> list[Verdict | None]:
    """Log every attempt and move each delivery on, in one transaction; returns one verdict
    per outcome (None: that job was stale, its attempt is logged only).

    Outcomes are applied in order, and one never changes another delivery's result. A
    success ends the subscription's failure streak; a 410 disables the subscription, and so
    does a failure when the streak is older than ``policy.disable_after``.
    """
    if not outcomes:
        return []
    conn = session.connection()
    # Disabled subscriptions are left out: their open deliveries are dead, so stale here.
    streaks = _lock_subscriptions(session, (o.subscription_id for o in outcomes), skip_locked=False)
    before = dict(streaks)
    ids = sorted({o.delivery_id for o in outcomes})
    current = {int(row[0]): tuple(row[1:]) for row in conn.execute(_CURRENT, {"ids": ids})}
    # A delivery deleted meanwhile (with its subscription) has no log to add to.
    logged = [_attempt_row(o, now) for o in outcomes if o.delivery_id in current]
    if logged:
        conn.execute(_LOG, logged)
    verdicts: list[Verdict | None] = []
    moves: list[dict[str, Any]] = []
    disabling: dict[int, str] = {}
    for outcome in outcomes:
        found = current.get(outcome.delivery_id)
        if found is None or found[0] != outcome.token or found[1] != "delivering":
            verdicts.append(None)
            continue
        attempts = found[2] + 1
        result = outcome.result
        verdict = judge(result, attempts=attempts, schedule=policy.schedule, now=now, rng=rng,
                        retry_after_cap=policy.retry_after_cap)  # fmt: skip
        # A second outcome for the same lease (a repeated job) finds it moved on.
        current[outcome.delivery_id] = (found[0], verdict.status, attempts)
        verdicts.append(verdict)
        moves.append(_move(outcome, verdict, attempts, now))
        sub = outcome.subscription_id
        if sub not in streaks:
            continue
        if result.ok:
            streaks[sub] = None
            continue
        since = streaks[sub] = streaks[sub] or now
        if verdict.gone:
            disabling[sub] = "gone"
        elif now - since >= timedelta(seconds=policy.disable_after):
            disabling.setdefault(sub, "failing")
    if moves:
        conn.execute(_MOVE, moves)
    changed = [{"b_id": s, "b_since": v} for s, v in streaks.items() if v != before[s]]
    if changed:
        conn.execute(_STREAK, changed)
    for sub, reason in sorted(disabling.items()):
        subscriptions.disable(session, sub, reason=reason, now=now)
    return verdicts


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
    """``record_attempts`` for one delivery."""
    sub_id = session.scalar(select(D.c.subscription_id).where(D.c.id == delivery_id))
    if sub_id is None:
        return None
    outcome = Outcome(delivery_id, token, int(sub_id), result)
    return record_attempts(session, outcomes=[outcome], now=now, policy=policy, rng=rng)[0]


def _attempt_row(outcome: Outcome, now: datetime) -> dict[str, Any]:
    result = outcome.result
    return {
        "delivery_id": outcome.delivery_id,
        "attempted_at": now,
        "status_code": result.status_code,
        "latency_ms": result.latency_ms,
        "error_code": result.error_code,
        "error_detail": result.error_detail,
        "response_excerpt": result.excerpt,
    }


def _move(outcome: Outcome, verdict: Verdict, attempts: int, now: datetime) -> dict[str, Any]:
    result = outcome.result
    return {
        "b_id": outcome.delivery_id,
        "b_attempts": attempts,
        "b_status": verdict.status,
        "b_next_attempt_at": verdict.next_attempt_at,
        "b_last_attempt_at": now,
        "b_updated_at": now,
        "b_last_status_code": result.status_code,
        "b_last_latency_ms": result.latency_ms,
        "b_last_error_code": result.error_code,
        "b_last_error_detail": result.error_detail,
        "b_response_excerpt": result.excerpt,
        "b_delivered_at": now if result.ok else None,
    }
