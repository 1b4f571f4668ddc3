"""/metrics: the named series exist, and their values move when real work happens."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.metrics import Recorder, parse, render, sample
from tests.test_poller import NOW, NYT_1, FeedSite, MakePoller, add_feed
from tests.test_poller import make_poller as make_poller  # the fixtures these tests use
from tests.test_poller import queue as queue
from tests.test_poller import site as site


async def _scrape(client: Any) -> dict[str, float]:
    resp = await client.get("/metrics", headers={"Authorization": ""})  # open, like probes
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(await resp.text())


async def test_series_move_with_polls_jobs_and_repairs(
    site: FeedSite, make_poller: MakePoller, db: sessionmaker[Session], client: Any,
    burst: Any, settings: Settings,
) -> None:  # fmt: skip
    before = await _scrape(client)
    assert before[sample("newsdesk_feeds", {"state": "active"})] == 0
    assert before[sample("newsdesk_queue_depth", {"queue": settings.extract_queue})] == 0
    assert before["newsdesk_articles"] == 0

    add_feed(db, site.serve("nyt", NYT_1, etag='"v1"'))
    poller = await make_poller()
    enqueued = (await poller.run_once(NOW)).enqueued
    polled = await _scrape(client)
    assert polled[sample("newsdesk_polls_total", {"kind": "http", "outcome": "ok"})] == 1
    assert polled[sample("newsdesk_queue_depth", {"queue": settings.extract_queue})] == enqueued
    assert (
        polled[sample("newsdesk_queue_oldest_age_seconds", {"queue": settings.extract_queue})] >= 0
    )
    assert polled[sample("newsdesk_feeds", {"state": "active"})] == 1
    # A fresh Redis (this test's) is what the reconciliation marker detects.
    assert polled[sample("newsdesk_reconcile_repairs_total", {"kind": "redis_lost"})] == 1

    assert burst() == enqueued
    worked = await _scrape(client)
    assert worked[sample("newsdesk_items_total", {"status": "created"})] == enqueued
    duration = sample("newsdesk_job_duration_seconds_count", {"kind": "extract"})
    assert worked[duration] == enqueued
    inf = sample("newsdesk_job_duration_seconds_bucket", {"kind": "extract", "le": "+Inf"})
    assert worked[inf] == enqueued
    assert worked[sample("newsdesk_queue_depth", {"queue": settings.extract_queue})] == 0
    assert worked["newsdesk_articles"] == enqueued and worked["newsdesk_entities"] > 0

    await poller.run_once(NOW + timedelta(hours=2))  # the server answers 304
    again = await _scrape(client)
    assert again[sample("newsdesk_polls_total", {"kind": "http", "outcome": "not_modified"})] == 1
    assert again["newsdesk_poll_not_modified_ratio"] == pytest.approx(0.5)


def test_histograms_are_cumulative_and_rendered_in_order() -> None:
    rec = Recorder(None)
    rec.observe("newsdesk_job_duration_seconds", 0.2, buckets=(0.1, 0.5, 1.0), kind="extract")
    rec.observe("newsdesk_job_duration_seconds", 0.7, buckets=(0.1, 0.5, 1.0), kind="extract")
    counters = dict(rec._pending)
    text = render(counters, [("newsdesk_articles", 3)])
    assert "# TYPE newsdesk_job_duration_seconds histogram" in text
    values = parse(text)
    bucket = "newsdesk_job_duration_seconds_bucket"
    got = [
        values[sample(bucket, {"kind": "extract", "le": le})] for le in ("0.1", "0.5", "1", "+Inf")
    ]
    assert got == [0, 1, 2, 2]
    assert values[
        sample("newsdesk_job_duration_seconds_sum", {"kind": "extract"})
    ] == pytest.approx(0.9)
    lines = [ln for ln in text.splitlines() if ln.startswith(bucket)]
    assert [ln.split('le="')[1].split('"')[0] for ln in lines] == ["0.1", "0.5", "1", "+Inf"]


def test_flushes_inside_held_wait_for_the_end_of_the_block(settings: Settings) -> None:
    import redis

    from services.metrics import KEY

    client = redis.Redis.from_url(settings.redis_url)
    rec = Recorder(client)
    field = sample("newsdesk_items_total", {"status": "created"})
    with rec.held():
        for _ in range(3):
            rec.add("newsdesk_items_total", status="created")
            rec.flush()
        assert client.hget(KEY, field) is None, "nothing may reach Redis inside the block"
    assert client.hget(KEY, field) == b"3"
    rec.add("newsdesk_items_total", status="created")
    rec.flush()
    assert client.hget(KEY, field) == b"4"


def test_a_whole_increment_to_a_fractional_sum_is_kept(settings: Settings) -> None:
    """A histogram sum holds a float in Redis; a later whole-number increment must add to it
    (HINCRBY would refuse the field and the flush would drop every count with it)."""
    import redis

    from services.metrics import KEY

    client = redis.Redis.from_url(settings.redis_url)
    rec = Recorder(client)
    name = "newsdesk_webhook_latency_seconds"
    rec.observe(name, 0.25, buckets=(1.0,), outcome="delivered")
    rec.flush()
    rec.observe(name, 1.0, buckets=(1.0,), outcome="delivered")  # a whole second
    rec.flush()
    stored = parse(render({k.decode(): float(v) for k, v in client.hgetall(KEY).items()}, []))
    assert stored[sample(f"{name}_sum", {"outcome": "delivered"})] == pytest.approx(1.25)
    assert stored[sample(f"{name}_count", {"outcome": "delivered"})] == 2
