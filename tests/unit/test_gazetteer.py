"""The country gazetteer: safe spellings only, one country per spelling."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.core.gazetteer import Country, Gazetteer, build, default_gazetteer

GAZ = default_gazetteer()


@pytest.mark.parametrize(
    ("name", "country"),
    [
        ("United States", "United States"), ("United States of America", "United States"),
        ("U.S.", "United States"), ("US", "United States"), ("U.S.A.", "United States"),
        ("USA", "United States"), ("America", "United States"), ("the States", "United States"),
        ("Britain", "United Kingdom"), ("Great Britain", "United Kingdom"),
        ("UK", "United Kingdom"), ("U.K.", "United Kingdom"), ("UAE", "United Arab Emirates"),
        ("Russian Federation", "Russia"), ("Russia", "Russia"), ("Viet Nam", "Vietnam"),
        ("Republic of Korea", "South Korea"), ("North Korea", "North Korea"),
        ("Türkiye", "Turkey"), ("Turkiye", "Turkey"), ("Cote d'Ivoire", "Ivory Coast"),
        ("Aland Islands", "Åland Islands"), ("Burma", "Myanmar"), ("Holy See", "Vatican City"),
        ("State of Palestine", "Palestine"), ("Egypt", "Egypt"), ("Iran", "Iran"),
    ],
)  # fmt: skip
def test_spellings(name: str, country: str) -> None:
    found = GAZ.country(name)
    assert found is not None and found.name == country


@pytest.mark.parametrize(
    "name", ["IN", "IT", "ME", "CA", "GA", "AL", "DE", "OR", "IL", "GB", "FR", "Korea", "American",
             "British", "Americans", "Chinese", ""],
)  # fmt: skip
def test_unsafe_codes_and_demonyms_are_no_countries(name: str) -> None:
    assert GAZ.country(name) is None


def test_qualifier_takes_the_longest_country_prefix() -> None:
    found = GAZ.qualifier("United States Postal Service")
    assert found is not None and (found[0].code, found[1]) == ("US", "Postal Service")
    found = GAZ.qualifier("U.S. State Department")
    assert found is not None and (found[0].code, found[1]) == ("US", "State Department")
    assert GAZ.qualifier("US") is None
    assert GAZ.qualifier("U.S. agencies") is None  # the rest must be a name


def test_recall_names_skip_ambiguous_countries() -> None:
    names = set(GAZ.recall_names())
    assert {"U.S.", "US", "America", "the States", "The States", "Britain", "Egypt"} <= names
    assert not {"Georgia", "Jordan", "Chad", "Jersey", "IN", "IT"} & names
    assert all(n[:1].isupper() or n.startswith("the ") for n in names)


def test_a_spelling_two_countries_claim_names_neither() -> None:
    gaz = Gazetteer(
        [Country("AA", "Alpha", ("Alpha", "Twin")), Country("BB", "Beta", ("Beta", "Twin"))]
    )
    assert gaz.country("Twin") is None
    found = gaz.country("beta")
    assert found is not None and found.code == "BB"


def test_build_from_records_and_supplement() -> None:
    records = [
        SimpleNamespace(alpha_2="XX", name="Exland, Republic of", common_name="Exland"),
        SimpleNamespace(alpha_2="YY", name="Why (Islands)"),
    ]
    gaz = build(records, {"extra_names": {"XX": ["Xland"]}, "safe_codes": {"XL": "XX"}})
    found = gaz.country("X.L.")
    assert found is not None and found.name == "Exland" and "Xland" in found.names
    assert gaz.country("Exland, Republic of") is None
    assert [c.code for c in gaz.countries] == ["XX"]  # no prose spelling: left out
