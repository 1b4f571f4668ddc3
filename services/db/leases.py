"""Delivery leases: hand-out of due deliveries, what to send for them, and attempt results.

The write side of webhook delivery, run by the dispatcher and by every delivery worker many
times a second; its statements are built once (``services.db.lease_statements``), and a
worker records a group of results and leases what follows in a handful of round trips
(``settle``). A delivery is due when its ``next_attempt_at`` has passed and it is
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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from services.db import lease_statements as sql
from services.db import subscriptions
from services.db.lease_statements import D
from services.webhooks.schedule import AttemptResult, Verdict, judge

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


@dataclass(frozen=True)
class Settled:
    """What ``settle`` did: a verdict per outcome (None: stale), and the subscriptions' next
    deliveries it leased, as leases (to queue) and as tasks (to send at once)."""

    verdicts: list[Verdict | None]
    leased: list[Lease]
    tasks: list[SendTask]


class _Held(NamedTuple):
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


@dataclass(frozen=True)
class Outcome:
    """One POST's result, to record against the lease it was made under."""

    delivery_id: int
    token: int
    subscription_id: int
    result: AttemptResult
    # Attempts made before this one, as leased (``SendTask.attempts``): with it, PostgreSQL
    # checks the lease and moves the delivery in one statement.
    attempts: int | None = None


def _lock_subscriptions(
    session: Session, ids: Iterable[int], *, skip_locked: bool
) -> dict[int, _Held]:
    """Lock the enabled subscriptions among ``ids``; returns each one's failure streak start
    and signing details.

    ``skip_locked`` passes over rows another transaction holds (a worker recording results
    for them hands out their next deliveries itself).
    """
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.connection().execute(sql.LOCK_SKIP if skip_locked else sql.LOCK, {"ids": wanted})
    return {int(i): _Held(*rest) for i, *rest in rows}


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
        subs = _lock_subscriptions(session, due, skip_locked=True)
    else:
        subs = _lock_subscriptions(session, subscription_ids, skip_locked=False)
    return [Lease(*row[:3]) for row in _lease(session, subs, now=now, policy=policy, limit=limit)]


_Leased = tuple[int, int, int, int, int]


def _lease(
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
        held = _Held(None, url, *signing)
        tasks.append(SendTask(d_id, token, s_id, url, held.secrets(now), event_id, attempts))
    return tasks


def event_rows(session: Session, ids: Iterable[int]) -> list[EventRow]:
    """The stored events ``ids`` (those that exist), to build webhook bodies from."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    rows = session.connection().execute(sql.EVENTS, {"ids": wanted})
    return [EventRow(int(i), t, at, dict(payload or {})) for i, t, at, payload in rows]


# -- results -----------------------------------------------------------------------------------


def settle(
    session: Session,
    *,
    outcomes: Sequence[Outcome],
    now: datetime,
    policy: Policy,
    rng: random.Random,
    limit: int,
) -> Settled:
    """``record_attempts``, then lease up to ``limit`` of the same subscriptions' next due
    deliveries (``hand_out``), under the row locks the recording took."""
    verdicts, held = _record(session, outcomes=outcomes, now=now, policy=policy, rng=rng)
    leased = _lease(session, held, now=now, policy=policy, limit=limit)
    tasks = [
        SendTask(d_id, token, s_id, held[s_id].url, held[s_id].secrets(now), event_id, attempts)
        for d_id, token, s_id, event_id, attempts in leased
    ]
    return Settled(verdicts, [Lease(d, t, s) for d, t, s, _, _ in leased], tasks)


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
    return _record(session, outcomes=outcomes, now=now, policy=policy, rng=rng)[0]


def _record(
    session: Session,
    *,
    outcomes: Sequence[Outcome],
    now: datetime,
    policy: Policy,
    rng: random.Random,
) -> tuple[list[Verdict | None], dict[int, _Held]]:
    """``record_attempts``; also returns the subscriptions it locked that are still enabled."""
    if not outcomes:
        return [], {}
    conn = session.connection()
    # Disabled subscriptions are left out: their open deliveries are dead, so stale here.
    held = _lock_subscriptions(session, (o.subscription_id for o in outcomes), skip_locked=False)
    checked = _checkable(conn, outcomes)
    if checked:
        # Each delivery as its lease left it; the write moves only those still so.
        current = {o.delivery_id: (o.token, "delivering", o.attempts or 0) for o in outcomes}
    else:
        ids = sorted({o.delivery_id for o in outcomes})
        current = {int(r[0]): tuple(r[1:]) for r in conn.execute(sql.CURRENT, {"ids": ids})}
    verdicts: list[Verdict | None] = []
    moves: list[dict[str, Any]] = []
    for outcome in outcomes:
        found = current.get(outcome.delivery_id)
        if found is None or found[0] != outcome.token or found[1] != "delivering":
            verdicts.append(None)
            continue
        attempts = found[2] + 1
        verdict = judge(outcome.result, attempts=attempts, schedule=policy.schedule, now=now,
                        rng=rng, retry_after_cap=policy.retry_after_cap)  # fmt: skip
        # A second outcome for the same lease (a repeated job) finds it moved on.
        current[outcome.delivery_id] = (found[0], verdict.status, attempts)
        verdicts.append(verdict)
        moves.append(_move(outcome, verdict, attempts, now))
    # A delivery deleted meanwhile (with its subscription) has no log to add to.
    logged = list(outcomes) if checked else [o for o in outcomes if o.delivery_id in current]
    moved = _write(conn, logged, moves, now=now, checked=checked)
    if moved is not None:
        kept = zip(outcomes, verdicts, strict=True)
        verdicts = [v if o.delivery_id in moved else None for o, v in kept]
    for sub, reason in _streaks(conn, held, outcomes, verdicts, now=now, policy=policy):
        subscriptions.disable(session, sub, reason=reason, now=now)
        del held[sub]
    return verdicts, held


def _checkable(conn: Connection, outcomes: Sequence[Outcome]) -> bool:
    """Whether the outcomes can be checked against their leases by the write itself
    (PostgreSQL, each outcome's lease known, one outcome per delivery)."""
    return (
        conn.dialect.name == "postgresql"
        and all(o.attempts is not None for o in outcomes)
        and len({o.delivery_id for o in outcomes}) == len(outcomes)
    )


def _streaks(
    conn: Connection,
    held: dict[int, _Held],
    outcomes: Sequence[Outcome],
    verdicts: Sequence[Verdict | None],
    *,
    now: datetime,
    policy: Policy,
) -> list[tuple[int, str]]:
    """Apply the recorded results to the subscriptions' failure streaks (a success ends one);
    returns the subscriptions to disable and why, in id order."""
    streaks = {sub: h.failing_since for sub, h in held.items()}
    before = dict(streaks)
    disabling: dict[int, str] = {}
    for outcome, verdict in zip(outcomes, verdicts, strict=True):
        sub = outcome.subscription_id
        if verdict is None or sub not in streaks:
            continue
        if outcome.result.ok:
            streaks[sub] = None
            continue
        since = streaks[sub] = streaks[sub] or now
        if verdict.gone:
            disabling[sub] = "gone"
        elif now - since >= timedelta(seconds=policy.disable_after):
            disabling.setdefault(sub, "failing")
    changed = [{"b_id": s, "b_since": v} for s, v in streaks.items() if v != before[s]]
    if changed:
        conn.execute(sql.STREAK, changed)
    return sorted(disabling.items())


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


def _write(
    conn: Connection,
    logged: Sequence[Outcome],
    moves: Sequence[dict[str, Any]],
    *,
    now: datetime,
    checked: bool,
) -> set[int] | None:
    """Add ``logged`` to the attempt log and apply ``moves`` (rows for ``sql.MOVE``).

    ``checked``: only the deliveries still under the lease the move names are moved (one
    statement, ``sql.WRITE_CHECKED_PG``); returns their ids. Otherwise None.
    """
    if conn.dialect.name != "postgresql":
        if logged:
            conn.execute(sql.LOG, [_attempt_row(o, now) for o in logged])
        if moves:
            conn.execute(sql.MOVE, moves)
        return None
    if not logged and not moves:
        return set() if checked else None
    results = [o.result for o in logged]
    params: dict[str, Any] = {
        "now": now,
        "l_id": [o.delivery_id for o in logged],
        "l_status_code": [r.status_code for r in results],
        "l_latency_ms": [r.latency_ms for r in results],
        "l_error_code": [r.error_code for r in results],
        "l_error_detail": [r.error_detail for r in results],
        "l_excerpt": [r.excerpt for r in results],
    }
    for column, key in sql.MOVE_COLUMNS:
        params[column] = [move[key] for move in moves]
    if checked:
        return {int(i) for i in conn.execute(sql.WRITE_CHECKED_PG, params).scalars()}
    conn.execute(sql.WRITE_PG, params)
    return None


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
        "b_token": outcome.token,
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
