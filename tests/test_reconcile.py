"""Reconciliation: work Redis lost is re-created from what SQL knows (poller/reconcile.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.db.models import Article, Sighting
from services.poller.reconcile import EPOCH_KEY, MAX_SWEEPS, SWEEPS_META, Reconciler
from services.queue import enqueue_extract, extract_job_id
from tests.syndication import payload, seed
from tests.test_poller import NOW, NYT_1, FeedSite, MakePoller, add_feed
from tests.test_poller import make_poller as make_poller  # the fixtures these tests use
from tests.test_poller import queue as queue
from tests.test_poller import site as site


def _sightings(db: sessionmaker[Session]) -> int:
    with db() as s:
        return int(s.scalar(select(func.count()).select_from(Sighting)) or 0)


async def test_items_queued_before_redis_lost_its_data_are_queued_again(
    site: FeedSite, make_poller: MakePoller, db: sessionmaker[Session],
    redis_conn: redis.Redis, burst: Any,
) -> None:  # fmt: skip
    url = site.serve("nyt", NYT_1, etag='"v1"')
    add_feed(db, url)
    poller = await make_poller()
    first = await poller.run_once(NOW)
    assert first.enqueued > 10
    assert redis_conn.exists(EPOCH_KEY)
    # Redis restarts empty before any worker ran: the queued jobs are gone, and the feed's
    # validators would make its next poll a 304 that re-queues nothing.
    redis_conn.flushdb()
    second = await poller.run_once(NOW + timedelta(hours=2))  # the feed's next poll
    assert second.enqueued == first.enqueued
    assert "If-None-Match" not in site.requests[-1][1]  # fetched in full, not conditionally
    assert burst() == first.enqueued
    assert _sightings(db) == first.enqueued
    # Repaired once: the next cycles are ordinary (not due, then a 304).
    assert (await poller.run_once(NOW + timedelta(hours=2, seconds=1))).enqueued == 0
    assert (await poller.run_once(NOW + timedelta(hours=4))).enqueued == 0
    assert site.requests[-1][1].get("If-None-Match") == '"v1"'
    with db() as s:
        assert s.scalar(select(func.count()).select_from(Article)) == first.enqueued


def test_failed_extraction_jobs_are_requeued_a_bounded_number_of_times(
    db: sessionmaker[Session], queue: Queue, burst: Any,
) -> None:  # fmt: skip
    fid = add_feed(db, "https://feed.test/rss")
    job_payload = payload(fid, seed())
    assert enqueue_extract(queue, job_payload, timeout=60)
    job_id = extract_job_id(fid, job_payload["item_key"], job_payload["content_hash"])
    # As if the database had been down for longer than the job's retry schedule.
    job = Job.fetch(job_id, connection=queue.connection, serializer=queue.serializer)
    queue.remove(job)
    failed = FailedJobRegistry(queue=queue)
    failed.add(job, exc_string="OperationalError: database unavailable")
    reconciler = Reconciler(db, queue, sweep_interval=3600)
    repairs = reconciler.run(NOW)
    assert repairs.jobs_requeued == 1 and job_id not in failed.get_job_ids()
    assert reconciler.run(NOW).jobs_requeued == 0  # not due again within the interval
    assert burst() == 1
    assert _sightings(db) == 1
    # A job that keeps failing is left in the failed registry after MAX_SWEEPS requeues.
    job = Job.fetch(job_id, connection=queue.connection, serializer=queue.serializer)
    job.meta[SWEEPS_META] = MAX_SWEEPS
    job.save_meta()  # type: ignore[no-untyped-call]
    failed.add(job, exc_string="ValueError: a bug")
    assert Reconciler(db, queue, sweep_interval=3600).run(NOW).jobs_requeued == 0
    assert job_id in failed.get_job_ids()
