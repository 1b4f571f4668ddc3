"""bench/extract.py creates a round's jobs beforehand and queues them in one step, so the
worker's measured window holds none of the producer's work."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import redis
from rq.job import Job, JobStatus
from sqlalchemy import Engine, text

from services.config import Settings
from services.queue import extract_job_id, extract_queue
from tests.benches import load


def bench() -> ModuleType:
    return load("extract")


def _payloads(module: ModuleType, count: int) -> list[dict[str, Any]]:
    return [module.file_payload(1, f"staged-{n}", f"Text number {n}.\n") for n in range(count)]


def test_staged_jobs_wait_outside_the_queue_then_appear_together_in_order(
    settings: Settings, redis_conn: redis.Redis
) -> None:
    module = bench()
    queue = extract_queue(settings, redis_conn)
    payloads = _payloads(module, 5)

    module.stage(queue, payloads)

    ids = [extract_job_id(p["feed_id"], p["item_key"], p["content_hash"]) for p in payloads]
    assert queue.count == 0  # nothing a worker could take yet
    for job_id in ids:
        job = Job.fetch(job_id, connection=redis_conn, serializer=queue.serializer)
        assert job.origin == queue.name
        assert job.get_status() == JobStatus.QUEUED
        assert job.args[0]["item_key"].startswith("staged-")
        assert not job.is_deferred

    # Enqueueing registered the staging list as a queue; the release takes it out again.
    assert module.staging_key(queue).encode() in redis_conn.smembers(queue.redis_queues_keys)
    assert module.release(queue) == 5
    assert queue.job_ids == ids
    assert not redis_conn.exists(module.staging_key(queue))
    assert module.staging_key(queue).encode() not in redis_conn.smembers(queue.redis_queues_keys)
    assert module.release(queue) == 0  # released once


def test_a_round_released_behind_a_waiting_job_keeps_its_order(
    settings: Settings, redis_conn: redis.Redis
) -> None:
    module = bench()
    queue = extract_queue(settings, redis_conn)
    first, rest = _payloads(module, 3)[:1], _payloads(module, 3)[1:]
    module.stage(queue, first)
    module.release(queue)
    module.stage(queue, rest)
    module.release(queue)
    assert [j.args[0]["item_key"] for j in queue.jobs] == [
        "staged-0.txt",
        "staged-1.txt",
        "staged-2.txt",
    ]


def test_the_bench_reads_the_workers_phases_from_its_metrics(
    settings: Settings, redis_conn: redis.Redis
) -> None:
    from services.metrics import Recorder
    from workers.batch import BATCH_CPU

    module = bench()
    recorder = Recorder(redis_conn)
    recorder.add(BATCH_CPU, 0.25, phase="ner")
    recorder.add(BATCH_CPU, 0.5, phase="store")
    recorder.add("newsdesk_items_total", 3, status="created")  # another family: ignored
    recorder.flush()
    assert module.batch_phases(redis_conn) == {"ner": 0.25, "store": 0.5}


def test_a_reset_empties_every_table(engine: Engine) -> None:
    """--reset starts from empty tables (TRUNCATE on PostgreSQL: no dead rows left for the
    next run's indexes). On PostgreSQL ids go on, so a new run's job ids cannot meet the last
    run's finished jobs still kept in Redis (SQLite runs take a fresh file by default)."""
    module = bench()
    before = module.register_feeds(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO stories (article_count, created_at, updated_at) "
                          "VALUES (0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))  # fmt: skip
    module.prepare_database(engine, reset=True)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM feeds")) == 0
        assert conn.scalar(text("SELECT count(*) FROM stories")) == 0
    after = module.register_feeds(engine)
    if engine.dialect.name == "postgresql":
        assert min(after) > max(before)


def test_the_loop_splits_its_cpu_into_extraction_and_ner() -> None:
    """The loops report the same two phases as the worker's own figures, and the phases are
    the loop's CPU time, split: the comparison of each phase is like for like."""
    module = bench()
    loop = module.Loop()
    texts = ["Joe Biden met Antony Blinken in Washington on Tuesday.\n", "Paris is in France.\n"]
    items = [module.file_payload(1, f"loop-{n}", t * 40) for n, t in enumerate(texts * 2)]

    seconds, cpu = loop.run(items, batch=2)

    phases = loop.phases[2]
    assert set(phases) == {"extract", "ner"}
    assert phases["extract"] > 0 and phases["ner"] > 0
    assert phases["extract"] + phases["ner"] <= cpu <= seconds * 2 + 0.05  # two cores at most
    loop.run(items, batch=1)
    assert set(loop.phases) == {1, 2}  # one tally per batch size
    assert loop.phases[2] == phases  # the other batch size's run left it alone
