"""The article listing's one-statement pages: feeds and URLs per article, the same on every plan."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.core.search import parse
from services.db import reads
from services.db.engine import reading
from tests.test_api import T0, add_article, add_entity, add_feed


def _walk(db: sessionmaker[Session], **filters: object) -> list[reads.ArticleSummary]:
    """Every article of a listing, two at a time, following the cursor."""
    found: list[reads.ArticleSummary] = []
    cursor = None
    while True:
        with reading(db) as session:
            page = reads.list_articles(session, limit=2, cursor=cursor, **filters)  # type: ignore[arg-type]
        found += page.items
        if not page.more:
            return found
        cursor = (page.items[-1].sort_at, page.items[-1].id)


def test_a_page_carries_each_articles_distinct_sorted_feeds_and_first_url(
    db: sessionmaker[Session],
) -> None:
    feeds = [add_feed(db, f"https://f{i}.test/rss") for i in range(3)]
    seen_thrice = add_article(
        db, "a", T0, urls=["https://x.test/a?1", "https://x.test/a"], feeds=[feeds[2], feeds[0]]
    )
    canonical = add_article(
        db, "b", T0 + timedelta(hours=1), canonical_url="https://x.test/b",
        urls=["https://x.test/b?ref=1"], feeds=[feeds[1]],
    )  # fmt: skip
    unseen = add_article(db, "c", T0 - timedelta(hours=1))

    items = {a.id: a for a in _walk(db)}

    assert list(items) == [canonical, seen_thrice, unseen]  # newest first
    assert items[seen_thrice].feed_ids == (feeds[0], feeds[2])
    assert items[seen_thrice].url == "https://x.test/a?1"  # no canonical URL: the first seen
    assert items[canonical].url == "https://x.test/b"
    assert items[canonical].feed_ids == (feeds[1],)
    assert items[unseen].feed_ids == () and items[unseen].url is None


@pytest.mark.parametrize("few", [0, 10_000])
def test_every_plan_lists_the_same_articles(
    db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch, few: int
) -> None:
    """SQLite picks a plan per filter from a bounded count; each plan gives the same pages."""
    monkeypatch.setattr(reads, "FEW_MATCHES", few)
    reads._probe_statement.cache_clear()
    feed, other = add_feed(db, "https://f.test/rss"), add_feed(db, "https://g.test/rss")
    person = add_entity(db, "Ada Lovelace")
    expected = []
    for i in range(7):
        article = add_article(
            db, f"storm warning {i}" if i % 2 else f"calm day {i}", T0 + timedelta(minutes=i),
            feeds=[feed if i % 3 else other], entities={person: 1} if i != 4 else {},
        )  # fmt: skip
        if i % 2 and i % 3 and i != 4:
            expected.append(article)

    found = _walk(db, entity_ids=[person], feed_id=feed, search=parse("storm"))

    assert [a.id for a in found] == expected[::-1]
    assert _walk(db, entity_ids=[[]]) == []
    reads._probe_statement.cache_clear()
