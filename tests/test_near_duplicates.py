"""Near-duplicates and stories on real rq workers, real Redis and real SQL, from real texts."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.core import neardup
from services.core.entities import RawMention
from services.db import bands, feeds
from services.db.engine import session_factory, transaction
from services.db.models import (
    Article,
    ArticleShingles,
    ArticleUrl,
    Event,
    Sighting,
    Story,
)
from services.queue import enqueue_extract, extract_queue, redis_client
from tests.syndication import (
    LATIMES_MAY,
    Text,
    capture,
    item,
    later,
    payload,
    seed,
    sentence_rewritten,
    upper,
    wire,
    wire_copy,
)
from workers.context import WorkerContext, install
from workers.pipeline import UPDATE_EVENTS_PER_WINDOW, process

BBC_JUNE = "bbc__20200602T094259Z.xml"
BBC_JULY = "bbc__20200722T131157Z.xml"
NYT_APRIL = "nytimes__20200428T012704Z.xml"
NYT_MAY = "nytimes__20200517T221855Z.xml"
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _feed(db: sessionmaker[Session], url: str) -> int:
    with transaction(db) as s:
        return feeds.add_feed(s, url=url, kind="http", interval_seconds=900, now=T0).id


def enqueue(settings: Settings, job: dict[str, Any]) -> bool:
    return enqueue_extract(extract_queue(settings, redis_client(settings)), job, timeout=60)


def partition(db: sessionmaker[Session], column: Any) -> frozenset[frozenset[str]]:
    """Item keys grouped by the article (or the story) their sighting ended up in."""
    with db() as s:
        rows = s.execute(
            select(Sighting.item_key, column).join(Article, Article.id == Sighting.article_id)
        )
        groups: dict[int, set[str]] = {}
        for key, group in rows:
            groups.setdefault(group, set()).add(key)
    return frozenset(frozenset(g) for g in groups.values())


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class CountingRecogniser:
    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0

    def recognise(self, text: str) -> list[RawMention]:
        self.calls += 1
        result: list[RawMention] = self.inner.recognise(text)
        return result


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ner(recogniser: Any) -> CountingRecogniser:
    return CountingRecogniser(recogniser)


@pytest.fixture
def ctx(
    settings: Settings, engine: Engine, ner: CountingRecogniser, clock: Clock
) -> Iterator[WorkerContext]:
    """The worker context of these tests: the real model behind a call counter, a set clock."""
    context = WorkerContext(
        settings=settings, sessions=session_factory(engine), recogniser=ner, clock=clock
    )
    install(context)
    yield context
    install(None)


def test_wire_copy_is_one_article_with_two_sightings(
    settings: Settings, db: Any, burst: Callable[[], int]
) -> None:
    s = seed()
    a, b = _feed(db, "http://a.test/rss"), _feed(db, "http://b.test/rss")
    assert enqueue(settings, payload(a, s))
    assert enqueue(settings, payload(b, wire(s)))
    assert burst() == 2
    with db() as session:
        (article,) = session.scalars(select(Article)).all()
        events = session.scalars(select(Event)).all()
        urls = set(session.scalars(select(ArticleUrl.url)))
        (story,) = session.scalars(select(Story)).all()
    with db() as session:
        assert len(session.scalars(select(Sighting)).all()) == 2
    assert [e.type for e in events] == ["article.created"]
    assert article.title == s.title and "(AP)" not in article.text
    assert {s.url, wire(s).url} <= urls
    assert (article.story_id, story.article_count, story.first_article_id) == (
        story.id,
        1,
        article.id,
    )


def test_duplicate_skips_ner_and_says_why(
    ctx: WorkerContext, db: Any, ner: CountingRecogniser
) -> None:
    s = seed()
    a, b = _feed(db, "http://a.test/rss"), _feed(db, "http://b.test/rss")
    first = process(ctx, payload(a, s))
    calls = ner.calls
    second = process(ctx, payload(b, wire(s)))
    assert (first.status, second.status) == ("created", "duplicate")
    assert (second.reason, second.article_id) == ("near_duplicate", first.article_id)
    assert ner.calls == calls


def test_other_articles_on_the_topic(ctx: WorkerContext, db: Any) -> None:
    """A follow-up sharing the top of the story is its own article in the same story; a short
    real NYT item on Israelis and Palestinians is its own article and its own story."""
    s = seed()
    nyt = replace(item(NYT_APRIL, "israel-palestinian-memorial-day"), key="nyt-israel")
    fids = [_feed(db, f"http://f{i}.test/rss") for i in range(3)]
    outcomes = [process(ctx, payload(f, t)) for f, t in zip(fids, (s, later(s), nyt), strict=True)]
    assert [o.status for o in outcomes] == ["created"] * 3
    assert outcomes[1].story_id == outcomes[0].story_id
    assert outcomes[2].story_id != outcomes[0].story_id
    with db() as session:
        story = session.get(Story, outcomes[0].story_id)
        assert story is not None and story.article_count == 2
        assert story.first_article_id == outcomes[0].article_id


def test_short_items_never_merge(ctx: WorkerContext, db: Any) -> None:
    """Two real BBC items whose descriptions are 73% alike (a daily briefing's template)."""
    one = replace(item(BBC_JUNE, "uk-52885093"), key="bbc-june")
    two = replace(item(BBC_JULY, "uk-53491404"), key="bbc-july")
    assert neardup.similarity(neardup.shingles(one.body), neardup.shingles(two.body)).jaccard > 0.7
    fa, fb = _feed(db, "http://a.test/rss"), _feed(db, "http://b.test/rss")
    first, second = process(ctx, payload(fa, one)), process(ctx, payload(fb, two))
    assert (first.status, second.status) == ("created", "created")
    assert first.story_id != second.story_id
    assert partition(db, Article.id) == {frozenset({"bbc-june"}), frozenset({"bbc-july"})}


def mix() -> list[tuple[Text, str | None]]:
    """Items (with an optional link override) and the grouping they must end in."""
    s = seed()
    concerts = replace(item(LATIMES_MAY, "concerts-reopening"), key="concerts")
    return [
        (s, None),
        (wire(s), None),
        (wire_copy(s, key="seed-trim", headline=s.title, keep=10), None),
        (upper(s, key="seed-caps"), None),  # equal after normalisation: the exact hash
        # The seed's link with a tracking parameter, under another headline: the URL.
        (replace(s, key="seed-link", title="Blinken to visit Egypt"), s.url + "?utm_source=rss"),
        (later(s), None),
        (concerts, None),
        (sentence_rewritten(concerts, key="concerts-copy", dateline="LOS ANGELES"), None),
        (replace(item(LATIMES_MAY, "gavin-newsom-twitter"), key="newsom"), None),
        (replace(item(BBC_JUNE, "uk-52885093"), key="bbc-june"), None),
        (replace(item(BBC_JULY, "uk-53491404"), key="bbc-july"), None),
        (replace(item(NYT_MAY, "barack-obama-2020"), key="nyt-obama"), None),
    ]


SEED_ARTICLE = frozenset({"seed", "seed-ap", "seed-trim", "seed-caps", "seed-link"})
ARTICLES = {
    SEED_ARTICLE,
    frozenset({"follow-up"}),
    frozenset({"concerts", "concerts-copy"}),
    *(frozenset({k}) for k in ("newsom", "bbc-june", "bbc-july", "nyt-obama")),
}
STORIES = {
    SEED_ARTICLE | {"follow-up"},
    frozenset({"concerts", "concerts-copy"}),
    *(frozenset({k}) for k in ("newsom", "bbc-june", "bbc-july", "nyt-obama")),
}


def mix_jobs(db: Any, order: int) -> list[dict[str, Any]]:
    """The mix's jobs, each from a feed of its own, shuffled by seed ``order``."""
    jobs = [
        payload(_feed(db, f"http://feed{i}.test/rss"), text, url=url)
        for i, (text, url) in enumerate(mix())
    ]
    random.Random(order).shuffle(jobs)
    return jobs


def assert_grouped(db: Any) -> None:
    """The mix stored as ARTICLES in STORIES, one created event per article."""
    assert partition(db, Article.id) == ARTICLES
    assert partition(db, Article.story_id) == STORIES
    with db() as session:
        created = session.scalars(select(Event).where(Event.type == "article.created")).all()
        stories = {s.id: s.article_count for s in session.scalars(select(Story))}
    assert len(created) == len(ARTICLES)
    assert sorted(stories.values()) == sorted(sum(a <= st for a in ARTICLES) for st in STORIES)


@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_grouping_does_not_depend_on_order_or_workers(
    ctx: WorkerContext, db: Any, order: int, workers: int
) -> None:
    jobs = mix_jobs(db, order)
    pending = list(jobs)
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(workers)

    def work() -> None:
        barrier.wait()
        while True:
            with lock:
                if not pending:
                    return
                job = pending.pop(0)
            try:
                process(ctx, job)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert_grouped(db)


@pytest.mark.parametrize("batch", [5, 12])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_grouping_is_the_same_when_items_come_in_batches(
    ctx: WorkerContext, db: Any, order: int, batch: int
) -> None:
    """A worker's batch decides and writes its items in runs, cut before an item that meets
    an earlier one (the wire copies, the same-story follow-up): the same articles and
    stories as one by one."""
    from workers.batch import prepare

    jobs = mix_jobs(db, order)
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        stored = prepare(ctx, chunk)
        outcomes = [process(ctx, job).status for job in chunk]  # as the worker runs each job
        assert stored >= 1 and not ctx.prepared
        assert "error" not in outcomes
    assert_grouped(db)


def overlapping(count: int) -> list[Text]:
    """Articles of 6 paragraphs drawn from 24 real ones (the seed's 12 and 12 LA Times
    items'): most pairs share a paragraph or two (a few near-duplicate bands, unrelated
    texts), some share most of theirs (one story, or one article)."""
    latimes = [t.paragraphs[0] for t in capture(LATIMES_MAY) if len(t.body.split()) >= 20]
    pool = [*seed().paragraphs, *latimes[:12]]
    rng = random.Random(7)
    return [
        Text(f"o{i}", f"Headline {i}", tuple(rng.sample(pool, 6)), f"https://o{i}.example/story")
        for i in range(count)
    ]


@pytest.mark.parametrize("batch", [8, 24])
def test_texts_sharing_some_paragraphs_group_the_same_in_batches_as_one_by_one(
    ctx: WorkerContext, db: Any, engine: Engine, batch: int
) -> None:
    """A batch writes together the items none of the earlier ones could be decided
    differently for (unrelated texts sharing a few bands among them): the same articles and
    stories as one by one."""
    from tests.conftest import _clean_database
    from workers.batch import prepare

    texts = overlapping(40)
    sketches = [neardup.sketch(t.body) for t in texts]
    relations = {
        neardup.similarity(a.shingles, b.shingles).relation
        for i, a in enumerate(sketches) for b in sketches[:i]
        if a is not None and b is not None
        and sum(x == y for x, y in zip(a.bands, b.bands, strict=True)) >= 2
    }  # fmt: skip
    assert relations == set(neardup.Relation), "pairs of every kind share bands"
    fid = _feed(db, "http://o.test/rss")
    for text in texts:
        process(ctx, payload(fid, text))
    one_by_one = partition(db, Article.id), partition(db, Article.story_id)
    assert len(one_by_one[0]) < len(texts) and len(one_by_one[1]) < len(one_by_one[0])
    _clean_database(engine)
    fid = _feed(db, "http://o.test/rss")
    jobs = [payload(fid, text) for text in texts]
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        assert prepare(ctx, chunk) >= 1
        assert [process(ctx, job).status for job in chunk].count("error") == 0
        assert not ctx.prepared
    assert (partition(db, Article.id), partition(db, Article.story_id)) == one_by_one


def test_update_events_are_capped_per_day(ctx: WorkerContext, db: Any, clock: Clock) -> None:
    s = seed()
    fid = _feed(db, "http://example.test/rss")
    outcomes = [process(ctx, payload(fid, s, guid="g"))]
    for n in range(1, 6):
        clock.now = T0 + timedelta(hours=n)
        edited = replace(s, title=f"{s.title} (update {n})")
        outcomes.append(process(ctx, payload(fid, edited, guid="g")))
    assert [o.status for o in outcomes] == ["created"] + ["updated"] * 5
    assert [o.reason for o in outcomes[4:]] == ["event_capped", "event_capped"]
    with db() as session:
        (article,) = session.scalars(select(Article)).all()
        types = [e.type for e in session.scalars(select(Event).order_by(Event.id))]
    assert article.title.endswith("(update 5)")
    assert types == ["article.created"] + ["article.updated"] * UPDATE_EVENTS_PER_WINDOW
    # A day after the first update, the window has room again.
    clock.now = T0 + timedelta(hours=25, minutes=1)
    again = process(ctx, payload(fid, replace(s, title="Blinken lands in Israel"), guid="g"))
    assert (again.status, again.reason, again.event_id is not None) == ("updated", None, True)


def test_tracking_parameter_byline_and_case_are_not_news(ctx: WorkerContext, db: Any) -> None:
    s = seed()
    fid = _feed(db, "http://example.test/rss")
    process(ctx, payload(fid, s, guid="g"))
    moved = process(ctx, payload(fid, s, guid="g", url=s.url + "?utm_campaign=x"))
    signed = process(
        ctx, payload(fid, s, guid="g") | {"author": "Tracy Wilkinson", "content_hash": "b" * 64}
    )
    recased = process(ctx, payload(fid, replace(s, title=s.title.upper()), guid="g"))
    assert [o.status for o in (moved, signed, recased)] == ["duplicate"] * 3
    with db() as session:
        assert [e.type for e in session.scalars(select(Event))] == ["article.created"]


def test_changed_text_is_reindexed(ctx: WorkerContext, db: Any) -> None:
    """After its item is rewritten, an article is found by its new text, not its old one."""
    s, concerts = seed(), item(LATIMES_MAY, "concerts-reopening")
    fa, fb, fc = (_feed(db, f"http://{x}.test/rss") for x in "abc")
    first = process(ctx, payload(fa, s, guid="g"))
    process(ctx, payload(fa, replace(concerts, title=s.title), guid="g"))
    copy = process(ctx, payload(fb, sentence_rewritten(concerts, key="c", dateline="LA")))
    fresh = process(ctx, payload(fc, wire(s)))
    assert (copy.status, copy.article_id) == ("duplicate", first.article_id)
    assert fresh.status == "created"


def test_the_band_lookup_probes_the_band_index_with_both_columns(engine: Engine) -> None:
    """The near-duplicate lookup must reach article_bands through its (band, value) index on
    both columns: probing by band alone reads about a 64th of the table per band."""
    from sqlalchemy import text

    from services.core import neardup
    from services.db import bands

    dialect = engine.dialect.name
    sketches = [neardup.Sketch(frozenset(), tuple(range(n, n + 64))) for n in (0, 100)]
    params = {"vals": bands.band_values_param(dialect, sketches)}
    explain = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
    statement = bands._MANY_BAND_HITS[dialect]
    with engine.begin() as conn:
        if dialect == "postgresql":  # a tiny table: make the planner show its index path
            conn.execute(text("SET LOCAL enable_seqscan = off"))
        rows = conn.execute(text(explain + statement.text), params | {"min_hits": 2, "exclude": -1})
        plan = "\n".join(str(row[-1]) for row in rows)
    if dialect == "sqlite":
        assert "ix_article_bands_band_value (band=? AND value=?)" in plan, plan
    else:
        assert "ix_article_bands_band_value" in plan, plan
        assert "band = " in plan and "value = " in plan, plan


def _stored_shingles(db: sessionmaker[Session]) -> dict[int, frozenset[int]]:
    with db() as session:
        rows = session.execute(select(ArticleShingles.article_id, ArticleShingles.ids))
        return {article_id: neardup.unpack(data) for article_id, data in rows}


def test_an_articles_shingles_are_stored_with_its_bands_and_follow_its_text(
    ctx: WorkerContext, db: Any
) -> None:
    """What verification compares is the shingle set of the text stored now: written with the
    article, replaced when its text changes, gone when the new text is too short to index."""
    s, concerts = seed(), item(LATIMES_MAY, "concerts-reopening")
    fa = _feed(db, "http://a.test/rss")
    first = process(ctx, payload(fa, s, guid="g")).article_id
    assert first is not None
    with db() as session:
        stored_text = session.scalars(select(Article.text)).one()
    assert _stored_shingles(db) == {first: neardup.shingles(stored_text)}
    process(ctx, payload(fa, replace(concerts, title=s.title), guid="g"))
    with db() as session:
        new_text = session.scalars(select(Article.text)).one()
    assert new_text != stored_text
    assert _stored_shingles(db) == {first: neardup.shingles(new_text)}
    short = replace(s, paragraphs=(" ".join(s.paragraphs[0].split()[:20]) + ".",))
    assert process(ctx, payload(fa, short, guid="g")).status == "updated"
    assert _stored_shingles(db) == {}


class Statements:
    """The SQL an engine runs while counting."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.seen = engine, []

    def __enter__(self) -> list[str]:
        event.listen(self.engine, "before_cursor_execute", self._note)
        return self.seen

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._note)

    def _note(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.seen.append(statement)


def test_a_candidate_is_verified_from_its_stored_shingles_not_its_text(
    ctx: WorkerContext, db: Any, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A candidate this process has not compared yet (a fresh worker, or one long out of its
    cache) is verified from the shingles stored with its bands, not by reading and
    shingling its text; an article indexed before they were stored is read from its text."""
    s = seed()
    fa, fb, fc = (_feed(db, f"http://{x}.test/rss") for x in "abc")
    first = process(ctx, payload(fa, s)).article_id
    monkeypatch.setattr(bands, "_SHINGLES", bands.ShingleCache(500))  # nothing remembered
    with Statements(engine) as seen:
        copy = process(ctx, payload(fb, wire(s)))
    assert (copy.status, copy.article_id) == ("duplicate", first)
    reads = [x for x in seen if "article_shingles" in x and x.lstrip().upper().startswith("SELECT")]
    assert reads, seen
    assert not [x for x in seen if "articles.text" in x], seen
    # Indexed before revision 0011: no stored shingles; the text is read and shingled.
    with transaction(db) as session:
        session.execute(delete(ArticleShingles))
    monkeypatch.setattr(bands, "_SHINGLES", bands.ShingleCache(500))
    with Statements(engine) as seen:
        again = process(ctx, payload(fc, sentence_rewritten(s, key="c", dateline="LA")))
    assert (again.status, again.article_id) == ("duplicate", first)
    assert [x for x in seen if "articles.text" in x], seen


def test_shingles_stored_for_an_older_text_are_not_compared(
    ctx: WorkerContext, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that changes an article's text and bands but not its stored shingles (code
    older than revision 0011, during a rolling upgrade) leaves a row of the old text: the
    lookup must verify against the current text, not the row."""
    s, concerts = seed(), item(LATIMES_MAY, "concerts-reopening")
    fa, fb = _feed(db, "http://a.test/rss"), _feed(db, "http://b.test/rss")
    first = process(ctx, payload(fa, s)).article_id
    assert first is not None
    with db() as session:
        stale = session.execute(select(ArticleShingles.content_hash, ArticleShingles.ids)).one()
    new_text, new_hash = concerts.body, "f" * 64
    with transaction(db) as session:
        session.execute(
            update(Article).where(Article.id == first).values(text=new_text, content_hash=new_hash)
        )
        bands.index_article(
            session, article_id=first, sketch=neardup.sketch(new_text), content_hash=new_hash
        )
        session.execute(
            update(ArticleShingles).values(content_hash=stale.content_hash, ids=stale.ids)
        )
    monkeypatch.setattr(bands, "_SHINGLES", bands.ShingleCache(500))
    copy = process(ctx, payload(fb, sentence_rewritten(concerts, key="c", dateline="LA")))
    assert (copy.status, copy.article_id) == ("duplicate", first)
