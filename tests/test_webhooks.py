"""Webhook delivery end to end: loopback receivers, real Redis, real SQL, real rq workers.

Receivers run on their own thread and event loop, so the rq worker (which must run on the
main thread) can block while they answer. Schedules, timeouts and leases are shrunk through
settings; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from aiohttp import web
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from services.config import Settings
from services.db import events, subscriptions
from services.db.engine import session_factory, transaction
from services.db.models import Delivery, DeliveryAttempt, Subscription
from services.metrics import KEY, sample
from services.queue import webhook_queue
from services.webhooks.dispatcher import Dispatcher
from services.webhooks.filters import Filters
from services.webhooks.signing import new_secret
from workers import deliver


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """An aiohttp server on 127.0.0.1 in a background thread, recording every request.

    ``script[path]`` lists the answers to give in turn (then 200s); ``slow[path]`` delays
    every answer of that path; ``peak[path]`` is the most requests it had open at once.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.hits: list[Hit] = []
        self.script: dict[str, list[Answer]] = {}
        self.slow: dict[str, float] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.lock = threading.Lock()
        self.open: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        with self.lock:
            self.hits.append(Hit(path, dict(request.headers), body, time.monotonic()))
            queue = self.script.get(path) or []
            answer = queue.pop(0) if queue else Answer()
            self.open[path] = self.open.get(path, 0) + 1
            self.peak[path] = max(self.peak.get(path, 0), self.open[path])
        try:
            delay = answer.delay or self.slow.get(path, 0.0)
            if delay:
                await asyncio.sleep(delay)
        finally:
            with self.lock:
                self.open[path] -= 1
        return web.Response(status=answer.status, headers=answer.headers, text="thanks")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def start(self) -> Receiver:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)
        return self

    async def _cancel_rest(self) -> None:
        # Handlers still sleeping (slow or held answers) end here, not as destroyed tasks.
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        asyncio.run_coroutine_threadsafe(self._cancel_rest(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


FAST = {
    "webhook_schedule": (0.0, 0.2, 0.2, 0.2),
    "webhook_timeout": 1.0,
    "webhook_lease": 2.0,
    "webhook_concurrency": 2,
}


class Hooks:
    """The webhook side of the service, in-process: a dispatcher and a burst delivery worker."""

    def __init__(self, settings: Settings, engine: Engine, conn: redis.Redis) -> None:
        self.settings = settings
        self.db = session_factory(engine)
        self.conn = conn
        self.queue = webhook_queue(settings, conn)
        self.dispatcher = Dispatcher(settings, sessions=self.db, queue=self.queue)
        self.ctx = deliver.build_context(settings, conn)
        deliver.install(self.ctx)
        self.worker = deliver.make_worker(settings, conn)

    def close(self) -> None:
        deliver.install(None)
        self.ctx.close()

    def subscribe(self, url: str, **kw: Any) -> subscriptions.SubscriptionRecord:
        kw.setdefault("event_types", ("article.created",))
        kw.setdefault("filters", Filters())
        kw.setdefault("description", None)
        with transaction(self.db) as s:
            return subscriptions.create_subscription(
                s, url=url, secret=kw.pop("secret", None) or new_secret(), now=now(), **kw
            )

    def event(self, type_: str = "article.created", **payload: Any) -> int:
        payload = payload or {"version": 1, "article": {"id": 1, "title": "Fire in Porto"}}
        with transaction(self.db) as s:
            return events.add_event(s, type=type_, now=now(), payload=payload)

    def tick(self) -> None:
        self.dispatcher.run_once()
        self.worker.work(burst=True, logging_level="WARNING")

    def pump(self, until: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.tick()
            if until():
                return
            assert time.monotonic() < deadline, "condition not reached in time"
            time.sleep(0.05)

    def delivery(self, subscription_id: int) -> Delivery:
        with self.db() as s:
            return s.scalars(
                select(Delivery)
                .where(Delivery.subscription_id == subscription_id)
                .order_by(Delivery.id.desc())
            ).first()  # type: ignore[return-value]

    def attempts(self, delivery_id: int) -> list[DeliveryAttempt]:
        with self.db() as s:
            return list(
                s.scalars(
                    select(DeliveryAttempt)
                    .where(DeliveryAttempt.delivery_id == delivery_id)
                    .order_by(DeliveryAttempt.id)
                )
            )

    def subscription(self, subscription_id: int) -> Subscription:
        with self.db() as s:
            found = s.get(Subscription, subscription_id)
            assert found is not None
            return found


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    return settings.with_overrides(**FAST)


@pytest.fixture
def hooks(fast_settings: Settings, engine: Engine, redis_conn: redis.Redis) -> Iterator[Hooks]:
    harness = Hooks(fast_settings, engine, redis_conn)
    yield harness
    harness.close()


def verify(secret: str, hit: Hit) -> Any:
    """Exactly what a receiver does with the standardwebhooks library."""
    return Webhook(secret).verify(hit.body, hit.headers)


# -- signatures -------------------------------------------------------------------------------


def test_delivery_is_signed_as_standard_webhooks_receivers_expect(
    hooks: Hooks, receiver: Receiver
) -> None:
    sub = hooks.subscribe(receiver.url())
    event_id = hooks.event()
    hooks.pump(lambda: len(receiver.hits) == 1)
    (hit,) = receiver.hits
    assert hit.webhook_id == str(event_id)
    assert hit.headers["Content-Type"] == "application/json"
    document = verify(sub.secret, hit)
    assert document["type"] == "article.created"
    assert document["data"]["article"]["api_url"] == "/v1/articles/1"
    assert set(document) == {"type", "timestamp", "data"}
    delivery = hooks.delivery(sub.id)
    assert delivery.status == "succeeded" and delivery.attempts == 1
    assert delivery.last_status_code == 200 and delivery.response_excerpt == "thanks"


def test_rotation_sends_two_valid_signatures(hooks: Hooks, receiver: Receiver) -> None:
    sub = hooks.subscribe(receiver.url())
    with transaction(hooks.db) as s:
        rotated = subscriptions.rotate_secret(s, sub.id, secret=new_secret(), now=now(), grace=60)
    hooks.event()
    hooks.pump(lambda: len(receiver.hits) == 1)
    (hit,) = receiver.hits
    assert len(hit.headers["webhook-signature"].split(" ")) == 2
    verify(sub.secret, hit)  # receivers still on the old secret
    verify(rotated.secret, hit)  # receivers already on the new one
    with pytest.raises(Exception, match="No matching signature"):
        verify(new_secret(), hit)


def test_previous_secret_stops_signing_after_the_grace(hooks: Hooks, receiver: Receiver) -> None:
    sub = hooks.subscribe(receiver.url())
    with transaction(hooks.db) as s:
        subscriptions.rotate_secret(s, sub.id, secret=new_secret(), now=now(), grace=0)
    hooks.event()
    hooks.pump(lambda: len(receiver.hits) == 1)
    assert len(receiver.hits[0].headers["webhook-signature"].split(" ")) == 1
    with pytest.raises(Exception, match="No matching signature"):
        verify(sub.secret, receiver.hits[0])


# -- failures and the retry schedule ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_receiver_down_then_up_gets_the_same_webhook_id(hooks: Hooks) -> None:
    port = free_port()  # bound and closed: connections are refused
    sub = hooks.subscribe(f"http://127.0.0.1:{port}/hook")
    event_id = hooks.event()
    hooks.pump(lambda: hooks.delivery(sub.id).attempts >= 2)
    delivery = hooks.delivery(sub.id)
    assert delivery.status == "failed" and delivery.last_error_code == "connection_error"
    tries = hooks.attempts(delivery.id)
    gap = (tries[1].attempted_at - tries[0].attempted_at).total_seconds()
    assert 0.15 <= gap < 2.0  # the shrunk schedule's 0.2 s (jittered), plus a tick
    server = Receiver(port).start()
    try:
        hooks.pump(lambda: len(server.hits) == 1)
    finally:
        server.stop()
    assert server.hits[0].webhook_id == str(event_id)
    delivery = hooks.delivery(sub.id)
    assert delivery.status == "succeeded" and delivery.attempts == len(hooks.attempts(delivery.id))
    assert hooks.subscription(sub.id).failing_since is None


def test_500_is_retried_until_the_schedule_is_exhausted(hooks: Hooks, receiver: Receiver) -> None:
    receiver.script["/hook"] = [Answer(500)] * 10
    sub = hooks.subscribe(receiver.url())
    hooks.event()
    hooks.pump(lambda: hooks.delivery(sub.id).status == "dead")
    delivery = hooks.delivery(sub.id)
    assert delivery.attempts == len(FAST["webhook_schedule"]) == len(receiver.hits)  # type: ignore[arg-type]
    assert {h.webhook_id for h in receiver.hits} == {receiver.hits[0].webhook_id}
    assert delivery.last_status_code == 500 and delivery.last_error_code == "http_500"
    assert hooks.subscription(sub.id).enabled  # still within the failure window
    # /metrics counts every attempt by outcome, and its latency.
    counters = {k.decode(): float(v) for k, v in hooks.conn.hgetall(KEY).items()}
    tries = len(FAST["webhook_schedule"])  # type: ignore[arg-type]
    by_outcome = {
        o: counters.get(sample("newsdesk_webhook_deliveries_total", {"outcome": o}), 0)
        for o in ("failed", "dead")
    }
    assert by_outcome == {"failed": tries - 1, "dead": 1}
    assert counters["newsdesk_webhook_latency_seconds_count"] == tries


def test_429_retry_after_is_honoured(hooks: Hooks, receiver: Receiver) -> None:
    receiver.script["/hook"] = [Answer(429, headers={"Retry-After": "1"})]
    sub = hooks.subscribe(receiver.url())
    hooks.event()
    hooks.pump(lambda: len(receiver.hits) == 2)
    first, second = receiver.hits
    assert second.at - first.at >= 1.0  # not the schedule's 0.2 s
    delivery = hooks.delivery(sub.id)
    assert delivery.status == "succeeded"
    assert [a.status_code for a in hooks.attempts(delivery.id)] == [429, 200]


def test_410_disables_the_subscription(hooks: Hooks, receiver: Receiver) -> None:
    receiver.script["/gone"] = [Answer(410)]
    gone = hooks.subscribe(receiver.url("/gone"))
    watcher = hooks.subscribe(receiver.url("/watch"), event_types=("subscription.disabled",))
    hooks.event()
    hooks.pump(lambda: len(receiver.on("/watch")) == 1)
    sub = hooks.subscription(gone.id)
    assert not sub.enabled and sub.disabled_reason == "gone"
    assert hooks.delivery(gone.id).status == "dead"
    notice = verify(watcher.secret, receiver.on("/watch")[0])
    assert notice["type"] == "subscription.disabled"
    assert notice["data"]["subscription"]["id"] == gone.id
    assert notice["data"]["reason"] == "gone"
    assert "secret" not in json.dumps(notice)
    hooks.event()  # a disabled subscription gets nothing more
    hooks.tick()
    assert len(receiver.on("/gone")) == 1


def test_redirect_is_a_failure_and_is_not_followed(hooks: Hooks, receiver: Receiver) -> None:
    receiver.script["/first"] = [Answer(308, headers={"Location": "/second"})]
    sub = hooks.subscribe(receiver.url("/first"))
    hooks.event()
    hooks.pump(lambda: hooks.delivery(sub.id).attempts >= 1)
    delivery = hooks.delivery(sub.id)
    assert delivery.status == "failed" and delivery.last_status_code == 308
    assert delivery.last_error_code == "http_308"
    assert "not followed" in (delivery.last_error_detail or "")
    assert receiver.on("/second") == []


def test_failing_for_the_window_disables_with_an_event(
    settings: Settings, engine: Engine, redis_conn: redis.Redis, receiver: Receiver
) -> None:
    tight = settings.with_overrides(**FAST | {"webhook_schedule": (0.0,),
                                              "webhook_disable_after": 1})  # fmt: skip
    hooks = Hooks(tight, engine, redis_conn)
    try:
        receiver.script["/down"] = [Answer(500)] * 5
        down = hooks.subscribe(receiver.url("/down"))
        fine = hooks.subscribe(receiver.url("/fine"))  # control: succeeds, stays enabled
        hooks.subscribe(receiver.url("/watch"), event_types=("subscription.disabled",))
        hooks.event()
        hooks.pump(lambda: len(receiver.on("/down")) == 1 and len(receiver.on("/fine")) == 1)
        assert hooks.subscription(down.id).enabled  # one failure is not a streak yet
        time.sleep(1.1)
        hooks.event()
        hooks.pump(lambda: len(receiver.on("/watch")) == 1)
        sub = hooks.subscription(down.id)
        assert not sub.enabled and sub.disabled_reason == "failing"
        assert hooks.subscription(fine.id).enabled
        notice = receiver.on("/watch")[0].json()
        assert notice["data"]["subscription"]["id"] == down.id
        assert notice["data"]["reason"] == "failing"
    finally:
        hooks.close()


# -- durability -------------------------------------------------------------------------------


def test_flushed_redis_mid_retry_resumes_from_sql(hooks: Hooks, receiver: Receiver) -> None:
    receiver.script["/hook"] = [Answer(500), Answer(500)]
    sub = hooks.subscribe(receiver.url())
    event_id = hooks.event()
    hooks.pump(lambda: hooks.delivery(sub.id).attempts == 1)
    # Waiting for its retry: nothing of it is in Redis, the schedule is in SQL.
    hooks.conn.flushdb()
    time.sleep(0.3)
    # Now due: handed out and queued, then Redis loses the job too.
    hooks.dispatcher.run_once()
    assert hooks.queue.count == 1
    hooks.conn.flushdb()
    assert hooks.queue.count == 0
    hooks.pump(lambda: hooks.delivery(sub.id).status == "succeeded", timeout=15)
    assert [h.webhook_id for h in receiver.hits] == [str(event_id)] * 3
    assert [a.status_code for a in hooks.attempts(hooks.delivery(sub.id).id)] == [500, 500, 200]


def test_a_new_subscription_does_not_get_earlier_articles(hooks: Hooks, receiver: Receiver) -> None:
    hooks.event()  # committed, not fanned out yet
    sub = hooks.subscribe(receiver.url())
    hooks.tick()
    assert receiver.hits == [] and hooks.delivery(sub.id) is None
    later = hooks.event()
    hooks.pump(lambda: len(receiver.hits) == 1)
    assert receiver.hits[0].webhook_id == str(later)


def test_per_subscription_concurrency_and_several_dispatchers(
    hooks: Hooks, receiver: Receiver
) -> None:
    sub = hooks.subscribe(receiver.url())
    for _ in range(5):
        hooks.event()
    other = Dispatcher(hooks.settings, sessions=hooks.db, queue=hooks.queue)
    threads = [threading.Thread(target=d.run_once) for d in (hooks.dispatcher, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with hooks.db() as s:
        rows = s.scalars(select(Delivery).where(Delivery.subscription_id == sub.id)).all()
    assert len(rows) == 5  # one per event, though two dispatchers fanned out
    assert sum(r.status == "delivering" for r in rows) == 2  # the concurrency cap
    assert hooks.queue.count == 1  # one job carries both
    hooks.pump(lambda: len(receiver.hits) == 5)
    assert len({h.webhook_id for h in receiver.hits}) == 5


def test_stale_job_does_nothing(hooks: Hooks, receiver: Receiver) -> None:
    sub = hooks.subscribe(receiver.url())
    hooks.event()
    hooks.dispatcher.run_once()
    delivery = hooks.delivery(sub.id)
    # A job from an earlier hand-out (its lease ran out and the delivery was handed out again).
    assert deliver.deliver(delivery.id, delivery.token - 1)["outcome"] == "stale"
    assert receiver.hits == []
    hooks.worker.work(burst=True, logging_level="WARNING")
    assert len(receiver.hits) == 1


def test_redeliver_sends_again_with_the_same_id(hooks: Hooks, receiver: Receiver) -> None:
    from services.db.deliveries import redeliver

    sub = hooks.subscribe(receiver.url())
    hooks.event()
    hooks.pump(lambda: len(receiver.hits) == 1)
    with transaction(hooks.db) as s:
        redeliver(s, hooks.delivery(sub.id).id, now=now())
    hooks.pump(lambda: len(receiver.hits) == 2)
    assert receiver.hits[0].webhook_id == receiver.hits[1].webhook_id
    assert (
        receiver.hits[0].headers["webhook-timestamp"]
        <= receiver.hits[1].headers["webhook-timestamp"]
    )


def db_sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


def test_lease_outlasts_the_timeout(fast_settings: Settings) -> None:
    from services.webhooks.dispatcher import policy

    assert policy(fast_settings.with_overrides(webhook_lease=0.5)).lease >= 2.0
    assert policy(fast_settings).schedule == (0.0, 0.2, 0.2, 0.2)
    assert timedelta(seconds=policy(fast_settings).lease) > timedelta(seconds=1)


# -- batches ----------------------------------------------------------------------------------


def one_job_settings(settings: Settings) -> Settings:
    """One delivery process: the dispatcher puts a whole hand-out in one job."""
    return settings.with_overrides(**FAST | {"webhook_workers": 1})


def test_one_failing_receiver_in_a_batch_leaves_the_others_alone(
    settings: Settings, engine: Engine, redis_conn: redis.Redis, receiver: Receiver
) -> None:
    hooks = Hooks(one_job_settings(settings), engine, redis_conn)
    try:
        receiver.script["/err"] = [Answer(500)]
        receiver.script["/gone"] = [Answer(410)]
        ok = hooks.subscribe(receiver.url("/ok"))
        err = hooks.subscribe(receiver.url("/err"))
        gone = hooks.subscribe(receiver.url("/gone"))
        refused = hooks.subscribe(f"http://127.0.0.1:{free_port()}/hook")
        event_id = hooks.event()
        hooks.dispatcher.run_once()
        assert hooks.queue.count == 1  # the four deliveries are one job
        hooks.worker.work(burst=True, logging_level="WARNING")
        got = {s.id: hooks.delivery(s.id) for s in (ok, err, gone, refused)}
        assert [got[s.id].attempts for s in (ok, err, gone, refused)] == [1, 1, 1, 1]
        assert got[ok.id].status == "succeeded" and got[ok.id].last_status_code == 200
        assert got[err.id].status == "failed" and got[err.id].last_error_code == "http_500"
        assert got[gone.id].status == "dead" and got[gone.id].last_status_code == 410
        assert got[refused.id].status == "failed"
        assert got[refused.id].last_error_code == "connection_error"
        assert hooks.subscription(ok.id).failing_since is None
        assert hooks.subscription(err.id).failing_since is not None
        assert hooks.subscription(err.id).enabled and hooks.subscription(ok.id).enabled
        assert not hooks.subscription(gone.id).enabled
        assert {h.webhook_id for h in receiver.hits} == {str(event_id)}
        # The failed ones are retried on their own schedule; the others are left alone.
        hooks.pump(lambda: hooks.delivery(err.id).status == "succeeded")
        assert len(receiver.on("/ok")) == 1 and len(receiver.on("/err")) == 2
    finally:
        hooks.close()


def test_a_backlog_drains_in_one_job_within_the_concurrency_cap(
    hooks: Hooks, receiver: Receiver
) -> None:
    receiver.slow["/hook"] = 0.05
    sub = hooks.subscribe(receiver.url())
    ids = [hooks.event() for _ in range(7)]
    hooks.dispatcher.run_once()
    assert hooks.queue.count == 1
    # The job sends its two, then leases and sends the subscription's next ones itself.
    hooks.worker.work(burst=True, logging_level="WARNING")
    assert sorted(int(h.webhook_id) for h in receiver.hits) == ids
    assert receiver.peak["/hook"] == 2  # webhook_concurrency
    with hooks.db() as s:
        rows = s.scalars(select(Delivery).where(Delivery.subscription_id == sub.id)).all()
    assert [(r.status, r.attempts) for r in rows] == [("succeeded", 1)] * 7
    assert hooks.queue.count == 0


def test_follow_ups_are_queued_when_other_jobs_wait(hooks: Hooks, receiver: Receiver) -> None:
    first = hooks.subscribe(receiver.url("/first"))
    for _ in range(4):
        hooks.event()
    hooks.dispatcher.run_once()  # a job for the first two
    hooks.subscribe(receiver.url("/second"))
    hooks.event()  # for both; the first subscription has two in flight already
    hooks.dispatcher.run_once()  # a job for the second subscription
    assert hooks.queue.count == 2
    hooks.worker.work(burst=True, max_jobs=1, logging_level="WARNING")
    # The first job did not go on with its backlog while another job waited: its next two
    # deliveries were leased and queued behind that job.
    assert len(receiver.on("/first")) == 2 and receiver.on("/second") == []
    assert hooks.queue.count == 2
    with hooks.db() as s:
        statuses = s.scalars(
            select(Delivery.status)
            .where(Delivery.subscription_id == first.id)
            .order_by(Delivery.id)
        ).all()
    assert statuses == ["succeeded", "succeeded", "delivering", "delivering", "pending"]
    hooks.pump(lambda: len(receiver.hits) == 6)
    assert len({h.webhook_id for h in receiver.on("/first")}) == 5


def test_recording_a_batch_applies_each_outcome_on_its_own(
    hooks: Hooks, receiver: Receiver
) -> None:
    from services.db import attempts
    from services.webhooks.dispatcher import policy
    from services.webhooks.schedule import AttemptResult

    subs = [hooks.subscribe(receiver.url(f"/{i}")) for i in range(3)]
    hooks.event()
    hooks.dispatcher.run_once()
    held = [hooks.delivery(s.id) for s in subs]
    ok = AttemptResult(204, 3)
    outcomes = [
        attempts.Outcome(held[0].id, held[0].token, subs[0].id, ok),
        attempts.Outcome(held[1].id, held[1].token, subs[1].id,
                       AttemptResult(503, 4, error_code="http_503", retry_after_seconds=0.5)),
        attempts.Outcome(held[2].id, held[2].token - 1, subs[2].id, ok),  # an older lease
        attempts.Outcome(held[0].id, held[0].token, subs[0].id, ok),  # the same lease again
    ]  # fmt: skip
    with transaction(hooks.db) as s:
        verdicts = attempts.record_attempts(
            s, outcomes=outcomes, now=now(), policy=policy(hooks.settings), rng=random.Random(1)
        )
    assert [v.status if v else None for v in verdicts] == ["succeeded", "failed", None, None]
    after = [hooks.delivery(s.id) for s in subs]
    assert [(d.status, d.attempts) for d in after] == [
        ("succeeded", 1), ("failed", 1), ("delivering", 0),
    ]  # fmt: skip
    assert after[1].next_attempt_at is not None and after[1].last_status_code == 503
    assert [len(hooks.attempts(d.id)) for d in after] == [2, 1, 1]  # every POST is logged
