"""A worker batch's writes on real SQL: one statement for many rows, each row back where it
belongs.

SQLite has no way to tie new rowids to the parameter sets of a multi-row INSERT, so
SQLAlchemy, asked for RETURNING in parameter order, inserts row by row. The batch's inserts
return a column unique among their rows instead (an article's text hash, a story's first
article, an event's article, an entity's type and key) and map the ids back by it: these
tests hold the mapping, and the statement counts, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.core.entities import ArticleEntity as Found
from services.core.entities import entity_key
from services.core.extract import Extracted
from services.db import articles, events, stories
from services.db.engine import transaction
from services.db.entities import store_new_entities
from services.db.models import Article, Entity, Event, Story

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
Db = sessionmaker[Session]


def extracted(n: int) -> Extracted:
    title, body = f"Headline {n}", f"Body of article number {n}, with its own words."
    return Extracted(
        title=title, text=body, summary=None, url=None, canonical_url=None, published_at=None,
        byline=None, content_hash=hashlib.sha256(f"{title}\n{body}".encode()).hexdigest(),
    )  # fmt: skip


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement sent while in the block (an executemany counts once)."""
    seen: list[str] = []

    def note(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def starting(seen: list[str], prefix: str) -> int:
    return sum(1 for s in seen if s.startswith(prefix))


def new_articles(db: Db, count: int, *, first: int = 0) -> list[int]:
    with transaction(db) as s:
        return articles.insert_articles(
            s, [extracted(n) for n in range(first, first + count)], now=T0
        )


def test_articles_inserted_together_get_their_own_ids_in_one_statement(
    db: Db, engine: Engine
) -> None:
    texts = [extracted(n) for n in range(7)]
    with statements(engine) as seen, transaction(db) as s:
        ids = articles.insert_articles(s, texts, now=T0)
    assert starting(seen, "INSERT INTO articles") == 1, seen
    assert len(set(ids)) == 7
    assert ids == sorted(ids)  # numbered in the order given
    with db() as s:
        stored = dict(s.execute(select(Article.id, Article.content_hash)).tuples().all())
    assert [stored[i] for i in ids] == [t.content_hash for t in texts]


def test_stories_started_together_each_hold_their_own_article(db: Db, engine: Engine) -> None:
    ids = new_articles(db, 6)
    order = [ids[3], ids[0], ids[5], ids[1], ids[4], ids[2]]  # not the insertion order
    with statements(engine) as seen, transaction(db) as s:
        story_ids = stories.start_stories(s, order, now=T0)
    assert starting(seen, "INSERT INTO stories") == 1, seen
    assert starting(seen, "UPDATE articles") == 1, seen
    assert len(set(story_ids)) == 6
    with db() as s:
        first = dict(s.execute(select(Story.id, Story.first_article_id)).tuples().all())
        story_of = dict(s.execute(select(Article.id, Article.story_id)).tuples().all())
        counts = set(s.scalars(select(Story.article_count)))
    assert [first[story] for story in story_ids] == order
    assert [story_of[a] for a in order] == story_ids
    assert counts == {1}


def test_articles_joining_stories_together_land_as_one_by_one(db: Db, engine: Engine) -> None:
    """Three articles join two stories and one more the story of an article that has none
    yet (started for it, as one by one): five statements (two of them start that story),
    the same rows as one by one."""
    stored = new_articles(db, 3)
    with transaction(db) as s:
        a_story, b_story = stories.start_stories(s, stored[:2], now=T0)
    joining = new_articles(db, 4, first=10)
    pairs = [
        (joining[0], stored[1]),
        (joining[1], stored[0]),
        (joining[2], stored[2]),  # its story is started here
        (joining[3], stored[1]),
    ]

    def rows() -> tuple[dict[int, int | None], dict[int, int]]:
        with db() as s:
            story_of = dict(s.execute(select(Article.id, Article.story_id)).tuples().all())
            counts = dict(s.execute(select(Story.id, Story.article_count)).tuples().all())
        return story_of, counts

    with statements(engine) as seen, transaction(db) as s:
        joined = stories.join_stories(s, pairs, now=T0)
    sent = [statement for statement in seen if not statement.startswith("BEGIN")]
    assert len(sent) == 5, sent
    together = rows()
    c_story = together[0][stored[2]]
    assert c_story is not None and c_story not in (a_story, b_story)
    assert joined == [b_story, a_story, c_story, b_story]
    assert together[1] == {a_story: 2, b_story: 3, c_story: 2}
    with transaction(db) as s:  # undo, then one by one
        s.execute(
            update(Article).where(Article.id.in_([*joining, stored[2]])).values(story_id=None)
        )
        s.execute(delete(Story).where(Story.id == c_story))
        s.execute(update(Story).values(article_count=1))
        one_by_one = [stories.join_story(s, article_id=a, like=b, now=T0) for a, b in pairs]
    assert one_by_one[:2] + one_by_one[3:] == joined[:2] + joined[3:]
    again = rows()
    renumbered = {one_by_one[2]: c_story}
    assert {a: renumbered.get(st, st) for a, st in again[0].items()} == together[0]
    assert {renumbered.get(st, st): n for st, n in again[1].items()} == together[1]


def test_no_stories_to_start_sends_nothing(db: Db, engine: Engine) -> None:
    with statements(engine) as seen, transaction(db) as s:
        assert stories.start_stories(s, [], now=T0) == []
    assert not [q for q in seen if q.startswith(("INSERT", "UPDATE"))]


def test_events_of_distinct_articles_take_ids_in_the_order_given(db: Db, engine: Engine) -> None:
    ids = new_articles(db, 5)
    order = [ids[2], ids[4], ids[0], ids[3], ids[1]]
    rows = [(a, None, {"n": n}) for n, a in enumerate(order)]
    with statements(engine) as seen, transaction(db) as s:
        event_ids = events.add_events(s, "article.created", rows, now=T0)
    assert starting(seen, "INSERT INTO events") == 1, seen
    assert event_ids == sorted(event_ids) and len(set(event_ids)) == 5
    with db() as s:
        stored = {e.id: (e.article_id, e.payload["n"]) for e in s.scalars(select(Event))}
    assert [stored[i] for i in event_ids] == [(a, n) for n, a in enumerate(order)]


def test_events_sharing_an_article_keep_the_order_given(db: Db) -> None:
    (article,) = new_articles(db, 1)
    rows = [(article, None, {"n": 0}), (None, None, {"n": 1}), (article, None, {"n": 2})]
    with transaction(db) as s:
        event_ids = events.add_events(s, "article.updated", rows, now=T0)
    assert event_ids == sorted(event_ids)
    with db() as s:
        stored = {e.id: (e.article_id, e.payload["n"]) for e in s.scalars(select(Event))}
    assert [stored[i] for i in event_ids] == [(article, 0), (None, 1), (article, 2)]


def seen_as(name: str, type_: str, offset: int) -> Found:
    return Found(name, type_, entity_key(name), 1, offset, (name,))


def test_new_entities_of_articles_stored_together_go_in_one_statement(
    db: Db, engine: Engine
) -> None:
    """The articles' new entities are inserted together, their aliases together, and
    every link points at the entity of its own name; a later article
    reaches an entity an earlier one created, by name, before either is stored."""
    first, second = new_articles(db, 2)
    names = [("Amelia Earhart", "person"), ("Acme Widgets", "org"), ("Zanzibar", "place"),
             ("Boris Pasternak", "person"), ("Mount Hood", "place")]  # fmt: skip
    found = [seen_as(name, type_, 10 * n) for n, (name, type_) in enumerate(names)]
    again = [seen_as("Acme Widgets", "org", 0), seen_as("Clara Schumann", "person", 40)]
    with statements(engine) as seen, transaction(db) as s:
        stored = store_new_entities(s, [(first, found), (second, again)], now=T0)
    assert starting(seen, "INSERT INTO entities") == 1, seen
    assert starting(seen, "INSERT INTO entity_aliases") <= 1, seen
    assert starting(seen, "UPDATE entities") == 2, seen  # one per distinct increment
    assert [(e.name, e.type) for e in stored[0]] == names
    with db() as s:
        by_id = {e.id: (e.name, e.type, e.article_count) for e in s.scalars(select(Entity))}
    assert len(by_id) == 6
    assert [by_id[e.id][:2] for e in stored[0]] == names
    acme = stored[0][1].id
    assert stored[1][0].id == acme and by_id[acme][2] == 2
    assert by_id[stored[1][1].id] == ("Clara Schumann", "person", 1)
