"""Recall from knowledge (pure): known names the model missed, and the safeguards."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.entities import RawMention
from services.core.entity_recall import (
    KnownName,
    NameIndex,
    article_names,
    cut_at_breaks,
    with_known,
)
from services.core.gazetteer import default_gazetteer

GAZ = default_gazetteer()
COMMON = GAZ.common_words | {"us", "who", "it", "will", "may"}
COUNTRIES = NameIndex([KnownName(n, "place") for n in GAZ.recall_names()], COMMON)
KNOWN = NameIndex(
    [
        KnownName("State Department", "organization"),
        KnownName("Theresa May", "person"),
        KnownName("May", "person"),
        KnownName("Will", "person"),
        KnownName("WHO", "organization"),
        KnownName("FBI", "organization"),
        KnownName("Hamas", "organization"),
        KnownName("Washington", "person"),
        KnownName("Washington", "place"),
        KnownName("Brien", "person"),
        KnownName("the", "organization"),
    ],
    COMMON,
)


def at(text: str, surface: str, label: str, nth: int = 0) -> RawMention:
    start = -1
    for _ in range(nth + 1):
        start = text.index(surface, start + 1)
    return RawMention(surface, label, start, start + len(surface))


def recalled(text: str, *model: RawMention) -> list[tuple[str, str]]:
    return [(m.text, m.label) for m in with_known(text, list(model), [KNOWN, COUNTRIES])]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Officials at the State Department spoke.", [("State Department", "ORG")]),
        ("Aid to the U.S. and America.", [("U.S.", "GPE"), ("America", "GPE")]),
        ("Theresa May spoke.", [("Theresa May", "PERSON")]),
        ("The WHO and the FBI met.", [("WHO", "ORG"), ("FBI", "ORG")]),
        ("Hamas's leaders.", [("Hamas", "ORG")]),
    ],
)
def test_known_names_are_recalled(text: str, expected: list[tuple[str, str]]) -> None:
    assert recalled(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "May brings rain.",  # a month, and a common word
        "Will he go? Bill will.",  # common words
        "the state department said",  # case-sensitive
        "who said that? tell us.",
        "Washington spoke.",  # known as a person and as a place: ambiguous
        "Conor O'Brien left.",  # "Brien" inside a word
        "Put the china away. China replied.",  # the word occurs in lower case here
        "Georgia and Jordan.",  # ambiguous countries are never recalled
        "USAID and FBIX.",  # token boundaries
    ],
)
def test_safeguards(text: str) -> None:
    assert recalled(text) == []


def test_model_spans_win_in_prose() -> None:
    text = "In May, Theresa May left."
    model = [at(text, "May", "DATE"), at(text, "Theresa", "PERSON")]
    assert recalled(text, *model) == [("May", "DATE"), ("Theresa", "PERSON")]


def test_all_caps_lines() -> None:
    assert recalled("STATE DEPARTMENT WARNS AMERICA\n\nBody.") == [
        ("STATE DEPARTMENT", "ORG"),
        ("AMERICA", "GPE"),
    ]
    assert recalled("TELL US WHO ASKED\n\nBody.") == []  # acronyms spelling common words
    assert recalled("FBI RAIDS HOME\n\nBody.") == [("FBI", "ORG")]


def test_a_known_name_displaces_a_garbled_headline_span() -> None:
    text = "STATE DEPARTMENT WARNS AMERICA\n\nBody."
    assert recalled(text, at(text, "STATE DEPARTMENT WARNS AMERICA", "ORG")) == [
        ("STATE DEPARTMENT", "ORG"),
        ("AMERICA", "GPE"),
    ]
    text = "Blaming China, Trump Says U.S. Will Leave\n\nBody."
    model = [at(text, "China", "GPE"), at(text, "U.S. Will", "PERSON")]
    assert recalled(text, *model) == [("China", "GPE"), ("U.S.", "GPE")]


def test_a_headline_span_equal_to_a_known_name_stays_the_models() -> None:
    text = "Hamas Leaders Meet in Cairo Today\n\nBody."
    assert recalled(text, at(text, "Hamas", "ORG")) == [("Hamas", "ORG")]


def test_a_full_name_is_not_displaced_by_its_surname() -> None:
    text = "What Leaders Said About the Death of George Floyd\n\nMr. Floyd died."
    model = [at(text, "George Floyd", "PERSON"), at(text, "Floyd", "PERSON", 1)]
    assert recalled(text, *model) == [("George Floyd", "PERSON"), ("Floyd", "PERSON")]


def test_names_tagged_once_are_recalled_at_their_other_mentions() -> None:
    text = "Blinken flew in. Later Blinken met aides, and the Pentagon and Blinken left."
    model = [at(text, "Blinken", "PERSON"), at(text, "Pentagon", "ORG")]
    assert recalled(text, *model) == [
        ("Blinken", "PERSON"),
        ("Blinken", "PERSON"),
        ("Pentagon", "ORG"),
        ("Blinken", "PERSON"),
    ]


def test_a_common_word_tagged_once_is_not_spread() -> None:
    text = "May said no. In May it rained, and May left."
    assert recalled(text, at(text, "May", "PERSON")) == [("May", "PERSON")]


def test_spans_are_cut_at_line_breaks() -> None:
    text = "Leave the W.H.O.\n\nAmerica’s role."
    span = at(text, "the W.H.O.\n\nAmerica’s", "ORG")
    assert [(m.text, m.start) for m in cut_at_breaks([span])] == [
        ("the W.H.O.", 6),
        ("America’s", 18),
    ]
    assert text[18:27] == "America’s"


def test_article_names_vote_on_type() -> None:
    text = "Blinken, Blinken and Blinken."
    model = [at(text, "Blinken", label, i) for i, label in enumerate(["GPE", "PERSON", "PERSON"])]
    assert article_names(model) == [KnownName("Blinken", "person")]


@given(st.text(alphabet="AUSMayWhoStDprtmn. \n'’-", max_size=60))
def test_recalled_spans_are_in_bounds_and_disjoint(text: str) -> None:
    out = with_known(text, [], [KNOWN, COUNTRIES])
    assert all(text[m.start : m.end] == m.text for m in out)
    assert all(a.end <= b.start for a, b in itertools.pairwise(out))


SHARED_FIRST = NameIndex(
    [
        KnownName("United Nations", "organization"),
        KnownName("United Nations Security Council", "organization"),
        KnownName("United Auto Workers", "organization"),
        KnownName("al-Shabab", "organization"),
    ],
    COMMON,
)


def test_the_longest_of_names_sharing_a_first_token_wins() -> None:
    text = "The United Nations Security Council met. United Auto Workers struck. The United Nations"
    assert [(m.text, m.label) for m in with_known(text, [], [SHARED_FIRST])] == [
        ("United Nations Security Council", "ORG"),
        ("United Auto Workers", "ORG"),
        ("United Nations", "ORG"),
    ]


def test_a_name_starting_in_lower_case_is_recalled_as_written_and_in_capitals() -> None:
    text = "AL-SHABAB CLAIMS ATTACK\n\nOfficials blamed al-Shabab. Al-Shabab denied it."
    found = [(m.text, m.start) for m in with_known(text, [], [SHARED_FIRST])]
    # Capitalised at a sentence start, it is not the name as known (matching is exact).
    assert found == [("AL-SHABAB", 0), ("al-Shabab", text.index("al-Shabab"))]


def test_an_article_index_shares_the_folded_common_words() -> None:
    """with_known builds each article's own index from the first index's common words,
    already folded: "Will" tagged once is still a common word and is not spread."""
    text = "Will Smith arrived. Will it rain? Ask Will."
    model = [RawMention("Will", "PERSON", text.rindex("Will"), text.rindex("Will") + 4)]
    assert [m.text for m in with_known(text, model, [KNOWN])] == ["Will"]
    assert KNOWN.folded_common_words.words == KNOWN.common_words
