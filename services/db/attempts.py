"""Delivery attempts: recording each POST's result and moving its delivery on.

Run by every delivery worker after its POSTs; a worker records a group of results and leases
what follows in a handful of round trips (``settle``). A result is checked against the lease
it was made under (``services.db.leases``): one carrying an older token is stale and changes
nothing but the attempt log. The statements are built once (``services.db.lease_statements``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from services.db import lease_statements as sql
from services.db import subscriptions
from services.db.lease_statements import D
from services.db.leases import Held, Lease, Policy, SendTask, lease_locked, lock_subscriptions
from services.webhooks.schedule import AttemptResult, Verdict, judge


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


@dataclass(frozen=True)
class Settled:
    """What ``settle`` did: a verdict per outcome (None: stale), and the subscriptions' next
    deliveries it leased, as leases (to queue) and as tasks (to send at once)."""

    verdicts: list[Verdict | None]
    leased: list[Lease]
    tasks: list[SendTask]


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
    deliveries (``leases.hand_out``), under the row locks the recording took."""
    verdicts, held = _record(session, outcomes=outcomes, now=now, policy=policy, rng=rng)
    leased = lease_locked(session, held, now=now, policy=policy, limit=limit)
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
) -> tuple[list[Verdict | None], dict[int, Held]]:
    """``record_attempts``; also returns the subscriptions it locked that are still enabled."""
    if not outcomes:
        return [], {}
    conn = session.connection()
    # Disabled subscriptions are left out: their open deliveries are dead, so stale here.
    held = lock_subscriptions(session, (o.subscription_id for o in outcomes), skip_locked=False)
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
    held: dict[int, Held],
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
