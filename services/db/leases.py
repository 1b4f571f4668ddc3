"""Delivery leases: hand-out of due deliveries and what to send for them.

The write side of webhook delivery, run by the dispatcher and by every delivery worker many
times a second; its statements are built once (``services.db.lease_statements``), and the
results of the POSTs are recorded by ``services.db.attempts``. A delivery is due when its
``next_attempt_at`` has passed and it is ``pending``, ``failed`` (a retry) or ``delivering``
past its lease (the job was lost: a flushed Redis, a killed worker). A hand-out bumps the
delivery's ``token``; a result carrying an older token is stale and changes nothing but the
attempt log.

Writers that change a subscription's leases (hand-out, attempt results, disabling) hold its
row lock on PostgreSQL, taken before any of its deliveries' rows and in id order; there is no
global lock, so work on different subscriptions never waits. SQLite has one writer at a time
(``BEGIN IMMEDIATE``) and ignores the row locks.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from services.db import lease_statements as sql

UNION_CHUNK = 200  # subscriptions per hand-out query (SQLite allows 500 compound terms)


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
    """Where and how to POST one delivery; the event itself is ``event_rows(event_id)``
    (events never change, so a worker keeps their bodies rather than reading them again)."""

    delivery_id: int
    token: int
    subscription_id: int
    url: str
    secrets: tuple[str, ...] = field(repr=False)
    event_id: int
    attempts: int  # made before this one


class EventRow(NamedTuple):
    """A stored event, as a webhook body is built from it."""

    id: int
    type: str
    created_at: datetime
    payload: dict[str, Any]


class Held(NamedTuple):
    """A locked, enabled subscription: its failure streak and what signing needs."""

    failing_since: datetime | None
    url: str
    secret: str
    previous_secret: str | None
    previous_until: datetime | None

    def secrets(self, now: datetime) -> tuple[str, ...]:
        previous, until = self.previous_secret, self.previous_until
        if previous is not None and until is not None and now < until:
            return (self.secret, previous)
        return (self.secret,)


def lock_subscriptions(
    session: Session, ids: Iterable[int], *, skip_locked: bool
) -> dict[int, Held]:
    """Lock the enabled subscriptions among ``ids``; returns each one's failure streak start
    and signing details.

    ``skip_locked`` passes over rows another transaction holds (a worker recording results
    for them hands out their next deliveries itself).
    """
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.connection().execute(sql.LOCK_SKIP if skip_locked else sql.LOCK, {"ids": wanted})
    return {int(i): Held(*rest) for i, *rest in rows}


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
    if subscription_ids is None:
        due = session.connection().execute(sql.DUE_SUBSCRIPTIONS, {"now": now}).scalars()
        subs = lock_subscriptions(session, due, skip_locked=True)
    else:
        subs = lock_subscriptions(session, subscription_ids, skip_locked=False)
    leased = lease_locked(session, subs, now=now, policy=policy, limit=limit)
    return [Lease(*row[:3]) for row in leased]


_Leased = tuple[int, int, int, int, int]


def lease_locked(
    session: Session, subs: Collection[int], *, now: datetime, policy: Policy, limit: int
) -> list[_Leased]:
    """Lease due deliveries of the locked subscriptions ``subs`` (see ``hand_out``); returns
    ``(delivery id, token, subscription id, event id, attempts)`` in delivery id order."""
    if limit <= 0 or not subs:
        return []
    conn = session.connection()
    until = now + timedelta(seconds=policy.lease)
    params: dict[str, Any] = {"now": now, "until": until}
    rows: list[Any] = []
    if len(subs) * policy.concurrency <= limit:
        # Everything they have room for fits: one statement per chunk of subscriptions.
        wanted = sorted(subs)
        for start in range(0, len(wanted), UNION_CHUNK):
            chunk = wanted[start : start + UNION_CHUNK]
            query = sql.lease_all_query(len(chunk), conn.dialect.name)
            chunk_params = params | {"concurrency": policy.concurrency}
            chunk_params |= {f"s{i}": sub_id for i, sub_id in enumerate(chunk)}
            rows.extend(conn.execute(query, chunk_params).tuples())
        return sorted((int(i), int(t), int(s), int(e), int(a)) for i, t, s, e, a in rows)
    in_flight = {
        int(s): int(n) for s, n in conn.execute(sql.IN_FLIGHT, {"ids": list(subs), "now": now})
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
    leased = conn.execute(sql.LEASE, params | {"ids": chosen})
    return sorted((int(i), int(t), int(s), int(e), int(a)) for i, t, s, e, a in leased)


def _next_due(session: Session, room: dict[int, int], *, now: datetime) -> dict[int, list[int]]:
    """Up to ``room[s]`` due delivery ids of each subscription ``s``, in due order."""
    wanted = [(s, n) for s, n in sorted(room.items()) if n > 0]
    rows: list[tuple[int, datetime, int]] = []
    for start in range(0, len(wanted), UNION_CHUNK):
        chunk = wanted[start : start + UNION_CHUNK]
        params: dict[str, Any] = {"now": now}
        for i, (sub_id, n) in enumerate(chunk):
            params[f"s{i}"], params[f"n{i}"] = sub_id, n
        found = session.connection().execute(sql.next_due_query(len(chunk)), params)
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
    for row in session.connection().execute(sql.TASKS, {"ids": list(tokens)}):
        d_id, token, status, event_id, attempts, s_id, url, enabled, *signing = row
        if token != tokens[d_id] or status != "delivering" or not enabled:
            continue
        held = Held(None, url, *signing)
        tasks.append(SendTask(d_id, token, s_id, url, held.secrets(now), event_id, attempts))
    return tasks


def event_rows(session: Session, ids: Iterable[int]) -> list[EventRow]:
    """The stored events ``ids`` (those that exist), to build webhook bodies from."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    rows = session.connection().execute(sql.EVENTS, {"ids": wanted})
    return [EventRow(int(i), t, at, dict(payload or {})) for i, t, at, payload in rows]
