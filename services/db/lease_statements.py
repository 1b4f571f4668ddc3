"""The statements of the delivery write side (``services.db.leases``, ``services.db.attempts``),
built once.

Run by the dispatcher and by every delivery worker many times a second: each call only binds
parameters, and where a count varies (subscriptions in a hand-out) one statement is built
per count and kept.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    CompoundSelect,
    Table,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.sql.elements import BindParameter

from services.db.models import Delivery, DeliveryAttempt, Event, Subscription

DUE_STATUSES = ("pending", "failed", "delivering")

D = cast(Table, Delivery.__table__)
S = cast(Table, Subscription.__table__)
E = cast(Table, Event.__table__)
A = cast(Table, DeliveryAttempt.__table__)


# The due statuses are written into the SQL text: a list parameter (an expanding IN) would
# be rendered again at every execution, once per subquery of a hand-out.
_DUE_STATUS = D.c.status.in_([literal_column(f"'{status}'") for status in DUE_STATUSES])


def due(now: Any) -> Any:
    """Due at ``now``: first attempt or retry time passed, or a lease that ran out."""
    return and_(_DUE_STATUS, D.c.next_attempt_at <= now)


NOW = bindparam("now", type_=D.c.next_attempt_at.type)
IDS: BindParameter[Any] = bindparam("ids", expanding=True)

# Enabled subscriptions, row-locked in id order (see ``services.db.leases``), with what a
# worker needs to sign and send their next deliveries.
LOCK = (
    select(
        S.c.id,
        S.c.failing_since,
        S.c.url,
        S.c.secret,
        S.c.previous_secret,
        S.c.previous_secret_expires_at,
    )
    .where(S.c.id.in_(IDS), S.c.enabled == true())
    .order_by(S.c.id)
    .with_for_update()
)
LOCK_SKIP = LOCK.with_for_update(skip_locked=True)
DUE_SUBSCRIPTIONS = select(D.c.subscription_id).where(due(NOW)).distinct()
IN_FLIGHT = (
    select(D.c.subscription_id, func.count())
    .where(D.c.subscription_id.in_(IDS), D.c.status == "delivering", D.c.next_attempt_at > NOW)
    .group_by(D.c.subscription_id)
)
# The due condition again: a delivery changed since it was chosen (a redelivery) is left.
LEASE_ANY = (
    update(D)
    .where(due(NOW))
    .values(
        status="delivering",
        token=D.c.token + 1,
        updated_at=NOW,
        next_attempt_at=bindparam("until", type_=D.c.next_attempt_at.type),
    )
    .returning(D.c.id, D.c.token, D.c.subscription_id, D.c.event_id, D.c.attempts)
)
LEASE = LEASE_ANY.where(D.c.id.in_(IDS))
TASKS = (
    select(
        D.c.id, D.c.token, D.c.status, D.c.event_id, D.c.attempts, S.c.id, S.c.url, S.c.enabled,
        S.c.secret, S.c.previous_secret, S.c.previous_secret_expires_at,
    )
    .select_from(D.join(S, S.c.id == D.c.subscription_id))
    .where(D.c.id.in_(IDS))
    .order_by(D.c.id)
)  # fmt: skip
EVENTS = select(E.c.id, E.c.type, E.c.created_at, E.c.payload).where(E.c.id.in_(IDS))
CURRENT = (
    select(D.c.id, D.c.token, D.c.status, D.c.attempts)
    .where(D.c.id.in_(IDS))
    .order_by(D.c.id)
    .with_for_update()
)
LOG = insert(A)
MOVE = (
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
# PostgreSQL: the attempt log and the deliveries' moves in one statement and one round trip,
# whatever the number of rows (arrays, unnested), instead of a pipelined executemany.
_MOVED = """
    UPDATE deliveries AS d SET
        attempts = m.attempts, status = m.status, next_attempt_at = m.next_attempt_at,
        last_attempt_at = :now, updated_at = :now, last_status_code = m.status_code,
        last_latency_ms = m.latency_ms, last_error_code = m.error_code,
        last_error_detail = m.error_detail, response_excerpt = m.excerpt,
        delivered_at = coalesce(m.delivered_at, d.delivered_at)
    FROM unnest(
        CAST(:m_id AS integer[]), CAST(:m_token AS integer[]), CAST(:m_attempts AS integer[]),
        CAST(:m_status AS varchar[]), CAST(:m_next AS timestamptz[]),
        CAST(:m_status_code AS integer[]), CAST(:m_latency_ms AS integer[]),
        CAST(:m_error_code AS varchar[]), CAST(:m_error_detail AS text[]),
        CAST(:m_excerpt AS text[]), CAST(:m_delivered_at AS timestamptz[])
    ) AS m(id, token, attempts, status, next_attempt_at, status_code, latency_ms, error_code,
           error_detail, excerpt, delivered_at)
    WHERE d.id = m.id{check}
    RETURNING d.id
"""
_LOGGED = """
    INSERT INTO delivery_attempts
        (delivery_id, attempted_at, status_code, latency_ms, error_code, error_detail,
         response_excerpt)
    SELECT l.delivery_id, :now, l.status_code, l.latency_ms, l.error_code, l.error_detail,
           l.excerpt
    FROM unnest(
        CAST(:l_id AS integer[]), CAST(:l_status_code AS integer[]),
        CAST(:l_latency_ms AS integer[]), CAST(:l_error_code AS varchar[]),
        CAST(:l_error_detail AS text[]), CAST(:l_excerpt AS text[])
    ) AS l(delivery_id, status_code, latency_ms, error_code, error_detail, excerpt){check}
"""
# The moves as decided after reading the deliveries under their row locks (``CURRENT``).
WRITE_PG = text(f"WITH moved AS ({_MOVED.format(check='')}) {_LOGGED.format(check='')}")
_STILL_LEASED = " AND d.token = m.token AND d.status = 'delivering' AND d.attempts = m.attempts - 1"
_DELIVERY_EXISTS = " WHERE EXISTS (SELECT 1 FROM deliveries AS x WHERE x.id = l.delivery_id)"
# The moves as decided from the leases themselves: a delivery moves only if it is still
# under that lease (same token, still delivering, no attempt since), and the statement
# returns those that did; the others were stale. A delivery deleted meanwhile (with its
# subscription) has no log to add to.
WRITE_CHECKED_PG = text(
    f"WITH moved AS ({_MOVED.format(check=_STILL_LEASED)}), "
    f"logged AS ({_LOGGED.format(check=_DELIVERY_EXISTS)}) SELECT id FROM moved"
)
STREAK = (
    update(S)
    .where(S.c.id == bindparam("b_id"))
    .values(failing_since=bindparam("b_since", type_=S.c.failing_since.type))
)


@lru_cache(maxsize=64)
def next_due_query(parts: int) -> CompoundSelect[int, datetime, int]:
    """Up to ``n{i}`` due deliveries of subscription ``s{i}`` for each ``i < parts``: one
    short index range each (``ix_deliveries_subscription_due``), however long the backlog."""
    queries = []
    for i in range(parts):
        one = (
            select(D.c.subscription_id, D.c.next_attempt_at, D.c.id)
            .where(D.c.subscription_id == bindparam(f"s{i}"), due(NOW))
            .order_by(D.c.next_attempt_at, D.c.id)
            .limit(bindparam(f"n{i}"))
            .subquery()
        )
        queries.append(select(*one.c))
    return union_all(*queries)


@lru_cache(maxsize=64)
def lease_all_query(parts: int, dialect: str) -> Any:
    """Lease, in one statement, every due delivery that subscriptions ``s{i}`` (``i <
    parts``) have room for: up to ``concurrency`` minus what each has in flight, in due
    order. The same as ``IN_FLIGHT`` + ``next_due_query`` + ``LEASE`` when nothing needs
    to be left out for the caller's limit."""
    # LIMIT must not be negative (PostgreSQL refuses it, SQLite reads it as "no limit").
    clamp = func.greatest if dialect == "postgresql" else func.max
    concurrency: BindParameter[int] = bindparam("concurrency")
    queries = []
    for i in range(parts):
        sub: BindParameter[int] = bindparam(f"s{i}")
        in_flight = (
            select(func.count())
            .select_from(D)
            .where(D.c.subscription_id == sub, D.c.status == "delivering",
                   D.c.next_attempt_at > NOW)
            .scalar_subquery()
        )  # fmt: skip
        one = (
            select(D.c.id)
            .where(D.c.subscription_id == sub, due(NOW))
            .order_by(D.c.next_attempt_at, D.c.id)
            .limit(clamp(0, concurrency - in_flight))
            .subquery()
        )
        queries.append(select(one.c.id))
    chosen = queries[0] if parts == 1 else union_all(*queries)
    return LEASE_ANY.where(D.c.id.in_(chosen))


# WRITE_PG's move arrays, from the keys of ``attempts._move`` rows.
MOVE_COLUMNS = (
    ("m_id", "b_id"), ("m_token", "b_token"), ("m_attempts", "b_attempts"),
    ("m_status", "b_status"), ("m_next", "b_next_attempt_at"),
    ("m_status_code", "b_last_status_code"), ("m_latency_ms", "b_last_latency_ms"),
    ("m_error_code", "b_last_error_code"), ("m_error_detail", "b_last_error_detail"),
    ("m_excerpt", "b_response_excerpt"), ("m_delivered_at", "b_delivered_at"),
)  # fmt: skip
