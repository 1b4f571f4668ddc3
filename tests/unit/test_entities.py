"""Unit tests for entity canonicalisation (pure; mentions are written by hand)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.entities import (
    PERSON_TITLES,
    ArticleEntity,
    RawMention,
    _cached_key,
    _key,
    _strip_titles,
    canonicalise,
    entity_key,
)


def mentions(text: str, *spans: tuple[str, str]) -> list[RawMention]:
    """RawMentions for each (surface, label), located left to right in ``text``."""
    found: list[RawMention] = []
    pos = 0
    for surface, label in spans:
        start = text.index(surface, pos)
        found.append(RawMention(surface, label, start, start + len(surface)))
        pos = start + 1
    return found


def by_name(entities: list[ArticleEntity]) -> dict[str, ArticleEntity]:
    return {e.name: e for e in entities}


def run(text: str, *spans: tuple[str, str]) -> dict[str, str]:
    """name -> type of the canonical entities."""
    return {e.name: e.type for e in canonicalise(text, mentions(text, *spans))}


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("PERSON", "person"), ("ORG", "organization"), ("GPE", "place"), ("LOC", "place"),
        ("NORP", "group"), ("FAC", "facility"), ("EVENT", "event"), ("PRODUCT", "product"),
        ("LAW", "law"), ("WORK_OF_ART", "work"),
    ],
)  # fmt: skip
def test_label_types(label: str, expected: str) -> None:
    assert run("Zed went.", ("Zed", label)) == {"Zed": expected}


@pytest.mark.parametrize(
    "label",
    ["DATE", "TIME", "PERCENT", "MONEY", "QUANTITY", "ORDINAL", "CARDINAL", "LANGUAGE", "WAT"],
)
def test_dropped_labels(label: str) -> None:
    assert run("Zed went.", ("Zed", label)) == {}


@pytest.mark.parametrize(
    ("text", "surface", "label", "name"),
    [
        ("He met the Palestinian Authority.", "the Palestinian Authority", "ORG",
         "Palestinian Authority"),
        ("The Pentagon said.", "The Pentagon", "ORG", "Pentagon"),
        ("Blinken’s goal.", "Blinken’s", "PERSON", "Blinken"),
        ("Hamas's leaders.", "Hamas's", "ORG", "Hamas"),
        ("He said “Hamas” twice.", "“Hamas”", "ORG", "Hamas"),
        ("(CNN) reported.", "(CNN)", "ORG", "CNN"),
        ("President Biden said.", "President Biden", "PERSON", "Biden"),
        ("Secretary of State Antony J. Blinken said.", "Secretary of State Antony J. Blinken",
         "PERSON", "Antony J. Blinken"),
        ("Former Secretary of State Hillary Clinton.", "Former Secretary of State Hillary Clinton",
         "PERSON", "Hillary Clinton"),
        ("Mr. Smith left.", "Mr. Smith", "PERSON", "Smith"),
        ("Dr.Jones left.", "Dr.Jones", "PERSON", "Jones"),
        ("Sen. Ted Cruz spoke.", "Sen. Ted Cruz", "PERSON", "Ted Cruz"),
        ("Prime Minister Benjamin Netanyahu.", "Prime Minister Benjamin Netanyahu", "PERSON",
         "Benjamin Netanyahu"),
        ("Gen. Mark Milley.", "Gen. Mark Milley", "PERSON", "Mark Milley"),
        ("the U.S. said", "U.S.", "GPE", "U.S."),
        ("General Motors said.", "General Motors", "ORG", "General Motors"),
        ("Queen Elizabeth spoke.", "Queen Elizabeth", "PERSON", "Queen Elizabeth"),
        ("A man named President.", "President", "PERSON", "President"),
    ],
)  # fmt: skip
def test_name_cleaning(text: str, surface: str, label: str, name: str) -> None:
    (entity,) = canonicalise(text, mentions(text, (surface, label)))
    assert entity.name == name
    assert entity.surface_forms == (surface,)


@pytest.mark.parametrize(
    "surface",
    ["Saul Loeb / Pool Photo", "AP Photo/Evan Vucci", "Getty Images", "AFP via Getty", "2021",
     "--", "11", "(...)"],
)  # fmt: skip
def test_credits_and_numbers_dropped(surface: str) -> None:
    text = f"x {surface} y"
    assert canonicalise(text, mentions(text, (surface, "ORG"))) == []


SEED_LEAD = "Secretary of State Antony J. Blinken is heading to the Middle East."


def test_widens_cut_off_given_name_and_drops_title_state() -> None:
    found = run(SEED_LEAD, ("State", "ORG"), ("J. Blinken", "PERSON"), ("the Middle East", "LOC"))
    assert found == {"Antony J. Blinken": "person", "Middle East": "place"}


@pytest.mark.parametrize(
    ("text", "inside"),
    [
        # a title inside a longer one that starts at the same place, and one that starts later
        ("Deputy Prime Minister Chrystia Freeland spoke.", "Minister"),
        ("The Deputy Prime Minister spoke.", "Prime Minister"),
        ("Former Vice President Mike Pence and Secretary of State Antony Blinken met.", "State"),
    ],
)
def test_no_organisation_or_place_inside_a_title_phrase(text: str, inside: str) -> None:
    spans = [RawMention(inside, "ORG", text.index(inside), text.index(inside) + len(inside))]
    assert canonicalise(text, spans) == []


def test_a_title_phrase_counts_only_as_whole_words() -> None:
    # "Prime Ministers" is not the title "Prime Minister": "Ministers" may be an organisation.
    text = "The Prime Ministership passed; Ministers met."
    assert run(text, ("Ministers", "ORG")) == {"Ministers": "organization"}
    text = "Prime Ministers Council met."
    assert run(text, ("Prime Ministers Council", "ORG")) == {
        "Prime Ministers Council": "organization"
    }


@pytest.mark.parametrize(
    ("text", "surface", "name"),
    [
        ("President Joe Biden spoke.", "Biden", "Joe Biden"),
        ("City Manager Rick Cole resigned.", "Cole", "Rick Cole"),
        ("On Sunday Blinken spoke.", "Blinken", "Blinken"),
        ("Then Biden spoke.", "Biden", "Biden"),
        ("He told CNN’s Jake Tapper.", "Jake Tapper", "Jake Tapper"),
        ("Israel. Antony Blinken spoke.", "Blinken", "Antony Blinken"),
        ("Ann Bea Cee Dee spoke.", "Dee", "Bea Cee Dee"),
        ("Rep. Nancy Pelosi said.", "Pelosi", "Nancy Pelosi"),
        ("Speaker Nancy\nPelosi said.", "Pelosi", "Pelosi"),
    ],
)
def test_widening_stops(text: str, surface: str, name: str) -> None:
    assert run(text, (surface, "PERSON")) == {name: "person"}


def test_widening_stops_at_other_mention() -> None:
    text = "Gaza Blinken spoke."
    assert run(text, ("Gaza", "GPE"), ("Blinken", "PERSON")) == {
        "Gaza": "place",
        "Blinken": "person",
    }


def test_surname_resolves_whatever_its_label() -> None:
    text = "Biden sends Blinken. Secretary of State Antony J. Blinken went. Blinken spoke."
    spans = [("Biden", "ORG"), ("Blinken", "GPE"), ("State", "ORG"), ("J. Blinken", "PERSON"),
             ("Blinken", "PERSON")]  # fmt: skip
    entities = by_name(canonicalise(text, mentions(text, *spans)))
    assert set(entities) == {"Antony J. Blinken", "Biden"}
    blinken = entities["Antony J. Blinken"]
    assert (blinken.type, blinken.mentions) == ("person", 3)
    assert blinken.first_offset == text.index("Blinken")
    assert blinken.surface_forms == ("Blinken", "Antony J. Blinken")
    assert entities["Biden"].type == "organization"  # one ORG vote, nothing to resolve it


def test_ambiguous_surname_stays_short() -> None:
    text = "Joe Biden and Jill Biden. Biden spoke."
    found = run(text, ("Joe Biden", "PERSON"), ("Jill Biden", "PERSON"), ("Biden", "PERSON"))
    assert found == {"Joe Biden": "person", "Jill Biden": "person", "Biden": "person"}


def test_titled_mention_with_wrong_label_joins_the_person() -> None:
    text = "Joe Biden spoke. President Biden left."
    entities = canonicalise(
        text, mentions(text, ("Joe Biden", "PERSON"), ("President Biden", "ORG"))
    )
    assert [(e.name, e.type, e.mentions) for e in entities] == [("Joe Biden", "person", 2)]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["PERSON", "PERSON", "ORG"], "person"),
        (["ORG", "ORG", "PERSON"], "organization"),
        (["PERSON", "ORG"], "person"),
        (["ORG", "GPE"], "organization"),
        (["GPE", "NORP"], "place"),
        (["NORP", "LOC", "NORP"], "group"),
    ],
)
def test_type_vote(labels: list[str], expected: str) -> None:
    text = " ".join(["Zed."] * len(labels))
    spans = [RawMention("Zed", label, i * 5, i * 5 + 3) for i, label in enumerate(labels)]
    (entity,) = canonicalise(text, spans)
    assert (entity.type, entity.mentions) == (expected, len(labels))


def test_same_key_merges_and_sorting() -> None:
    text = "US and U.S. and Iran and Alpha and Beta and Beta"
    spans = [("US", "GPE"), ("U.S.", "GPE"), ("Iran", "GPE"), ("Alpha", "ORG"), ("Beta", "ORG"),
             ("Beta", "ORG")]  # fmt: skip
    entities = canonicalise(text, mentions(text, *spans))
    assert [(e.name, e.mentions) for e in entities] == [
        ("Beta", 2), ("U.S.", 2), ("Alpha", 1), ("Iran", 1),
    ]  # fmt: skip
    assert by_name(entities)["U.S."].surface_forms == ("US", "U.S.")
    assert len({(e.type, e.key) for e in entities}) == len(entities)


def test_mentions_in_any_order() -> None:
    text = "Antony Blinken met Blinken."
    spans = mentions(text, ("Antony Blinken", "PERSON"), ("Blinken", "GPE"))
    assert canonicalise(text, spans) == canonicalise(text, spans[::-1])


def test_offsets_not_matching_text_are_tolerated() -> None:
    spans = [RawMention("Blinken", "PERSON", 500, 507)]
    assert run_raw("short text", spans) == {"Blinken": "person"}


def run_raw(text: str, spans: list[RawMention]) -> dict[str, str]:
    return {e.name: e.type for e in canonicalise(text, spans)}


def test_person_titles_are_unique() -> None:
    assert len(PERSON_TITLES) == len(set(PERSON_TITLES))


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("U.S.", "us"),
        ("The  New\tYork   Times", "the new york times"),
        ("O’Rourke", "o'rourke"),
        ("“Hamas”", '"hamas"'),
        ("ＡＢＣ", "abc"),
        ("Straße", "strasse"),
        ("  Antony J. Blinken ", "antony j blinken"),
    ],
)
def test_entity_key(name: str, key: str) -> None:
    assert entity_key(name) == key


@given(st.text())
def test_entity_key_idempotent(name: str) -> None:
    key = entity_key(name)
    assert entity_key(key) == key
    assert "." not in key and key == key.strip() and not re.search(r"\s\s", key)


@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 20),
                          st.sampled_from(["PERSON", "ORG", "GPE", "DATE", "NORP"]))),
       st.text(alphabet="AB. ’'/Photo\nthe", max_size=60))  # fmt: skip
def test_canonicalise_never_fails(spans: list[tuple[int, int, str]], text: str) -> None:
    raw = [RawMention(text[s : s + n], label, s, s + n) for s, n, label in spans]
    entities = canonicalise(text, raw)
    assert len({(e.type, e.key) for e in entities}) == len(entities)
    assert sum(e.mentions for e in entities) <= len(raw)
    assert all(e.name and e.key for e in entities)


def _strip_titles_one_pattern_at_a_time(name: str) -> str:
    """The rule written out: try each title, longest first; take the first that leaves a name
    (the spaces after it taken whole), and start again on what is left."""
    patterns = [
        re.compile(rf"{re.escape(title)}(?:\s+|(?<=\.)(?=[A-Z]))", re.IGNORECASE)
        for title in sorted(PERSON_TITLES, key=len, reverse=True)
    ]
    while True:
        for pattern in patterns:
            match = pattern.match(name)
            if match is not None and match.end() < len(name):
                name = name[match.end() :]
                break
        else:
            return name


_title_pieces = st.sampled_from(PERSON_TITLES).flatmap(
    lambda t: st.sampled_from([t, t.lower(), t.upper(), t.replace(".", "")])
)
_name_pieces = st.sampled_from(
    ["Biden", "Blinken", "Antony J.", "Smith", "of", "State", "X", "gen.", "a", "Jr."]
)


@given(
    st.lists(
        st.one_of(_title_pieces, _name_pieces, st.text(alphabet="Ab. \t-", max_size=3)),
        max_size=6,
    ),
    st.lists(st.sampled_from(["", " ", "  ", "\t", "."]), min_size=6, max_size=6),
)
def test_titles_are_stripped_as_by_each_title_in_turn(pieces: list[str], gaps: list[str]) -> None:
    name = "".join(p + g for p, g in zip(pieces, gaps, strict=False))
    assert _strip_titles(name) == _strip_titles_one_pattern_at_a_time(name)


@pytest.mark.parametrize(
    ("name", "stripped"),
    [
        ("Former Secretary of State Antony J. Blinken", "Antony J. Blinken"),
        ("Gen.Smith", "Smith"),  # no space after a dot before a capital
        ("President  ", "President  "),  # a title and spaces alone are no name's title
        ("President", "President"),
        ("president biden", "biden"),
        ("Mr. Mrs. Jones", "Jones"),
        ("Secretary Generalissimo", "Generalissimo"),  # "Secretary General" needs a gap
    ],
)
def test_titles_strip_table(name: str, stripped: str) -> None:
    assert _strip_titles(name) == stripped


def test_entity_keys_are_cached_and_equal_to_a_fresh_computation() -> None:
    name = "U.S.  State  Department’s"
    _cached_key.cache_clear()
    assert entity_key(name) == _key(name) == "us state department's"
    assert entity_key(name) == _key(name)
    assert _cached_key.cache_info().hits == 1


def test_long_names_are_keyed_without_filling_the_cache() -> None:
    """Keys of what API clients send are computed too: a long one is not kept."""
    _cached_key.cache_clear()
    long_name = "Ministry of " + "Very " * 100 + "Long Names"
    assert entity_key(long_name) == _key(long_name) == " ".join(long_name.lower().split())
    assert _cached_key.cache_info().currsize == 0
