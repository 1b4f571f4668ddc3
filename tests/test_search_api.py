"""Full-text search on articles (``GET /v1/articles?q=``) on the real database and API."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, inspect, text, update
from sqlalchemy.orm import Session, sessionmaker

from services.core.extract import Extracted
from services.core.search import SearchSyntaxError, parse
from services.db import articles, reads
from services.db.engine import make_engine
from services.db.migrate import downgrade, upgrade
from services.db.models import Article, ArticleEntity, Sighting
from services.db.search import FTS_TABLE, SEARCH_COLUMN, SEARCH_INDEX
from tests.test_api import add_entity, add_feed, get_json, walk

Client = TestClient[web.Request, web.Application]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

TEXTS = {
    "truce": ("Ceasefire talks resume in Cairo",
              "Negotiators met in Cairo on Monday as the ceasefire in Gaza held for a third day."),
    "election": ("Parliament sets the election date",
                 "Elections will be held in spring, the prime minister announced."),
    "markets": ("Stocks rally on rate hopes",
                "Markets rose after the central bank hinted at lower interest rates."),
    "bank": ("West Bank settlers clash with villagers",
             "Clashes in the West Bank left several people injured, officials said."),
    "covid": ("Covid-19 cases fall",
              "New covid-19 infections fell for the fourth week, the ministry said."),
}  # fmt: skip


def extracted(title: str, body: str) -> Extracted:
    return Extracted(
        title=title, text=body, summary=None, url=None, canonical_url=None, published_at=None,
        byline=None, content_hash=hashlib.sha256(f"{title}\n{body}".encode()).hexdigest(),
    )  # fmt: skip


def store(db: sessionmaker[Session], title: str, body: str, at: datetime) -> int:
    with db.begin() as session:
        article_id = articles.insert_article(session, extracted=extracted(title, body), now=at)
    assert article_id is not None
    return article_id


@pytest.fixture
def corpus(db: sessionmaker[Session]) -> dict[str, int]:
    return {
        name: store(db, title, body, T0 + timedelta(hours=i))
        for i, (name, (title, body)) in enumerate(TEXTS.items())
    }


def found(db: sessionmaker[Session], q: str, **filters: object) -> list[int]:
    """Ids the repository finds for ``q``, newest first, across every page."""
    ids: list[int] = []
    cursor = None
    with db() as session:
        while True:
            page = reads.list_articles(
                session,
                limit=2,
                cursor=cursor,
                search=parse(q),
                **filters,  # type: ignore[arg-type]
            )
            ids += [a.id for a in page.items]
            if not page.more:
                return ids
            cursor = (page.items[-1].sort_at, page.items[-1].id)


# The same syntax finds the same articles on both backends (newest first).
SEMANTICS = [
    ("ceasefire", ["truce"]),
    ("CEASEFIRE cairo", ["truce"]),
    ("election", ["election"]),  # stems: "Elections", "election"
    ("elections", ["election"]),
    ("said", ["covid", "bank"]),
    ('"west bank"', ["bank"]),
    ('"bank west"', []),
    ("bank", ["bank", "markets"]),
    ("bank -west", ["markets"]),
    ('bank -"west bank"', ["markets"]),
    ("cairo OR markets", ["markets", "truce"]),
    ("cairo OR markets rate", ["markets"]),
    ("minist*", ["covid", "election"]),
    ('"prime minist"*', ["election"]),
    ("covid-19", ["covid"]),
    ("covid 19", ["covid"]),
    ("nothingmatches", []),
    ("said -injured -infections", []),
]


@pytest.mark.parametrize("few", [reads.FEW_MATCHES, 0], ids=["by_id", "index_walk"])
@pytest.mark.parametrize(("q", "names"), SEMANTICS, ids=[s[0] for s in SEMANTICS])
def test_search_syntax_finds_the_same_articles_on_each_backend(
    db: sessionmaker[Session], corpus: dict[str, int], q: str, names: list[str], few: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(reads, "FEW_MATCHES", few)  # both SQLite plans give the same answer
    assert found(db, q) == [corpus[n] for n in names]


def test_new_changed_and_removed_articles_follow_the_index(
    db: sessionmaker[Session], corpus: dict[str, int]
) -> None:
    added = store(db, "Harvest festival opens", "Farmers brought pumpkins to the square.", T0)
    assert found(db, "pumpkins") == [added]

    with db.begin() as session:
        changed = articles.update_article(
            session, article_id=added, now=T0 + timedelta(days=1),
            extracted=extracted("Harvest festival opens", "Farmers brought turnips instead."),
        )  # fmt: skip
    assert changed["fields"] == ["content_hash", "text"]
    assert found(db, "pumpkins") == []
    assert found(db, "turnips") == [added]
    assert found(db, "harvest") == [added]

    with db.begin() as session:  # a title change alone is searchable too
        session.execute(update(Article).where(Article.id == added).values(title="Gourd fair"))
    assert found(db, "harvest") == [] and found(db, "gourd turnips") == [added]

    # Reprocessing merges a copy into the older article: the copy's row is gone.
    with db.begin() as session:
        articles.merge_article(
            session, loser=corpus["markets"], winner=corpus["truce"], reason="near_duplicate",
            now=T0 + timedelta(days=2),
        )  # fmt: skip
    assert found(db, "markets") == []
    assert found(db, "cairo") == [corpus["truce"]]

    with db.begin() as session:
        session.execute(delete(Article).where(Article.id == corpus["bank"]))
    assert found(db, "bank") == []
    assert found(db, "said") == [corpus["covid"]]


async def test_q_combines_with_entity_and_feed_filters_and_pages_newest_first(
    client: Client, db: sessionmaker[Session], corpus: dict[str, int]
) -> None:
    feed = add_feed(db, "https://news.test/rss")
    person = add_entity(db, "Jane Doe")
    more = [store(db, f"Ceasefire update {i}", "The ceasefire holds.", T0 + timedelta(days=i))
            for i in range(1, 6)]  # fmt: skip
    with db.begin() as session:
        for article_id in (corpus["truce"], more[0], more[2], more[4]):
            session.add(Sighting(
                feed_id=feed, item_key=str(article_id), item_key_hash=str(article_id),
                article_id=article_id, content_hash="c",
            ))  # fmt: skip
        for article_id in (more[1], more[2], more[4], corpus["bank"]):
            session.add(ArticleEntity(article_id=article_id, entity_id=person, mentions=1,
                                      first_offset=0))  # fmt: skip

    every = await walk(client, "/v1/articles?q=ceasefire&limit=2")
    assert [a["id"] for a in every] == [*reversed(more), corpus["truce"]]
    in_feed = await walk(client, f"/v1/articles?q=ceasefire&feed={feed}&limit=1")
    assert [a["id"] for a in in_feed] == [more[4], more[2], more[0], corpus["truce"]]
    both = await walk(client, f"/v1/articles?q=ceasefire&feed={feed}&entity={person}&limit=1")
    assert [a["id"] for a in both] == [more[4], more[2]]
    named = await get_json(client, "/v1/articles?q=ceasefire%20OR%20clashes&entity=Jane%20Doe")
    assert [a["id"] for a in named["data"]] == [more[4], more[2], more[1], corpus["bank"]]

    page = await get_json(client, "/v1/articles?q=ceasefire&limit=3")
    assert page["next"] is not None and "q=ceasefire" in page["next"]


@pytest.mark.parametrize(
    ("q", "fragment"),
    [
        ("", "no word"),
        ('"open', "unbalanced"),
        ("OR gaza", "between two terms"),
        ("-gaza", "at least one term"),
        ("ab*", "prefix"),
        (" ".join(["w"] * 17), "at most 16"),
        ("x" * 257, "longer than 256"),
    ],
)
async def test_invalid_q_is_a_400_naming_q(client: Client, q: str, fragment: str) -> None:
    resp = await client.get("/v1/articles", params={"q": q})
    body = await resp.json(content_type=None)
    assert resp.status == 400 and resp.content_type == "application/problem+json"
    assert body["type"] == "urn:newsdesk:problem:invalid"
    assert body["param"] == "q" and fragment in body["detail"]


async def test_q_with_nul_and_repeated_q_are_refused(client: Client) -> None:
    nul = await client.get("/v1/articles?q=a%00b")
    assert nul.status == 400 and (await nul.json(content_type=None))["param"] == "q"
    twice = await client.get("/v1/articles?q=a&q=b")
    assert twice.status == 400 and (await twice.json(content_type=None))["param"] == "q"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.text(max_size=120),
        st.text(alphabet=st.sampled_from("ab19é \"-*()&|!:<>'^.OR\\"), max_size=40),
    )
)
def test_any_q_runs_on_the_database_or_is_refused_as_syntax(
    db: sessionmaker[Session], corpus: dict[str, int], q: str
) -> None:
    try:
        query = parse(q)
    except SearchSyntaxError:
        return
    with db() as session:
        reads.list_articles(session, limit=5, search=query)


def test_search_structures_exist(engine: Engine) -> None:
    insp = inspect(engine)
    if engine.dialect.name == "sqlite":
        assert FTS_TABLE in insp.get_table_names()
        with engine.connect() as conn:
            names = conn.scalars(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            triggers = set(names)
        assert {f"{FTS_TABLE}_insert", f"{FTS_TABLE}_update", f"{FTS_TABLE}_delete"} <= triggers
    else:
        assert SEARCH_COLUMN in {c["name"] for c in insp.get_columns("articles")}
        assert SEARCH_INDEX in {i["name"] for i in insp.get_indexes("articles")}


def test_sqlite_migration_indexes_existing_articles_and_downgrades(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    try:
        upgrade(engine, "0009")
        factory = sessionmaker(engine)
        before = store(factory, "Old news about glaciers", "Ice melts.", T0)
        upgrade(engine)
        assert found(factory, "glaciers") == [before]
        downgrade(engine, "0009")
        assert FTS_TABLE not in inspect(engine).get_table_names()
        upgrade(engine)
        assert found(factory, "glaciers ice") == [before]
    finally:
        engine.dispose()
