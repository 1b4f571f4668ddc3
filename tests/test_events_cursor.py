"""The events outbox as a gap-free cursor: writers commit in id order; the API pages it."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.db import attempts, events, fanout, leases, subscriptions
from services.db.engine import make_engine, session_factory, transaction
from services.webhooks.dispatcher import policy
from services.webhooks.filters import Filters
from services.webhooks.schedule import AttemptResult
from services.webhooks.signing import new_secret

Client = TestClient[web.Request, web.Application]
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def reads(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Plain (deferred) read transactions, as the API opens them."""
    engine = make_engine(settings.database_url, immediate=False)
    yield session_factory(engine)
    engine.dispose()


def test_a_later_writer_waits_so_ids_commit_in_order(
    engine: Engine, reads: sessionmaker[Session]
) -> None:
    # Without the events lock, PostgreSQL would let B take id n+1 and commit it while A (id n)
    # is still open: a reader that saw n+1 would never see n.
    db = session_factory(engine)
    seen_by_b: list[int] = []
    first = db()
    first.begin()
    a = events.add_event(first, type="article.created", now=NOW, payload={"n": "a"})

    def writer_b() -> None:
        with transaction(db) as s:
            seen_by_b.append(events.add_event(s, type="article.created", now=NOW))

    thread = threading.Thread(target=writer_b)
    thread.start()
    time.sleep(0.5)
    assert seen_by_b == []  # B waits for A's commit before taking an id
    with reads() as reader:  # and nothing after A is visible yet
        assert events.events_after(reader, after=0, limit=10) == []
    first.commit()
    first.close()
    thread.join(10)
    assert seen_by_b and seen_by_b[0] > a
    with reads() as reader:
        assert [e.id for e in events.events_after(reader, after=0, limit=10)] == [a, seen_by_b[0]]


def test_concurrent_writers_never_leave_a_reader_behind(
    engine: Engine, reads: sessionmaker[Session]
) -> None:
    """Eight writers and a cursor reader: every committed id is seen, none skipped."""
    db = session_factory(engine)
    written: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer() -> None:
        rng = random.Random()
        for _ in range(15):
            with transaction(db) as s:
                event_id = events.add_event(s, type="feed.error", now=NOW)
                time.sleep(rng.uniform(0, 0.005))  # hold the transaction open a moment
            with lock:
                written.append(event_id)

    seen: list[int] = []

    def reader() -> None:
        after = 0
        while not stop.is_set() or after < max(written, default=0):
            with reads() as s:
                page = events.events_after(s, after=after, limit=100)
            seen.extend(e.id for e in page)
            after = page[-1].id if page else after
            time.sleep(0.001)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join(30)
    assert sorted(written) == seen  # in order, no gaps, no repeats


def test_an_advisory_lock_is_asked_for_once_per_transaction(engine: Engine, db: Any) -> None:
    """Every event of a batch calls ``lock_events``: PostgreSQL is asked once per transaction,
    and the lock is held until that transaction ends."""
    from sqlalchemy import event, text

    from services.db.engine import advisory_lock

    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite writers take turns without advisory locks")
    asked: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "pg_advisory_xact_lock" in statement:
            asked.append(statement)

    key = 0x7465737431  # this test's own key
    probe = "SELECT pg_try_advisory_xact_lock(:k)"
    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(2):
            with transaction(db) as s:
                for _ in range(3):
                    advisory_lock(s, key)
                with engine.connect() as other:  # another session cannot take it meanwhile
                    assert other.scalar(text(probe), {"k": key}) is False
                    other.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(asked) == 2  # once in each transaction
    with engine.connect() as other:  # released at the end of each
        assert other.scalar(text(probe), {"k": key}) is True
        other.rollback()


def _seed(db: sessionmaker[Session]) -> tuple[int, list[int]]:
    with transaction(db) as s:
        sub = subscriptions.create_subscription(
            s, url="https://93.184.216.34/hook", description=None,
            event_types=("article.created", "feed.error"), filters=Filters(),
            secret=new_secret(), now=NOW,
        )  # fmt: skip
        ids = [
            events.add_event(s, type="article.created", now=NOW, article_id=None,
                             payload={"version": 1, "article": {"id": 5, "title": "t"}}),
            events.add_event(s, type="feed.error", now=NOW, feed_id=None,
                             payload={"feed": {"id": 3}}),
            events.add_event(s, type="article.created", now=NOW,
                             payload={"version": 1, "article": {"id": 6, "title": "u"}}),
        ]  # fmt: skip
    return sub.id, ids


async def test_events_api_pages_with_after(client: Client, settings: Settings, db: Any) -> None:
    _, ids = _seed(db)
    body = await (await client.get("/v1/events?limit=2")).json()
    assert [e["id"] for e in body["data"]] == ids[:2] and body["next_after"] == ids[1]
    first = body["data"][0]
    assert first["type"] == "article.created" and first["timestamp"] == "2026-11-28T12:00:00Z"
    assert first["data"]["article"]["api_url"] == "/v1/articles/5"
    body = await (await client.get(f"/v1/events?after={body['next_after']}")).json()
    assert [e["id"] for e in body["data"]] == ids[2:]
    body = await (await client.get(f"/v1/events?after={ids[-1]}")).json()
    assert body == {"data": [], "next_after": ids[-1], "next": f"/v1/events?after={ids[-1]}"}
    typed = await (await client.get("/v1/events?type=feed.error")).json()
    assert [e["id"] for e in typed["data"]] == [ids[1]] and typed["next_after"] == ids[-1]
    for bad in ("after=-1", "after=x", "limit=0", "limit=5000", "type=nope", "since=1"):
        resp = await client.get(f"/v1/events?{bad}")
        assert resp.status == 400, bad


async def test_deliveries_api_shows_attempts_and_redelivers(
    client: Client, settings: Settings, db: Any
) -> None:
    sub_id, ids = _seed(db)
    now = datetime.now(UTC)  # the API judges leases against the real clock
    rules = policy(settings)
    with transaction(db) as s:
        fanout.fan_out(s, now=now, schedule=rules.schedule, limit=100)
    with transaction(db) as s:
        leased = leases.hand_out(s, now=now, policy=rules, limit=10)
    assert len(leased) == 2  # the concurrency cap (2) of one subscription
    with transaction(db) as s:
        verdict = attempts.record_attempt(
            s, delivery_id=leased[0][0], token=leased[0][1], now=now, policy=rules,
            rng=random.Random(1),
            result=AttemptResult(status_code=503, latency_ms=12, error_code="http_503",
                                 error_detail="HTTP 503", excerpt="busy"),
        )  # fmt: skip
    assert verdict is not None and verdict.status == "failed"
    listed = await (await client.get(f"/v1/subscriptions/{sub_id}/deliveries")).json()
    assert [d["event_id"] for d in listed["data"]] == list(reversed(ids))
    failed = next(d for d in listed["data"] if d["id"] == leased[0][0])
    assert failed["status"] == "failed" and failed["response_code"] == 503
    assert failed["latency_ms"] == 12 and failed["response_excerpt"] == "busy"
    assert failed["next_attempt_at"] is not None and failed["attempts"] == 1
    only = await (await client.get(f"/v1/subscriptions/{sub_id}/deliveries?status=failed")).json()
    assert [d["id"] for d in only["data"]] == [leased[0][0]]
    page = await (await client.get(f"/v1/subscriptions/{sub_id}/deliveries?limit=2")).json()
    rest = await (
        await client.get(f"/v1/subscriptions/{sub_id}/deliveries?cursor={page['next_cursor']}")
    ).json()
    assert len(page["data"]) == 2 and len(rest["data"]) == 1
    detail = await (await client.get(f"/v1/deliveries/{leased[0][0]}")).json()
    assert [a["response_code"] for a in detail["attempt_log"]] == [503]
    # In flight (leased to a worker): refused; failed: sent again now.
    resp = await client.post(f"/v1/deliveries/{leased[1][0]}/redeliver")
    assert resp.status == 409
    resp = await client.post(f"/v1/deliveries/{leased[0][0]}/redeliver")
    again = await resp.json()
    assert resp.status == 202 and again["status"] == "pending" and again["attempts"] == 0
    bad = await client.get(f"/v1/subscriptions/{sub_id}/deliveries?status=lost")
    assert bad.status == 400


def test_events_added_together_take_ids_in_the_order_given(db: Any) -> None:
    with transaction(db) as s:
        first = events.add_event(s, type="feed.error", now=NOW)
        ids = events.add_events(
            s, "article.created", [(None, None, {"n": n}) for n in range(5)], now=NOW
        )
    assert ids == list(range(first + 1, first + 6))
    with db() as s:
        stored = events.events_after(s, after=first, limit=10)
    assert [(e.id, e.type, e.payload["n"]) for e in stored] == [
        (i, "article.created", n) for n, i in enumerate(ids)
    ]
