"""Webhook delivery with real `newsdesk deliver` processes: isolation and a killed worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from rq import Worker
from sqlalchemy import Engine

from services.config import Settings
from tests.conftest import REPO
from tests.test_webhooks import FAST, Answer, Hooks, Receiver, receiver  # noqa: F401

pytestmark = pytest.mark.slow


def start_deliverers(settings: Settings, workers: int) -> subprocess.Popen[bytes]:
    env = os.environ | settings.child_environment()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "deliver", "--workers", str(workers)],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    return proc


def wait_for_workers(conn: redis.Redis, settings: Settings, count: int) -> None:
    from services.queue import webhook_queue

    queue = webhook_queue(settings, conn)
    deadline = time.monotonic() + 30
    while len(Worker.all(queue=queue)) < count:
        assert time.monotonic() < deadline, "delivery workers did not start"
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def hooks_for(settings: Settings, engine: Engine, redis_conn: redis.Redis) -> Iterator[list[Hooks]]:
    made: list[Hooks] = []
    yield made
    for h in made:
        h.close()


def test_one_slow_receiver_does_not_delay_the_other_49(
    settings: Settings,
    engine: Engine,
    redis_conn: redis.Redis,
    receiver: Receiver,  # noqa: F811
    hooks_for: list[Hooks],
) -> None:
    tuned = settings.with_overrides(**FAST | {"webhook_timeout": 3.0, "webhook_lease": 5.0})
    hooks = Hooks(tuned, engine, redis_conn)
    hooks_for.append(hooks)
    receiver.slow["/slow"] = 10.0
    slow = hooks.subscribe(receiver.url("/slow"))
    for i in range(49):
        hooks.subscribe(receiver.url(f"/fast/{i}"))
    proc = start_deliverers(tuned, workers=3)
    try:
        wait_for_workers(redis_conn, tuned, 3)
        hooks.event()
        started = time.monotonic()
        # The dispatcher hands out all 50 at once; the slow one is queued first.
        while len([h for h in receiver.hits if h.path.startswith("/fast/")]) < 49:
            hooks.dispatcher.run_once()
            assert time.monotonic() - started < 2.5, "fast receivers waited on the slow one"
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        assert len(receiver.on("/slow")) == 1
        # All 49 arrived well before the slow receiver's POST could time out (3 s).
        assert elapsed < 2.5
        assert hooks.delivery(slow.id).status == "delivering"
    finally:
        stop(proc)


def test_worker_killed_during_the_post_is_retried_with_the_same_id(
    settings: Settings,
    engine: Engine,
    redis_conn: redis.Redis,
    receiver: Receiver,  # noqa: F811
    hooks_for: list[Hooks],
) -> None:
    tuned = settings.with_overrides(**FAST | {"webhook_timeout": 3.0, "webhook_lease": 4.0})
    hooks = Hooks(tuned, engine, redis_conn)
    hooks_for.append(hooks)
    receiver.script["/hook"] = [Answer(delay=30.0)]  # holds the first POST
    sub = hooks.subscribe(receiver.url())
    event_id = hooks.event()
    proc = start_deliverers(tuned, workers=1)
    try:
        wait_for_workers(redis_conn, tuned, 1)
        hooks.dispatcher.run_once()
        deadline = time.monotonic() + 10
        while not receiver.hits:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # mid-POST
        proc.wait()
    finally:
        stop(proc)
    assert hooks.delivery(sub.id).status == "delivering"
    # Once the lease runs out the dispatcher hands it out again; an in-process worker sends.
    hooks.pump(lambda: len(receiver.hits) == 2, timeout=15)
    assert [h.webhook_id for h in receiver.hits] == [str(event_id)] * 2
    delivery = hooks.delivery(sub.id)
    assert delivery.status == "succeeded" and delivery.token == 2


def test_worker_killed_mid_batch_retries_every_delivery_with_the_same_id(
    settings: Settings,
    engine: Engine,
    redis_conn: redis.Redis,
    receiver: Receiver,  # noqa: F811
    hooks_for: list[Hooks],
) -> None:
    tuned = settings.with_overrides(
        **FAST | {"webhook_timeout": 3.0, "webhook_lease": 4.0, "webhook_workers": 1}
    )
    hooks = Hooks(tuned, engine, redis_conn)
    hooks_for.append(hooks)
    paths = [f"/hook/{i}" for i in range(3)]
    for path in paths:
        receiver.script[path] = [Answer(delay=30.0)]  # holds each first POST
    subs = [hooks.subscribe(receiver.url(path)) for path in paths]
    event_id = hooks.event()
    proc = start_deliverers(tuned, workers=1)
    try:
        wait_for_workers(redis_conn, tuned, 1)
        hooks.dispatcher.run_once()
        # One process holds all three POSTs open at once: one job carries the three.
        deadline = time.monotonic() + 10
        while len(receiver.hits) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # all three POSTs in flight
        proc.wait()
    finally:
        stop(proc)
    assert [hooks.delivery(s.id).status for s in subs] == ["delivering"] * 3
    hooks.pump(lambda: len(receiver.hits) == 6, timeout=15)
    for path in paths:
        assert [h.webhook_id for h in receiver.on(path)] == [str(event_id)] * 2
    for sub in subs:
        delivery = hooks.delivery(sub.id)
        assert delivery.status == "succeeded" and delivery.token == 2
