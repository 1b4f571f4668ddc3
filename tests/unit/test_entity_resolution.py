"""Cross-article resolution rules (pure): canonical identity, aliases and fallbacks."""

from __future__ import annotations

import pytest

from services.core.entities import ArticleEntity, entity_key
from services.core.entity_resolution import (
    org_canonical,
    qualifier_fits,
    reference_keys,
    resolve,
)
from services.core.gazetteer import default_gazetteer

GAZ = default_gazetteer()


def found(name: str, type: str) -> ArticleEntity:
    return ArticleEntity(name, type, entity_key(name), 1, 0, (name,))


@pytest.mark.parametrize(
    ("name", "type"),
    [("U.S.", "place"), ("US", "place"), ("United States", "place"), ("America", "place"),
     ("United States of America", "place"), ("U.S.", "organization"), ("States", "place")],
)  # fmt: skip
def test_every_spelling_of_a_country_is_the_place(name: str, type: str) -> None:
    res = resolve(found(name, type), GAZ)
    assert (res.type, res.key, res.name) == ("place", "united states", "United States")
    assert entity_key(name) in res.lookup_keys and res.lookup_keys[0] == "united states"


def test_a_demonym_or_a_person_is_no_country() -> None:
    assert resolve(found("American", "group"), GAZ).key == "american"
    jordan = resolve(found("Jordan", "person"), GAZ)
    assert (jordan.type, jordan.name) == ("person", "Jordan")


@pytest.mark.parametrize(
    ("name", "canonical"),
    [("Department of State", "State Department"), ("State Department", "State Department"),
     ("Department of the Treasury", "Treasury Department"),
     ("Ministry of Defence", "Defence Ministry"),
     ("Department of Health and Human Services", "Health and Human Services Department"),
     ("Los Angeles Department of Water and Power", "Los Angeles Department of Water and Power")],
)  # fmt: skip
def test_department_of_x_is_x_department(name: str, canonical: str) -> None:
    assert org_canonical(name) == canonical
    assert resolve(found(name, "organization"), GAZ).key == entity_key(canonical)


def test_a_country_qualified_organisation_falls_back_to_the_rest() -> None:
    res = resolve(found("U.S. State Department", "organization"), GAZ)
    assert (res.key, res.fallback, res.qualifier) == (
        "united states state department",
        ("state department",),
        "US",
    )
    res = resolve(found("U.S. Department of State", "organization"), GAZ)
    assert res.key == "united states state department"
    assert res.fallback == ("state department", "department of state")


@pytest.mark.parametrize("name", ["U.S. Postal Service", "United States Postal Service"])
def test_a_country_qualifier_is_keyed_by_the_country(name: str) -> None:
    res = resolve(found(name, "organization"), GAZ)
    assert (res.key, res.name) == ("united states postal service", name)


def test_no_fallback_to_a_one_word_rest_or_for_other_types() -> None:
    assert resolve(found("U.S. Army", "organization"), GAZ).fallback == ()
    assert resolve(found("US Open Championship", "event"), GAZ).fallback == ()


def test_people_keep_their_full_name_only() -> None:
    res = resolve(found("Joe Biden", "person"), GAZ)
    assert (res.key, [a.key for a in res.aliases], res.fallback) == ("joe biden", ["joe biden"], ())
    assert resolve(found("Biden", "person"), GAZ).key == "biden"


def test_qualifier_fits_only_one_country() -> None:
    assert qualifier_fits("US", ["Supreme Court", "U.S. Supreme Court"], GAZ)
    assert not qualifier_fits("PK", ["Supreme Court", "U.S. Supreme Court"], GAZ)
    assert qualifier_fits("PK", ["Supreme Court"], GAZ)


@pytest.mark.parametrize(
    ("ref", "keys"),
    [("America", ["america", "united states"]), ("U.S.", ["us", "united states"]),
     ("Department of State", ["department of state", "state department"]),
     ("Joe Biden", ["joe biden"]), ("  ", [])],
)  # fmt: skip
def test_reference_keys(ref: str, keys: list[str]) -> None:
    assert reference_keys(ref, GAZ) == keys
