"""A stopping worker process does not wait for rq's command listener (real Redis)."""

from __future__ import annotations

import time

import redis
from rq import Queue, SimpleWorker

from workers.rqworker import LISTENER_WAKE_SECONDS, PromptWorker


def _stop_after_the_listener_saw_its_unsubscribe(worker: SimpleWorker) -> float:
    """Seconds rq's teardown of the listener takes when the listener thread handled the
    unsubscribe confirmation before the stop request: the order that used to hang."""
    worker.subscribe()
    pubsub = worker.pubsub
    assert pubsub is not None
    deadline = time.monotonic() + 5
    while not pubsub.subscribed:  # the listener confirms the subscription
        assert time.monotonic() < deadline
        time.sleep(0.01)
    pubsub.unsubscribe()
    while pubsub.subscribed:  # ...then the unsubscription, and waits for a new one
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)
    started = time.monotonic()
    worker.unsubscribe()
    return time.monotonic() - started


def test_a_stopping_worker_stops_its_command_listener_within_a_wake(
    redis_conn: redis.Redis,
) -> None:
    worker = PromptWorker([Queue("listener-check", connection=redis_conn)], connection=redis_conn)
    took = _stop_after_the_listener_saw_its_unsubscribe(worker)
    assert took < LISTENER_WAKE_SECONDS + 1.0, took
    assert worker.pubsub_thread is not None and not worker.pubsub_thread.is_alive()
