"""Entities across articles on real SQL with the real model: aliases, recall, exact counts.

Sentences are real (the seed article, LA Times, NYT and BBC captures) unless marked
"constructed": the captures hold no "U.S. State Department" or "Department of State".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, sessionmaker

from services.core.entities import ArticleEntity as Found
from services.core.entities import canonicalise, entity_key
from services.core.entity_recall import KnownName
from services.db.engine import transaction
from services.db.entities import StoredEntity, store_entities
from services.db.entity_names import known_names
from services.db.models import Article, ArticleEntity, Entity, EntityAlias
from tests.conftest import REPO

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SEED = REPO / "seeds" / "000_a39bf01833f5003a.txt"
Db = sessionmaker[Session]

US_SENTENCES = [
    # seed article
    "That means the U.S. must rely on third countries such as Egypt and Qatar to relay "
    "messages to Hamas.",
    # LA Times, latimes__20200718T195240Z.xml (trump-administration-rescinds-rule...)
    "The administration drops a rule that would have made international students transfer "
    "schools or leave the U.S. if their college classes were online.",
    # NYT, nytimes__20200530T012822Z.xml (virus-who)
    "America’s decades-long relationship with the organization has been instrumental in "
    "improving health around the world.",
    # BBC, bbc__20200602T094259Z.xml (uk-52871690)
    "Black British people react to the African-American's death, and the ongoing racial "
    "tensions in the US and UK.",
    # LA Times capture (photo caption)
    "Orlando Moncada came to the United States from Peru and started as a porter.",
    # constructed
    "Delegates of the United States of America arrived in Geneva on Monday.",
]
STATE_SENTENCES = [
    # seed article
    "Blinken’s primary goal will be to shore up the cease-fire, according to a senior State "
    "Department official.",
    # NYT, nytimes__20200516T225303Z.xml (media:description)
    "Steve A. Linick was removed as State Department inspector general on Friday night.",
    # constructed
    "Officials at the U.S. State Department declined to comment on Tuesday.",
    "The Department of State issued a travel advisory for Mexico.",
    "A spokesman for the State Department said the embassy would stay open.",
]


@pytest.fixture
def nlp(recogniser: Any) -> Iterator[Any]:
    """The session's recogniser, with no names learned before or after the test."""
    recogniser.refresh_known(())
    yield recogniser
    recogniser.refresh_known(())


def new_article(db: Db, title: str, when: datetime = T0) -> int:
    with transaction(db) as s:
        row = Article(
            title=title, sort_at=when, published_at=when, text=title,
            content_hash=hashlib.sha256(title.encode()).hexdigest(),
        )  # fmt: skip
        s.add(row)
        s.flush()
        return row.id


def found_in(nlp: Any, text: str) -> list[Found]:
    return canonicalise(text, nlp.recognise(text))


def store(db: Db, article_id: int, found: list[Found], now: datetime = T0) -> list[StoredEntity]:
    with transaction(db) as s:
        return store_entities(s, article_id=article_id, found=found, now=now)


def store_text(db: Db, nlp: Any, text: str, now: datetime = T0) -> list[StoredEntity]:
    return store(db, new_article(db, text, now), found_in(nlp, text), now)


def by_name(stored: list[StoredEntity]) -> dict[str, StoredEntity]:
    return {e.name: e for e in stored}


def aliases(db: Db, entity_id: int) -> set[str]:
    with db() as s:
        return set(s.scalars(select(EntityAlias.alias).where(EntityAlias.entity_id == entity_id)))


def counts(db: Db) -> dict[str, int]:
    with db() as s:
        return {name: n for name, n in s.execute(select(Entity.name, Entity.article_count))}


def links(db: Db, article_id: int) -> dict[str, int]:
    with db() as s:
        rows = s.execute(
            select(Entity.name, ArticleEntity.mentions)
            .join(ArticleEntity, ArticleEntity.entity_id == Entity.id)
            .where(ArticleEntity.article_id == article_id)
        )
        return {name: mentions for name, mentions in rows}


def seen(name: str, type: str, mentions: int = 1) -> Found:
    return Found(name, type, entity_key(name), mentions, 0, (name,))


# --- resolution ----------------------------------------------------------------------------


@pytest.mark.parametrize("sentence", US_SENTENCES)
def test_each_spelling_of_the_united_states_resolves_to_it(db: Db, nlp: Any, sentence: str) -> None:
    stored = by_name(store_text(db, nlp, sentence))
    assert stored["United States"].type == "place"


def test_country_spellings_give_one_entity_with_every_alias(db: Db, nlp: Any) -> None:
    ids = {by_name(store_text(db, nlp, s))["United States"].id for s in US_SENTENCES}

    assert len(ids) == 1
    (us,) = ids
    # "U.S." and "US" share one key ("us"): the alias keeps the spelling seen first.
    assert {entity_key(a) for a in aliases(db, us)} == {
        "us", "america", "united states", "united states of america"
    }  # fmt: skip
    assert counts(db)["United States"] == len(US_SENTENCES)


def test_state_department_variants_are_one_entity(db: Db, nlp: Any) -> None:
    ids = set()
    for sentence in STATE_SENTENCES:
        orgs = [e for e in store_text(db, nlp, sentence) if e.type == "organization"]
        assert len(orgs) == 1, (sentence, orgs)
        ids.add(orgs[0].id)

    assert len(ids) == 1
    assert {"State Department", "U.S. State Department", "Department of State"} <= aliases(
        db, ids.pop()
    )


def test_the_seed_article(db: Db, nlp: Any) -> None:
    from services.core.plaintext import parse_plaintext

    article = parse_plaintext(SEED.read_text(encoding="utf-8"))
    stored = {(e.name, e.type) for e in store_text(db, nlp, f"{article.title}\n\n{article.body}")}

    assert {
        ("Antony J. Blinken", "person"), ("Biden", "person"), ("United States", "place"),
        ("State Department", "organization"), ("Hamas", "organization"), ("Egypt", "place"),
        ("Palestinian Authority", "organization"),
    } <= stored  # fmt: skip
    assert not [n for n, _ in stored if n in {"U.S.", "Blinken", "State"}]


def test_a_bare_surname_is_never_linked_across_articles(db: Db, nlp: Any) -> None:
    first = by_name(store_text(db, nlp, "Joe Biden met aides. Biden said."))
    second = by_name(store_text(db, nlp, "Biden said the talks would continue."))
    third = by_name(store_text(db, nlp, "Joe Biden spoke in Ohio on Monday."))

    assert set(first) == {"Joe Biden"} and first["Joe Biden"].type == "person"
    assert third["Joe Biden"].id == first["Joe Biden"].id
    assert second["Biden"].id != first["Joe Biden"].id
    assert aliases(db, first["Joe Biden"].id) == {"Joe Biden"}
    assert counts(db)["Joe Biden"] == 2 and counts(db)["Biden"] == 1


def test_a_country_qualifier_joins_a_known_organisation_of_that_country_only(db: Db) -> None:
    court = store(db, new_article(db, "a"), [seen("Supreme Court", "organization")])[0]
    us = store(db, new_article(db, "b"), [seen("U.S. Supreme Court", "organization")])[0]
    pk = store(db, new_article(db, "c"), [seen("Pakistan Supreme Court", "organization")])[0]
    army = store(db, new_article(db, "d"), [seen("U.S. Army", "organization")])[0]
    store(db, new_article(db, "e"), [seen("Army", "organization")])

    assert us.id == court.id and pk.id != court.id
    assert aliases(db, court.id) == {"Supreme Court", "U.S. Supreme Court"}
    assert counts(db)["Army"] == 1 and army.name == "U.S. Army"  # one word: no fallback


def test_entities_stored_before_aliases_existed_are_found_by_key(db: Db) -> None:
    with transaction(db) as s:
        old = Entity(type="place", key="united states", name="United States", aliases=[],
                     article_count=0, first_seen_at=T0, last_seen_at=T0)  # fmt: skip
        s.add(old)
        s.flush()
        old_id = old.id

    stored = store(db, new_article(db, "a"), [seen("U.S.", "place")])

    assert [e.id for e in stored] == [old_id]


# --- exact counts --------------------------------------------------------------------------


def test_counts_stay_exact_when_an_articles_entities_change(db: Db) -> None:
    one, two = new_article(db, "one"), new_article(db, "two")
    store(db, one, [seen("Egypt", "place"), seen("U.S.", "place", 2)])
    store(db, two, [seen("Egypt", "place")])
    assert counts(db) == {"Egypt": 2, "United States": 1}

    store(db, one, [seen("Qatar", "place"), seen("America", "place")], T0 + timedelta(hours=1))
    assert counts(db) == {"Egypt": 1, "United States": 1, "Qatar": 1}
    assert links(db, one) == {"Qatar": 1, "United States": 1}

    store(db, one, [seen("Qatar", "place"), seen("America", "place")])  # again: no change
    store(db, two, [])
    assert counts(db) == {"Egypt": 0, "United States": 1, "Qatar": 1}


def test_two_spellings_in_one_article_are_one_link(db: Db) -> None:
    article = new_article(db, "a")
    stored = store(db, article, [seen("U.S.", "place", 3), seen("United States", "place", 2)])

    assert [e.name for e in stored] == ["United States"]
    assert links(db, article) == {"United States": 5}
    assert counts(db) == {"United States": 1}


# --- recall from knowledge -----------------------------------------------------------------


def test_an_all_caps_headline_names_a_known_entity(db: Db, nlp: Any) -> None:
    headline = "STATE DEPARTMENT WARNS TRAVELERS ABOUT MEXICO\n\nThe advisory covers five states."
    assert "STATE DEPARTMENT" not in [m.text for m in nlp.recognise(headline)]
    ids = {e.id for s in STATE_SENTENCES[:2] for e in store_text(db, nlp, s)}
    with db() as s:
        nlp.refresh_known(known_names(s, limit=100))

    stored = by_name(store_text(db, nlp, headline))

    assert stored["State Department"].id in ids
    assert stored["Mexico"].type == "place"


def test_a_common_word_equal_to_a_known_name_is_not_tagged(db: Db, nlp: Any) -> None:
    for i in range(5):
        store(
            db, new_article(db, f"may{i}"), [seen("May", "person"), seen("Theresa May", "person")]
        )
    with db() as s:
        known = known_names(s, limit=100)
    assert {KnownName("May", "person"), KnownName("Theresa May", "person")} <= set(known)
    nlp.refresh_known(known)

    month = [
        m for m in nlp.recognise("May brings warmer weather to the coast.") if m.label == "PERSON"
    ]
    headline = found_in(nlp, "THERESA MAY RESIGNS AS PRIME MINISTER\n\nShe will stay on.")

    assert month == []
    assert [(e.name, e.type) for e in headline] == [("THERESA MAY", "person")]


def test_known_names_need_evidence(db: Db) -> None:
    for i in range(4):
        found = [seen("Hamas", "organization"), seen("Joe Biden", "person")]
        store(db, new_article(db, f"a{i}"), found)
    store(db, new_article(db, "b"), [seen("Antony Blinken", "person")])
    with db() as s:
        # Hamas: one word in four articles; Antony Blinken: one article.
        assert {k.text for k in known_names(s, limit=100)} == {"Joe Biden"}
    store(db, new_article(db, "c"), [seen("Hamas", "organization")])
    with db() as s:
        assert {k.text for k in known_names(s, limit=100)} == {"Joe Biden", "Hamas"}
        assert known_names(s, limit=0) == []


def test_entity_aliases_are_unique_per_type_and_key(engine: Any) -> None:
    uniques = {
        tuple(u["column_names"]) for u in inspect(engine).get_unique_constraints("entity_aliases")
    }
    assert ("type", "key") in uniques


def _entity_snapshot(db: Db) -> dict[str, Any]:
    with db() as s:
        return {
            "entities": sorted(s.execute(select(Entity.type, Entity.key, Entity.name,
                                                Entity.article_count)).all()),
            "aliases": sorted(s.execute(
                select(EntityAlias.type, EntityAlias.key, EntityAlias.alias, Entity.key)
                .join(Entity, Entity.id == EntityAlias.entity_id)).all()),
            "links": sorted(s.execute(
                select(Article.title, Entity.key, ArticleEntity.mentions,
                       ArticleEntity.first_offset)
                .join(ArticleEntity, ArticleEntity.article_id == Article.id)
                .join(Entity, Entity.id == ArticleEntity.entity_id)).all()),
        }  # fmt: skip


def test_new_articles_stored_together_get_what_one_by_one_gives(db: Db, nlp: Any) -> None:
    """A worker's batch stores its new articles' entities together (one lookup, one links
    statement): the same entities, aliases, links and counts as article by article, where
    later articles meet entities and aliases the earlier ones created."""
    from services.db.entities import store_new_entities

    texts = [*US_SENTENCES, *STATE_SENTENCES, *US_SENTENCES[:2]]
    found = [found_in(nlp, t) for t in texts]
    titles = [f"{n}. {t}" for n, t in enumerate(texts)]  # the last two repeat earlier texts
    one_by_one = [[(e.name, e.type) for e in store(db, new_article(db, t), f)]
                  for t, f in zip(titles, found, strict=True)]  # fmt: skip
    expected = _entity_snapshot(db)
    with transaction(db) as s:
        for model in (ArticleEntity, EntityAlias, Entity, Article):
            s.query(model).delete()
    ids = [new_article(db, t) for t in titles]
    with transaction(db) as s:
        together = store_new_entities(s, list(zip(ids, found, strict=True)), now=T0)
    assert [[(e.name, e.type) for e in stored] for stored in together] == one_by_one
    assert _entity_snapshot(db) == expected
    us = by_name(together[0])["United States"]
    assert len(us_articles := [t for t in together if us in t]) >= 5, us_articles
