"""Extraction jobs on a real rq worker, real Redis and real SQL: storage, dedup, idempotency."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.db import feeds
from services.db.engine import transaction
from services.db.models import Article, ArticleEntity, ArticleUrl, Entity, Event, Sighting
from services.queue import enqueue_extract, extract_queue, redis_client
from tests.conftest import REPO
from workers.context import current
from workers.pipeline import process

SEED = REPO / "seeds" / "000_a39bf01833f5003a.txt"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _feed(
    db: sessionmaker[Session], url: str = "http://example.test/rss", kind: str = "http"
) -> int:
    with transaction(db) as s:
        return feeds.add_feed(s, url=url, kind=kind, interval_seconds=900, now=NOW).id


def file_payload(feed_id: int, name: str, text: str) -> dict[str, Any]:
    return {
        "v": 1,
        "feed_id": feed_id,
        "kind": "file",
        "item_key": name,
        "content_hash": hashlib.sha256(text.encode()).hexdigest(),
        "url": None,
        "title": None,
        "summary": None,
        "content": text,
        "content_type": "text/plain",
        "published": None,
        "author": None,
    }


def feed_payload(feed_id: int, guid: str, *, url: str, title: str, summary: str) -> dict[str, Any]:
    digest = hashlib.sha256(f"{title}\x1f{url}\x1f{summary}".encode()).hexdigest()
    return {
        "v": 1,
        "feed_id": feed_id,
        "kind": "feed",
        "item_key": guid,
        "content_hash": digest,
        "url": url,
        "title": title,
        "summary": summary,
        "content": None,
        "content_type": "text/html",
        "published": "2026-11-27T10:00:00+00:00",
        "author": None,
    }


def counts(db: sessionmaker[Session]) -> dict[str, int]:
    with db() as s:
        return {
            m.__tablename__: s.scalar(select(func.count()).select_from(m)) or 0
            for m in (Article, Sighting, ArticleUrl, Entity, ArticleEntity, Event)
        }


def entities_of(db: sessionmaker[Session], article_id: int) -> dict[str, str]:
    with db() as s:
        rows = s.execute(
            select(Entity.name, Entity.type)
            .join(ArticleEntity, ArticleEntity.entity_id == Entity.id)
            .where(ArticleEntity.article_id == article_id)
        )
        return {name: type_ for name, type_ in rows}


def enqueue(settings: Settings, payload: dict[str, Any]) -> bool:
    return enqueue_extract(extract_queue(settings, redis_client(settings)), payload, timeout=60)


def test_seed_article_stored_with_entities(settings: Settings, db: Any, burst: Any) -> None:
    fid = _feed(db, "folder:/seeds", "folder")
    assert enqueue(settings, file_payload(fid, SEED.name, SEED.read_text("utf-8")))
    assert burst() == 1
    with db() as s:
        (article,) = s.scalars(select(Article)).all()
        events = s.scalars(select(Event)).all()
    assert article.title == "Biden sends Blinken to Mideast to push peace talks after Gaza truce"
    assert article.text.startswith("Secretary of State Antony J. Blinken is heading")
    assert "Pool Photo" not in article.text
    assert article.boilerplate["credits"] == ["Saul Loeb / Pool Photo"]
    assert article.boilerplate["related"][0]["date"] == "May 23, 2021"
    found = entities_of(db, article.id)
    assert found["Antony J. Blinken"] == "person"
    assert found["Biden"] == "person"
    for place in ("Israel", "Gaza", "Egypt", "Jordan"):
        assert found[place] == "place"
    assert found["Hamas"] == "organization"
    assert found["State Department"] == "organization"
    assert not any("Pool Photo" in name for name in found)
    assert "Blinken" not in found
    assert [e.type for e in events] == ["article.created"]
    assert events[0].payload["article"]["id"] == article.id


def test_a_finished_job_leaves_its_payload_in_redis_only_briefly(
    settings: Settings, db: Any, burst: Any
) -> None:
    """A job's payload carries the item and the article page the poller fetched: once the
    item is in SQL, Redis keeps it only for RESULT_TTL (a Redis that must not evict)."""
    from services.queue import RESULT_TTL

    fid = _feed(db)
    import random

    rng = random.Random(4)  # rq compresses job data: words that do not repeat much
    words = " ".join(f"w{rng.randrange(10**6)}" for _ in range(20_000))
    page = f"<html><body><article><p>Rail strike talks resume. {words}</p></article>"
    payload = feed_payload(fid, "big", url="https://news.test/big", title="Talks",
                           summary="Rail strike talks resume.")  # fmt: skip
    payload["page_html"], payload["page_url"] = page, "https://news.test/big"
    assert enqueue(settings, payload)
    conn = redis_client(settings)
    queue = extract_queue(settings, conn)
    (job_id,) = queue.job_ids
    assert conn.memory_usage(f"rq:job:{job_id}", samples=0) > len(page) // 4  # the page is in it
    assert burst() == 1
    assert queue.finished_job_registry.get_job_ids() == [job_id]
    assert 0 < conn.ttl(f"rq:job:{job_id}") <= RESULT_TTL <= 60


def test_same_job_twice_changes_nothing(settings: Settings, db: Any, burst: Any) -> None:
    fid = _feed(db, "folder:/seeds", "folder")
    payload = file_payload(fid, SEED.name, SEED.read_text("utf-8"))
    assert enqueue(settings, payload)
    assert not enqueue(settings, payload), "a queued job with the same id must be refused"
    burst()
    before = counts(db)
    outcome = process(current(), payload)
    assert outcome.status == "unchanged"
    assert counts(db) == before
    assert before["articles"] == 1 and before["events"] == 1


def test_duplicates_by_url_and_by_text(settings: Settings, db: Any, burst: Any) -> None:
    a, b, c = (
        _feed(db, "http://a.test/rss"),
        _feed(db, "http://b.test/rss"),
        _feed(db, "http://c.test/rss"),
    )
    story = "Officials in Lisbon announced a new tram line on Monday, the city said."
    enqueue(
        settings,
        feed_payload(
            a,
            "a-1",
            url="https://news.test/tram?utm_source=rss",
            title="Lisbon gets a tram",
            summary=story,
        ),
    )
    enqueue(
        settings,
        feed_payload(
            b,
            "b-9",
            url="https://NEWS.test/tram#top",
            title="Lisbon tram line",
            summary=story + " More soon.",
        ),
    )
    enqueue(
        settings,
        feed_payload(
            c, "c-3", url="https://mirror.test/x", title="Lisbon gets a tram", summary=story.upper()
        ),
    )
    assert burst() == 3
    with db() as s:
        (article,) = s.scalars(select(Article)).all()
        sightings = s.scalars(select(Sighting).order_by(Sighting.feed_id)).all()
        urls = set(s.scalars(select(ArticleUrl.url)))
        events = s.scalars(select(Event)).all()
    assert article.canonical_url == "https://news.test/tram"
    assert [x.article_id for x in sightings] == [article.id] * 3
    assert {"https://news.test/tram", "https://mirror.test/x"} <= urls
    assert len(events) == 1


def _porto_versions(feed_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """One feed item in two versions: the second edits its title and text."""
    url = "https://news.test/fire"
    first = feed_payload(feed_id, "g1", url=url, title="Fire in Porto", summary="A fire broke out.")
    edited = "A fire broke out in Porto. Firefighters contained it."
    second = feed_payload(feed_id, "g1", url=url, title="Fire in Porto contained", summary=edited)
    return first, second


def test_changed_item_updates_article(settings: Settings, db: Any, burst: Any) -> None:
    fid = _feed(db)
    first, second = _porto_versions(fid)
    enqueue(settings, first)
    burst()
    enqueue(settings, second)
    burst()
    with db() as s:
        (article,) = s.scalars(select(Article)).all()
        events = s.scalars(select(Event).order_by(Event.id)).all()
    assert article.title == "Fire in Porto contained"
    assert [e.type for e in events] == ["article.created", "article.updated"]
    assert events[1].payload["changes"]["title"] == ["Fire in Porto", "Fire in Porto contained"]
    assert "Porto" in entities_of(db, article.id)


def test_bad_items_are_recorded_and_do_not_stop_others(
    settings: Settings, db: Any, burst: Any
) -> None:
    fid = _feed(db, "folder:/seeds", "folder")
    enqueue(settings, file_payload(fid, "empty.txt", "   \n\n"))
    enqueue(settings, file_payload(fid, "headline-only.txt", "Just a headline\n"))
    enqueue(settings, file_payload(fid, "good.txt", "Good headline\n\nA body about Madrid."))
    assert burst() == 3
    with db() as s:
        assert s.scalar(select(func.count()).select_from(Article)) == 1
    with db() as s:
        errors = feeds.item_errors(s, feed_id=fid)
    assert {(e.item_key, e.code) for e in errors} == {
        ("empty.txt", "empty"),
        ("headline-only.txt", "empty"),
    }


@pytest.mark.parametrize("threads", [4])
def test_concurrent_writers_store_one_article(
    settings: Settings, db: Any, burst: Any, threads: int
) -> None:
    ids = [_feed(db, f"http://f{i}.test/rss") for i in range(threads)]
    text = "Ministers in Oslo agreed on Tuesday to expand the rail network across Norway."
    payloads = [
        feed_payload(
            fid, f"item-{fid}", url=f"https://f{fid}.test/a", title="Oslo rail", summary=text
        )
        for fid in ids
    ]
    ctx = current()
    barrier = threading.Barrier(threads)
    results: list[str] = []

    def run(p: dict[str, Any]) -> None:
        barrier.wait()
        results.append(process(ctx, p).status)

    workers = [threading.Thread(target=run, args=(p,)) for p in payloads]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert sorted(results) == ["created"] + ["duplicate"] * (threads - 1)
    c = counts(db)
    assert (c["articles"], c["sightings"], c["events"]) == (1, threads, 1)


def test_worker_stops_between_jobs_past_its_memory_limit(
    settings: Settings, db: Any, burst: Any
) -> None:
    from workers.runner import make_worker

    fid = _feed(db)
    for n in range(3):
        story = feed_payload(
            fid, f"g{n}", url=f"https://news.test/{n}", title=f"Story {n} in Faro", summary="Body."
        )
        enqueue(settings, story)
    # One job at a time: the limit is checked after the jobs in hand.
    worker = make_worker(settings.with_overrides(worker_max_rss_mb=64, worker_batch=1))
    assert worker.max_rss_mb == 64  # any Python process with spaCy loaded is above this
    worker.work(burst=True, logging_level="WARNING")
    queue = extract_queue(settings, redis_client(settings))
    assert queue.count == 2, "the worker must stop after the job that crossed the limit"
    assert burst() == 2  # a fresh worker (the default limit) takes the rest


class _CountingRecogniser:
    """The real recogniser, counting how many texts each NER call gets."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[int] = []

    def recognise(self, text: str) -> Any:
        self.calls.append(1)
        return self.real.recognise(text)

    def recognise_many(self, texts: list[str]) -> Any:
        self.calls.append(len(texts))
        return self.real.recognise_many(texts)


def _mixed_batch(db: Any) -> list[dict[str, Any]]:
    """Two new articles, a copy of the first under another item, and an empty file."""
    fid, folder = _feed(db), _feed(db, "folder:/seeds", "folder")
    oslo = "Ministers in Oslo agreed on Tuesday to expand the rail network across Norway."
    lima = "Voters in Lima queued for hours on Sunday as Peru chose a new Congress."
    return [
        feed_payload(fid, "a", url="https://news.test/oslo", title="Oslo rail", summary=oslo),
        feed_payload(fid, "b", url="https://news.test/lima", title="Lima votes", summary=lima),
        feed_payload(fid, "c", url="https://news.test/oslo?utm_source=x", title="Oslo rail",
                     summary=oslo),
        file_payload(folder, "empty.txt", "  \n"),
    ]  # fmt: skip


def test_waiting_jobs_are_taken_together_with_one_ner_batch(
    settings: Settings, db: Any, burst: Any
) -> None:
    payloads = _mixed_batch(db)
    for payload in payloads:
        assert enqueue(settings, payload)
    spy = _CountingRecogniser(current().recogniser)
    current().recogniser = spy
    assert settings.worker_batch >= len(payloads)
    assert burst() == len(payloads)
    # One NER call for the two new texts: the copy and the empty file skipped NER.
    assert spy.calls == [2]
    queue = extract_queue(settings, redis_client(settings))
    assert queue.finished_job_registry.count == len(payloads)
    assert queue.failed_job_registry.count == 0
    assert not current().prepared, "nothing prepared may outlive its batch"
    with db() as s:
        titles = sorted(s.scalars(select(Article.title)))
        sightings = s.scalar(select(func.count()).select_from(Sighting))
        errors = s.scalar(
            select(func.count()).select_from(Sighting).where(Sighting.error_code.is_not(None))
        )
    assert titles == ["Lima votes", "Oslo rail"]
    assert (sightings, errors) == (4, 1)
    oslo = entities_of(db, _article_id(db, "Oslo rail"))
    assert "Oslo" in oslo, oslo  # NER ran on the batch (the model calls it a place or an org)


def test_batched_and_one_by_one_store_the_same(settings: Settings, db: Any, burst: Any) -> None:
    """The same jobs through a batch of one: the same rows (ids aside)."""
    from workers.runner import make_worker

    payloads = _mixed_batch(db)
    for payload in payloads:
        assert enqueue(settings, payload)
    make_worker(settings.with_overrides(worker_batch=1)).work(burst=True, logging_level="WARNING")
    one_by_one = _snapshot(db)
    with transaction(db) as s:
        for model in (ArticleEntity, ArticleUrl, Event, Sighting, Article, Entity):
            s.query(model).delete()
    for payload in payloads:
        payload["content_hash"] = payload["content_hash"][::-1]  # new job ids, same items
        assert enqueue(settings, payload)
    assert burst() == len(payloads)
    assert _snapshot(db) == one_by_one


def test_a_failing_batch_step_falls_back_to_one_job_at_a_time(
    settings: Settings, db: Any, burst: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.batch

    def broken(ctx: Any, raws: Any, phases: Any = None) -> int:
        raise RuntimeError("prepare failed")

    monkeypatch.setattr(workers.batch, "prepare", broken)
    payloads = _mixed_batch(db)
    for payload in payloads:
        assert enqueue(settings, payload)
    assert burst() == len(payloads)
    with db() as s:
        assert sorted(s.scalars(select(Article.title))) == ["Lima votes", "Oslo rail"]


def _job_results(settings: Settings) -> dict[str, Any]:
    """Each finished extraction job's result, by its item key."""
    queue = extract_queue(settings, redis_client(settings))
    jobs = [queue.fetch_job(i) for i in queue.finished_job_registry.get_job_ids()]
    return {j.args[0]["item_key"]: j.return_value() for j in jobs if j is not None}


def test_a_batch_is_stored_in_one_transaction_with_each_jobs_own_result(
    settings: Settings, db: Any, burst: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.batch
    import workers.pipeline

    writes: list[int] = []
    real = transaction

    def counted(factory: Any) -> Any:
        writes.append(1)
        return real(factory)

    monkeypatch.setattr(workers.batch, "transaction", counted)
    monkeypatch.setattr(workers.pipeline, "transaction", counted)
    payloads = _mixed_batch(db)
    for payload in payloads:
        assert enqueue(settings, payload)
    assert burst() == len(payloads)
    # One transaction for the three stored items, one for the empty file's error record.
    assert len(writes) == 2
    results = _job_results(settings)
    oslo, lima = _article_id(db, "Oslo rail"), _article_id(db, "Lima votes")
    assert results["a"]["status"] == "created" and results["a"]["article_id"] == oslo
    assert results["b"]["status"] == "created" and results["b"]["article_id"] == lima
    assert results["c"] == {"status": "duplicate", "article_id": oslo, "reason": "url"}
    assert results["empty.txt"]["status"] == "error"
    assert counts(db)["events"] == 2
    # The batch's jobs run again: each finds its sighting, nothing changes.
    before = counts(db)
    for payload in payloads:
        process(current(), payload)
    assert counts(db) == before


def test_a_batch_records_its_finished_jobs_together_as_rq_would_one_by_one(
    settings: Settings, db: Any, burst: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's successes go to Redis in one transaction at its end, not through rq's
    per-job watched transaction; each job ends exactly as rq records it: finished, with its
    result, out of the started registry."""
    from rq.worker import BaseWorker

    per_job: list[str] = []
    real = BaseWorker.handle_job_success

    def counted(self: Any, job: Any, *args: Any, **kwargs: Any) -> None:
        per_job.append(job.id)
        real(self, job, *args, **kwargs)

    monkeypatch.setattr(BaseWorker, "handle_job_success", counted)
    payloads = _mixed_batch(db)
    for payload in payloads:
        assert enqueue(settings, payload)
    queue = extract_queue(settings, redis_client(settings))
    stored = {i: queue.connection.hget(f"rq:job:{i}", "data") for i in queue.get_job_ids()}
    assert burst() == len(payloads)
    assert per_job == []
    assert queue.started_job_registry.get_job_ids() == []
    finished = [queue.fetch_job(i) for i in queue.finished_job_registry.get_job_ids()]
    assert len(finished) == len(payloads)
    for job in finished:
        assert job is not None and job.get_status() == "finished"
        result = job.latest_result()
        assert result is not None and result.type == result.Type.SUCCESSFUL
        assert result.return_value == job.return_value() and "status" in result.return_value
        assert job.ended_at is not None and job.started_at is not None
        assert job.ended_at >= job.started_at
        # The payload is still there, as queued (not re-encoded at the end).
        assert queue.connection.hget(job.key, "data") == stored[job.id]
        assert job.args[0] in payloads
    assert sorted(stored) == sorted(j.id for j in finished if j is not None)


def test_two_versions_of_an_item_in_one_batch_update_as_one_by_one(
    settings: Settings, db: Any, burst: Any
) -> None:
    first, second = _porto_versions(_feed(db))
    assert enqueue(settings, first) and enqueue(settings, second)
    assert burst() == 2
    with db() as s:
        (article,) = s.scalars(select(Article)).all()
        types = list(s.scalars(select(Event.type).order_by(Event.id)))
    assert article.title == "Fire in Porto contained"
    assert types == ["article.created", "article.updated"]


def test_a_failing_batch_transaction_leaves_each_job_its_prepared_item(
    settings: Settings, db: Any, burst: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    import workers.batch

    def broken(ctx: Any, ready: Any, looked_up: Any = None) -> Any:
        raise OperationalError("INSERT", {}, Exception("connection lost"))

    monkeypatch.setattr(workers.batch, "_store_batch", broken)
    spy = _CountingRecogniser(current().recogniser)
    current().recogniser = spy
    payloads = _mixed_batch(db)
    for payload in payloads:
        assert enqueue(settings, payload)
    assert burst() == len(payloads)
    assert spy.calls == [2], "the jobs reuse the batch's NER"
    with db() as s:
        assert sorted(s.scalars(select(Article.title))) == ["Lima votes", "Oslo rail"]
    assert _job_results(settings)["c"]["status"] == "duplicate"


class _WritesFirst:
    """The real recogniser; before its first NER call, ``write`` runs (another writer)."""

    def __init__(self, real: Any, write: Any) -> None:
        self.real = real
        self.write = write

    def recognise(self, text: str) -> Any:
        return self.real.recognise(text)

    def recognise_many(self, texts: list[str]) -> Any:
        write, self.write = self.write, None
        if write is not None:
            write()
        return self.real.recognise_many(texts)


@pytest.mark.parametrize("writer", ["another engine", "the batch's engine"])
def test_a_copy_stored_after_the_batch_looked_up_its_items_makes_one_a_duplicate(
    settings: Settings, db: Any, burst: Any, writer: str
) -> None:
    """An item decided new before the lock, whose copy another writer stored before the
    batch took the lock (here: while the batch ran NER), is decided again under it."""
    from services.core.extract import ItemPayload
    from services.db.engine import make_engine, session_factory
    from workers.batch import prepare
    from workers.context import WorkerContext
    from workers.pipeline import Outcome, ready_key

    ctx = current()
    fid = _feed(db)
    oslo = "Ministers in Oslo agreed on Tuesday to expand the rail network across Norway."
    lima = "Voters in Lima queued for hours on Sunday as Peru chose a new Congress."
    mine = feed_payload(fid, "a", url="https://news.test/oslo", title="Oslo rail", summary=oslo)
    theirs = feed_payload(fid, "z", url="https://wire.test/oslo", title="Oslo rail", summary=oslo)
    other = feed_payload(fid, "b", url="https://news.test/lima", title="Lima votes", summary=lima)
    engine = make_engine(settings.database_url) if writer == "another engine" else None
    sessions = session_factory(engine) if engine is not None else ctx.sessions
    elsewhere = WorkerContext(settings=settings, sessions=sessions, recogniser=ctx.recogniser)
    stored: list[Outcome] = []
    ctx.recogniser = _WritesFirst(ctx.recogniser, lambda: stored.append(process(elsewhere, theirs)))
    try:
        assert prepare(ctx, [mine, other]) == 2
    finally:
        if engine is not None:
            engine.dispose()
    (copied,) = stored
    assert copied.status == "created"
    outcome = ctx.prepared[ready_key(ItemPayload.from_dict(mine))]
    assert (outcome.status, outcome.article_id) == ("duplicate", copied.article_id)
    assert ctx.prepared[ready_key(ItemPayload.from_dict(other))].status == "created"
    with db() as s:
        assert sorted(s.scalars(select(Article.title))) == ["Lima votes", "Oslo rail"]
        assert s.scalar(select(func.count()).select_from(Sighting)) == 3


def test_a_batch_decides_once_where_storage_provably_did_not_change(
    settings: Settings, db: Any, burst: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the decisions taken before the lock stand when nothing was written since;
    PostgreSQL cannot tell, and decides again under the lock."""
    import workers.batch

    decided: list[int] = []
    real = workers.batch.decide_many

    def counted(session: Any, items: Any) -> Any:
        decided.append(len(items))
        return real(session, items)

    monkeypatch.setattr(workers.batch, "decide_many", counted)
    new = _mixed_batch(db)[:2]  # two new articles, unrelated: one run
    assert workers.batch.prepare(current(), new) == 2
    sqlite = settings.database_url.startswith("sqlite")
    assert decided == ([2] if sqlite else [2, 2])
    assert sorted(o.status for o in current().prepared.values()) == ["created", "created"]


class _Died(BaseException):
    """Stands for the process dying: nothing in the worker catches it."""


def _take_batch(settings: Settings, db: Any) -> tuple[Any, Any, list[str]]:
    """A batch worker, its queue and the ids of the mixed batch's jobs, all waiting."""
    from workers.runner import make_worker

    for payload in _mixed_batch(db):
        assert enqueue(settings, payload)
    worker = make_worker(settings)
    queue = worker.queues[0]
    return worker, queue, list(queue.job_ids)


def _statuses(queue: Any, ids: list[str]) -> list[str]:
    return [queue.fetch_job(i).get_status() for i in ids]


def test_a_process_dying_while_it_marks_its_batch_leaves_all_of_it_or_none_started(
    settings: Settings, db: Any, burst: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rq retries an abandoned job only if it is STARTED: a batch half marked would strand
    its unmarked jobs. Dying at the second job's mark leaves none started, all of them in
    rq's intermediate queue, from which maintenance puts them back in the queue."""
    from rq.job import Job

    worker, queue, ids = _take_batch(settings, db)
    marks = 0
    real = Job.prepare_for_execution

    def dies_at_the_second(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal marks
        marks += 1
        if marks == 2:
            raise _Died
        real(self, *args, **kwargs)

    monkeypatch.setattr(Job, "prepare_for_execution", dies_at_the_second)
    job, _ = queue.dequeue_any([queue], None, connection=worker.connection,
                               serializer=worker.serializer)  # fmt: skip
    with pytest.raises(_Died):
        worker.execute_job(job, queue)
    assert marks == 2 and len(ids) == 4
    assert set(_statuses(queue, ids)) == {"queued"}
    assert sorted(queue.intermediate_queue.get_job_ids()) == sorted(ids)


def test_every_job_of_a_batch_whose_process_died_is_retried(
    settings: Settings, db: Any, burst: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import workers.batch
    from workers.runner import HEARTBEAT_TTL

    def dies(ctx: Any, raws: Any, phases: Any = None) -> int:
        raise _Died

    monkeypatch.setattr(workers.batch, "prepare", dies)
    worker, queue, ids = _take_batch(settings, db)
    job, _ = queue.dequeue_any([queue], None, connection=worker.connection,
                               serializer=worker.serializer)  # fmt: skip
    with pytest.raises(_Died):
        worker.execute_job(job, queue)
    assert set(_statuses(queue, ids)) == {"started"}
    assert queue.intermediate_queue.get_job_ids() == []
    # No heartbeat any more: rq's maintenance finds every job of the batch abandoned.
    queue.started_job_registry.cleanup(timestamp=time.time() + HEARTBEAT_TTL + 1)
    assert set(_statuses(queue, ids)) == {"scheduled"}, "each waits for its retry"
    assert sorted(queue.scheduled_job_registry.get_job_ids()) == sorted(ids)


def _article_id(db: Any, title: str) -> int:
    with db() as s:
        return int(s.scalars(select(Article.id).where(Article.title == title)).one())


def _snapshot(db: Any) -> dict[str, Any]:
    with db() as s:
        articles = sorted(s.execute(select(Article.title, Article.text, Article.content_hash)))
        sightings = sorted(
            s.execute(select(Sighting.item_key, Sighting.error_code, Sighting.url)),
            key=repr,
        )
        links = sorted(
            s.execute(
                select(Article.title, Entity.name, Entity.type, ArticleEntity.mentions)
                .join(ArticleEntity, ArticleEntity.article_id == Article.id)
                .join(Entity, Entity.id == ArticleEntity.entity_id)
            )
        )
        events = sorted(s.scalars(select(Event.type)))
    return {"articles": articles, "sightings": sightings, "links": links, "events": events}


def test_a_batch_taken_by_a_process_that_died_before_starting_it_is_queued_again(
    settings: Settings, db: Any, burst: Any
) -> None:
    """A process killed between taking jobs (rq moves them to its intermediate queue) and
    starting them: its jobs go back to the front of the queue at maintenance, seconds later,
    rather than after rq's one-minute sweep counts them as failed attempts."""
    import time

    from services.queue import requeue_stranded
    from workers.runner import STRANDED_AFTER

    worker, queue, ids = _take_batch(settings, db)
    conn = worker.connection
    taken = ids[:3]
    for _ in taken:  # what the dead process did: moved them, started none
        conn.lmove(queue.key, queue.intermediate_queue_key)
    assert queue.intermediate_queue.get_job_ids() == taken
    assert requeue_stranded(queue, older_than=STRANDED_AFTER) == []  # first seen now
    # Still too young: a live process would be starting them.
    soon = time.time() + STRANDED_AFTER / 2
    assert requeue_stranded(queue, older_than=STRANDED_AFTER, now=soon) == []
    later = time.time() + STRANDED_AFTER + 1
    assert sorted(requeue_stranded(queue, older_than=STRANDED_AFTER, now=later)) == sorted(taken)
    assert queue.intermediate_queue.get_job_ids() == []
    assert sorted(queue.job_ids[:3]) == sorted(taken) and sorted(queue.job_ids) == sorted(ids)
    assert set(_statuses(queue, ids)) == {"queued"}, "no attempt used up"
    # Once more: nothing stranded, nothing moves.
    assert requeue_stranded(queue, older_than=STRANDED_AFTER, now=later) == []
    worker.work(burst=True)
    assert set(_statuses(queue, ids)) == {"finished"}


def test_a_started_job_in_the_intermediate_queue_is_left_alone(
    settings: Settings, db: Any, burst: Any
) -> None:
    import time

    from services.queue import requeue_stranded
    from workers.runner import STRANDED_AFTER

    worker, queue, _ = _take_batch(settings, db)
    job, _ = queue.dequeue_any([queue], None, connection=worker.connection,
                               serializer=worker.serializer)  # fmt: skip
    worker.prepare_execution(job)  # in the started registry, as a live process leaves it
    later = time.time() + STRANDED_AFTER + 1
    assert requeue_stranded(queue, older_than=STRANDED_AFTER) == []
    assert requeue_stranded(queue, older_than=STRANDED_AFTER, now=later) == []
    assert queue.intermediate_queue.get_job_ids() == [job.id]
    assert job.id not in queue.job_ids


def test_a_new_articles_event_says_what_reading_it_back_would(
    settings: Settings, db: Any, burst: Any
) -> None:
    """The ``article.created`` payload is built from the item just stored, not read back:
    it must equal what :func:`article_events.article_event_payload` reads from storage."""
    from services.db import article_events
    from services.db.entities import StoredEntity

    fid = _feed(db)
    folder = _feed(db, "folder:/seeds", "folder")
    page = feed_payload(
        fid,
        "g-1",
        url="http://example.test/a?utm_source=rss",
        title="Ministers meet in Paris",
        summary="Talks in Paris on Monday.",
    )
    page["published"] = "2026-11-27T10:00:00+05:30"  # stored and sent as UTC
    plain = feed_payload(fid, "g-2", url="http://example.test/b", title="Floods in Spain",
                         summary="Rain closed roads in Valencia and Madrid.")  # fmt: skip
    plain["published"] = None
    for payload in (page, plain, file_payload(folder, SEED.name, SEED.read_text("utf-8"))):
        assert enqueue(settings, payload)
    assert burst() == 3
    with db() as s:
        sent = {e.article_id: e for e in s.scalars(select(Event))}
        assert len(sent) == 3 and {e.type for e in sent.values()} == {"article.created"}
        for article_id, event in sent.items():
            assert article_id is not None and event.feed_id is not None
            named = [StoredEntity(**e) for e in event.payload["entities"]]
            read = article_events.article_event_payload(
                s, article_id=article_id, feed_id=event.feed_id, entities=named
            )
            assert event.payload == read
    published = {e.payload["article"]["published_at"] for e in sent.values()}
    assert published == {"2026-11-27T04:30:00+00:00", None}
    urls = {e.payload["article"]["url"] for e in sent.values()}
    assert "http://example.test/a" in urls and None in urls


def _waiting(settings: Settings, db: Any, count: int) -> None:
    fid = _feed(db)
    for n in range(count):
        text = f"Item number {n} of a burst, on its own subject entirely."
        payload = feed_payload(
            fid, f"share-{n}", url=f"https://news.test/share/{n}", title=f"Share {n}", summary=text
        )
        assert enqueue(settings, payload)


def _registered(settings: Settings, count: int, *, busy: int = 0) -> list[Any]:
    """``count`` workers of the extraction queue, as rq registers them: idle but ``busy``."""
    from rq.worker import WorkerStatus

    from workers.runner import make_worker

    workers = [make_worker(settings, name=f"share-{n}") for n in range(count)]
    for n, worker in enumerate(workers):
        worker.register_birth()
        worker.set_state(WorkerStatus.BUSY if n < busy else WorkerStatus.IDLE)
    return workers


@pytest.mark.parametrize(
    ("workers", "busy", "waiting", "taken"),
    [
        (1, 0, 40, 31),  # a backlog: a full batch (the job in hand and 31 more)
        (1, 0, 4, 3),  # a burst smaller than a batch: all of it
        (2, 0, 10, 5),  # two idle processes: half of the 9 left each, rounded up
        (3, 0, 10, 3),
        (3, 2, 10, 9),  # the others are busy: all of it
        (4, 0, 2, 1),
    ],
)
def test_a_process_takes_its_share_of_the_waiting_jobs(
    settings: Settings, db: Any, workers: int, busy: int, waiting: int, taken: int
) -> None:
    assert settings.worker_batch == 32
    _waiting(settings, db, waiting)
    worker = _registered(settings, workers, busy=busy)[-1]  # idle itself, as when it dequeues
    queue = worker.queues[0]
    job, _ = queue.dequeue_any([queue], None, connection=worker.connection,
                               serializer=worker.serializer)  # fmt: skip
    more = worker._more_jobs(job, queue)
    assert len(more) == taken
    assert queue.count == waiting - 1 - taken
    # Taken as rq takes one: in the intermediate queue until started, in queue order.
    assert queue.intermediate_queue.get_job_ids() == [job.id, *(j.id for j in more)]


def test_a_process_limited_to_one_job_takes_no_more(settings: Settings, db: Any) -> None:
    from workers.runner import make_worker

    _waiting(settings, db, 3)
    worker = make_worker(settings.with_overrides(worker_batch=1))
    queue = worker.queues[0]
    job, _ = queue.dequeue_any([queue], None, connection=worker.connection,
                               serializer=worker.serializer)  # fmt: skip
    assert worker._more_jobs(job, queue) == []
    assert queue.count == 2


def test_a_batch_adds_the_cpu_of_each_of_its_phases_to_the_metrics(
    settings: Settings, db: Any, burst: Any
) -> None:
    import time

    from services.metrics import KEY, sample
    from workers.batch import BATCH_CPU

    phases = ("lookups", "extract", "sketch", "ner", "entities", "store", "jobs")
    for payload in _mixed_batch(db):
        assert enqueue(settings, payload)
    started = time.process_time()
    assert burst() == 4
    spent = time.process_time() - started
    stored = redis_client(settings).hgetall(KEY)
    found = {
        phase: float(stored.get(sample(BATCH_CPU, {"phase": phase}).encode(), 0))
        for phase in phases
    }
    assert all(found[p] > 0 for p in ("lookups", "extract", "ner", "entities", "store", "jobs"))
    assert sum(found.values()) <= spent, (found, spent)
    assert not {f for f in stored if f.startswith(BATCH_CPU.encode())} - {
        sample(BATCH_CPU, {"phase": p}).encode() for p in phases
    }
