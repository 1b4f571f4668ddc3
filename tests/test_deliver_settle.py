"""Recording a group of results and leasing what follows (``attempts.settle``), against real SQL.

Each test fans events out to subscriptions, leases them as the dispatcher would, and settles
outcomes as a delivery worker would, with ``now`` passed in.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.db import attempts as attempt_store
from services.db import events, fanout, leases, subscriptions
from services.db.engine import transaction
from services.db.models import Delivery, DeliveryAttempt
from services.webhooks.filters import Filters
from services.webhooks.payload import Bodies, body
from services.webhooks.schedule import AttemptResult
from services.webhooks.signing import new_secret

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
OK = AttemptResult(204, 3)


def rules(concurrency: int = 2) -> leases.Policy:
    return leases.Policy(
        schedule=(0.0, 5.0, 300.0), concurrency=concurrency, lease=60.0,
        disable_after=86_400, retry_after_cap=3600.0,
    )  # fmt: skip


def setup(db: sessionmaker[Session], *, subs: int, events_: int) -> list[int]:
    """``subs`` subscriptions, then ``events_`` events fanned out to each; their ids."""
    with transaction(db) as s:
        ids = [
            subscriptions.create_subscription(
                s, url=f"https://hooks.example/{i}", description=None,
                event_types=("article.created",), filters=Filters(), secret=new_secret(), now=NOW,
            ).id
            for i in range(subs)
        ]  # fmt: skip
    with transaction(db) as s:
        for n in range(events_):
            payload = {"version": 1, "article": {"id": n, "title": f"Article {n}"}}
            events.add_event(s, type="article.created", now=NOW, payload=payload)
    with transaction(db) as s:
        fanout.fan_out(s, now=NOW, schedule=(0.0,), limit=100)
    return ids


def hand_out(
    db: sessionmaker[Session], policy: leases.Policy, limit: int = 100
) -> list[leases.Lease]:
    with transaction(db) as s:
        return leases.hand_out(s, now=NOW, policy=policy, limit=limit)


def settle(
    db: sessionmaker[Session],
    outcomes: list[attempt_store.Outcome],
    policy: leases.Policy,
    limit: int,
) -> attempt_store.Settled:
    with transaction(db) as s:
        return attempt_store.settle(
            s, outcomes=outcomes, now=NOW + timedelta(seconds=1), policy=policy,
            rng=random.Random(1), limit=limit,
        )  # fmt: skip


def in_flight(db: sessionmaker[Session], subscription_id: int) -> list[tuple[int, int]]:
    with db() as s:
        rows = s.execute(
            select(Delivery.id, Delivery.token)
            .where(Delivery.subscription_id == subscription_id, Delivery.status == "delivering")
            .order_by(Delivery.id)
        )
        return [(int(i), int(t)) for i, t in rows]


def test_settle_records_and_leases_the_next_within_the_cap(db: sessionmaker[Session]) -> None:
    first, second = setup(db, subs=2, events_=5)
    held = hand_out(db, rules())
    assert sorted(lease.subscription_id for lease in held) == [first, first, second, second]
    done = next(h for h in held if h.subscription_id == first)
    settled = settle(db, [attempt_store.Outcome(*done, OK)], rules(), limit=50)
    assert [v.status if v else None for v in settled.verdicts] == ["succeeded"]
    # The first subscription had one left in flight: room for one more. The second, not
    # part of this group, gets nothing here (the dispatcher hands its deliveries out).
    assert [lease.subscription_id for lease in settled.leased] == [first]
    assert in_flight(db, first) == sorted(
        [(h.delivery_id, h.token) for h in held if h.subscription_id == first and h != done]
        + [(settled.leased[0].delivery_id, settled.leased[0].token)]
    )
    (task,) = settled.tasks
    assert (task.delivery_id, task.token) == settled.leased[0][:2]
    assert task.url == "https://hooks.example/0"
    with db() as s:
        row = s.get(Delivery, task.delivery_id)
        assert row is not None and row.event_id == task.event_id
        secret = subscriptions.get_subscription(s, first).secret
    assert task.secrets == (secret,)
    with db() as s:
        logged = s.scalars(select(DeliveryAttempt.delivery_id)).all()
    assert logged == [done.delivery_id]


def test_settle_leases_nothing_while_more_than_the_cap_is_in_flight(
    db: sessionmaker[Session],
) -> None:
    # Four in flight, then the cap is lowered to one: three are still in flight after one
    # result, so nothing more is leased (a negative room is no room, on every database).
    (sub,) = setup(db, subs=1, events_=8)
    held = hand_out(db, rules(concurrency=4))
    assert len(held) == 4
    settled = settle(db, [attempt_store.Outcome(*held[0], OK)], rules(concurrency=1), limit=50)
    assert settled.leased == [] and settled.tasks == []
    assert len(in_flight(db, sub)) == 3


def test_settle_takes_subscriptions_in_turn_when_the_limit_is_short(
    db: sessionmaker[Session],
) -> None:
    subs = setup(db, subs=3, events_=6)
    held = hand_out(db, rules())
    outcomes = [attempt_store.Outcome(*lease, OK) for lease in held]  # every one done: room 2 each
    settled = settle(db, outcomes, rules(), limit=4)
    assert all(v is not None and v.status == "succeeded" for v in settled.verdicts)
    per_subscription = [sum(1 for x in settled.leased if x.subscription_id == s) for s in subs]
    assert sorted(per_subscription) == [1, 1, 2]  # each one's first, then a second
    assert settled.leased == sorted(settled.leased)


def test_settle_ignores_a_stale_lease_and_a_repeated_outcome(db: sessionmaker[Session]) -> None:
    (sub,) = setup(db, subs=1, events_=3)
    first, second = hand_out(db, rules())
    stale = attempt_store.Outcome(second.delivery_id, second.token - 1, sub, OK)
    outcomes = [attempt_store.Outcome(*first, OK), attempt_store.Outcome(*first, OK), stale]
    settled = settle(db, outcomes, rules(), limit=50)
    assert [v.status if v else None for v in settled.verdicts] == ["succeeded", None, None]
    assert [lease.subscription_id for lease in settled.leased] == [sub]  # room for one
    with db() as s:
        attempts = s.scalars(select(DeliveryAttempt.delivery_id)).all()
        still = s.get(Delivery, second.delivery_id)
    assert sorted(attempts) == [first.delivery_id, first.delivery_id, second.delivery_id]
    assert still is not None and (still.status, still.attempts) == ("delivering", 0)


def test_settle_after_a_410_leases_nothing_for_that_subscription(
    db: sessionmaker[Session],
) -> None:
    gone, other = setup(db, subs=2, events_=3)
    held = hand_out(db, rules())
    to_gone = next(h for h in held if h.subscription_id == gone)
    to_other = next(h for h in held if h.subscription_id == other)
    outcomes = [
        attempt_store.Outcome(*to_gone, AttemptResult(410, 2, error_code="http_410")),
        attempt_store.Outcome(*to_other, AttemptResult(500, 2, error_code="http_500")),
    ]
    settled = settle(db, outcomes, rules(), limit=50)
    assert [v.status if v else None for v in settled.verdicts] == ["dead", "failed"]
    assert {lease.subscription_id for lease in settled.leased} == {other}
    with db() as s:
        assert not subscriptions.get_subscription(s, gone).enabled
        failed = s.get(Delivery, to_other.delivery_id)
    assert failed is not None and failed.last_error_code == "http_500"
    assert failed.next_attempt_at is not None and failed.delivered_at is None


def test_settle_signs_with_both_secrets_during_a_rotation(db: sessionmaker[Session]) -> None:
    (sub,) = setup(db, subs=1, events_=3)
    with transaction(db) as s:
        old = subscriptions.get_subscription(s, sub).secret
        new = subscriptions.rotate_secret(s, sub, secret=new_secret(), now=NOW, grace=60).secret
    held = hand_out(db, rules())
    settled = settle(db, [attempt_store.Outcome(*held[0], OK)], rules(), limit=50)
    assert [task.secrets for task in settled.tasks] == [(new, old)]
    with transaction(db) as s:
        (again,) = leases.send_tasks(s, leased=[settled.leased[0]], now=NOW + timedelta(hours=1))
    assert again.secrets == (new,)  # the grace period is over


def test_event_rows_are_what_bodies_are_built_from(db: sessionmaker[Session]) -> None:
    setup(db, subs=2, events_=2)
    held = hand_out(db, rules())
    with transaction(db) as s:
        tasks = leases.send_tasks(s, leased=held, now=NOW)
        rows = leases.event_rows(s, {t.event_id for t in tasks})
        stored = events.get_event(s, rows[0].id)
    assert len(tasks) == 4 and len(rows) == 2
    assert stored is not None and rows[0].payload == stored.payload
    bodies = Bodies(public_url="https://news.example")
    for row in rows:
        bodies.add(row.id, row.type, row.created_at, row.payload)
    assert bodies[rows[0].id] == body(
        stored.type, stored.created_at, stored.payload, public_url="https://news.example"
    )


def test_bodies_keep_the_most_recently_used() -> None:
    bodies = Bodies(size=2)
    for event_id in (1, 2):
        bodies.add(event_id, "article.created", NOW, {"article": {"id": event_id}})
    assert bodies.missing([1, 2, 3]) == {3}
    first = bodies[1]  # used: 2 is now the oldest
    bodies.add(3, "article.created", NOW, {"article": {"id": 3}})
    assert bodies.missing([1, 2, 3]) == {2}
    assert bodies[1] is first
    with pytest.raises(KeyError):
        bodies[2]


def test_work_waiting_sees_new_events_and_due_deliveries(db: sessionmaker[Session]) -> None:
    def waiting(at: datetime) -> bool:
        with db() as s:
            return fanout.work_waiting(s, now=at)

    assert not waiting(NOW)  # nothing yet
    setup(db, subs=1, events_=1)  # fanned out: a delivery is due
    assert waiting(NOW)
    assert len(hand_out(db, rules())) == 1
    assert not waiting(NOW)  # in flight until its lease ends
    assert waiting(NOW + timedelta(seconds=rules().lease))  # then due again
    with transaction(db) as s:
        events.add_event(s, type="article.created", now=NOW, payload={})
    assert waiting(NOW)  # an event past the cursor


def test_outcomes_carrying_their_lease_are_checked_by_the_write(
    db: sessionmaker[Session],
) -> None:
    # As a worker records them: each outcome names the attempts its lease saw.
    (sub,) = setup(db, subs=1, events_=3)
    first, second = hand_out(db, rules(concurrency=3))[:2]
    with transaction(db) as s:
        tasks = leases.send_tasks(s, leased=[first, second], now=NOW)
    assert [t.attempts for t in tasks] == [0, 0]
    later = NOW + timedelta(seconds=rules().lease)  # the leases ran out: handed out again
    with transaction(db) as s:
        again = leases.hand_out(s, now=later, policy=rules(concurrency=3), limit=10)
    assert [lease.delivery_id for lease in again][:2] == [first.delivery_id, second.delivery_id]
    fail = AttemptResult(500, 2, error_code="http_500")
    outcomes = [
        attempt_store.Outcome(*again[0], OK, 0),  # the current lease
        attempt_store.Outcome(tasks[1].delivery_id, tasks[1].token, sub, fail, 0),  # an older one
    ]
    with transaction(db) as s:
        settled = attempt_store.settle(
            s, outcomes=outcomes, now=later, policy=rules(), rng=random.Random(1), limit=50
        )
    assert [v.status if v else None for v in settled.verdicts] == ["succeeded", None]
    with db() as s:
        done, still = s.get(Delivery, first.delivery_id), s.get(Delivery, second.delivery_id)
        logged = s.scalars(select(DeliveryAttempt.delivery_id)).all()
        streak = subscriptions.get_subscription(s, sub).failing_since
    assert done is not None and (done.status, done.attempts) == ("succeeded", 1)
    assert still is not None and (still.status, still.token) == ("delivering", again[1].token)
    assert sorted(logged) == [first.delivery_id, second.delivery_id]  # both POSTs logged
    assert streak is None  # the stale failure does not start a streak
    assert settled.leased == []  # the third is in flight too: nothing else is due
