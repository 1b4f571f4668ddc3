"""An idle worker process keeps up its maintenance, so a dead process's jobs come back while
the queue is empty."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from rq.job import JobStatus

from services.config import Settings
from services.queue import extract_queue
from tests.test_shutdown import SLOW_JOB, Role, _workers, start  # noqa: F401
from workers.runner import STRANDED_AFTER, make_worker

pytestmark = pytest.mark.slow


def test_an_idle_worker_waits_on_the_queue_no_longer_than_its_maintenance_interval(
    settings: Settings,
) -> None:
    assert make_worker(settings.with_overrides(maintenance_interval=7)).dequeue_timeout == 7
    assert make_worker(settings.with_overrides(maintenance_interval=3600)).dequeue_timeout == 405


def test_an_idle_worker_puts_a_stranded_job_back_and_runs_it(
    settings: Settings,
    redis_conn: redis.Redis,
    start: Callable[..., Role],  # noqa: F811
) -> None:
    """A job a killed process had taken (in the intermediate queue, never started), found
    by a worker that has nothing else to do: it must not wait for the next job to arrive."""
    fast = settings.with_overrides(maintenance_interval=1)
    queue = extract_queue(fast, redis_conn)
    role = start(["worker", "--workers", "1"], settings=fast)
    role.wait_for(lambda: _workers(redis_conn, queue) == 1, "worker registered", 60)
    time.sleep(1.5)  # past its first maintenance: blocked on the empty queue

    job = queue.create_job(SLOW_JOB, args=(0.0,), timeout=30)
    job.save()
    redis_conn.rpush(queue.intermediate_queue_key, job.id)  # what the dead process left
    first_seen = queue.intermediate_queue.get_first_seen_key(job.id)
    redis_conn.set(first_seen, time.time() - STRANDED_AFTER - 5)

    role.wait_for(
        lambda: job.get_status(refresh=True) == JobStatus.FINISHED, "the stranded job run", 15
    )
    assert queue.intermediate_queue.get_job_ids() == []
    assert "worker.requeued_stranded" in role.output()
