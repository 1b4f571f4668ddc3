"""The real spaCy model plus canonicalisation on the seed article gives the expected entities."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from services.core.entities import ArticleEntity, canonicalise, entity_key
from services.core.errors import ExtractError
from services.core.plaintext import parse_plaintext
from workers.nlp import PIPE_BATCH_SIZE, Recogniser, load_model, pipe_groups

if TYPE_CHECKING:
    from spacy.language import Language

SEED = Path(__file__).resolve().parents[1] / "seeds" / "000_a39bf01833f5003a.txt"


@pytest.fixture(scope="module")
def nlp() -> Language:
    return load_model()


@pytest.fixture(scope="module")
def recogniser(nlp: Language) -> Recogniser:
    return Recogniser(nlp)


@pytest.fixture(scope="module")
def entities(recogniser: Recogniser) -> list[ArticleEntity]:
    article = parse_plaintext(SEED.read_text(encoding="utf-8"))
    text = f"{article.title}\n\n{article.body}"
    return canonicalise(text, recogniser.recognise(text))


def names(entities: list[ArticleEntity], entity_type: str) -> set[str]:
    return {e.name for e in entities if e.type == entity_type}


def test_model_keeps_only_ner(nlp: Language) -> None:
    assert nlp.pipe_names == ["ner"]


def test_persons(entities: list[ArticleEntity]) -> None:
    assert {"Antony J. Blinken", "Biden"} <= names(entities, "person")


def test_places(entities: list[ArticleEntity]) -> None:
    assert {"Israel", "Gaza", "Egypt", "Jordan"} <= names(entities, "place")


def test_organizations(entities: list[ArticleEntity]) -> None:
    organizations = names(entities, "organization")
    assert {"Hamas", "State Department"} <= organizations
    assert "State" not in organizations


def test_no_credit_entity(entities: list[ArticleEntity]) -> None:
    assert not [e for e in entities if "Pool Photo" in e.name or "Saul Loeb" in e.name]


def test_blinken_is_one_person_not_a_place(entities: list[ArticleEntity]) -> None:
    blinken = [e for e in entities if "Blinken" in e.name]
    assert [(e.name, e.type) for e in blinken] == [("Antony J. Blinken", "person")]
    assert set(blinken[0].surface_forms) == {"Blinken", "Antony J. Blinken"}


@pytest.mark.parametrize("absent", ["May 23, 2021", "11 days", "two", "last week", "Sunday"])
def test_no_dates_or_numbers(entities: list[ArticleEntity], absent: str) -> None:
    assert entity_key(absent) not in {e.key for e in entities}


def test_identity_unique_and_sorted(entities: list[ArticleEntity]) -> None:
    assert len({(e.type, e.key) for e in entities}) == len(entities)
    assert entities == sorted(entities, key=lambda e: (-e.mentions, e.name))


def test_recognise_many_matches_recognise(recogniser: Recogniser) -> None:
    texts = ["Antony Blinken visited Egypt.", "", "Hamas runs Gaza."]
    assert recogniser.recognise_many(texts) == [recogniser.recognise(t) for t in texts]


def test_texts_are_piped_in_groups_bounded_by_characters_and_count() -> None:
    texts = ["a" * 40, "b" * 40, "c" * 30, "d" * 200, "e" * 10, *["f"] * (PIPE_BATCH_SIZE + 1)]
    groups = pipe_groups(texts, 100)
    assert [t for g in groups for t in g] == texts  # every text once, in order
    assert groups[:4] == [["a" * 40, "b" * 40], ["c" * 30], ["d" * 200], ["e" * 10, *["f"] * 31]]
    assert groups[4:] == [["f", "f"]]
    assert all(len(g) <= PIPE_BATCH_SIZE for g in groups)
    assert all(sum(map(len, g)) <= 100 or len(g) == 1 for g in groups)


def test_grouped_piping_finds_what_one_text_at_a_time_finds(nlp: Language) -> None:
    seed = SEED.read_text(encoding="utf-8")
    texts = [seed, "Antony Blinken visited Egypt.", seed[:2_000], "", "Hamas runs Gaza.", seed]
    grouped = Recogniser(nlp, pipe_chars=len(seed) + 100)  # three calls, the last text alone
    assert [len(g) for g in pipe_groups(texts, len(seed) + 100)] == [2, 3, 1]
    assert grouped.recognise_many(texts) == [grouped.recognise(t) for t in texts]


def test_huge_input_is_truncated(nlp: Language) -> None:
    small = Recogniser(nlp, max_chars=1_000)
    text = "Blinken visited Egypt. " * 5_000
    assert max(m.end for m in small.recognise(text)) <= 1_000


def test_missing_model_is_an_extract_error() -> None:
    with pytest.raises(ExtractError) as info:
        load_model("no_such_model_package_xyz")
    assert info.value.code == "model_missing"


@pytest.mark.parametrize("limits", [{"max_chars": 0}, {"pipe_chars": 0}, {"pipe_chars": -5}])
def test_limits_must_be_positive(nlp: Language, limits: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        Recogniser(nlp, **limits)
