"""Unit tests for splitting plain-text article files into title, body and boilerplate."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.errors import ExtractError
from services.core.plaintext import PlainArticle, RelatedStory, parse_date_line, parse_plaintext

SEED = Path(__file__).resolve().parents[2] / "seeds" / "000_a39bf01833f5003a.txt"
CAPTION = (
    "Secretary of State Antony J. Blinken speaks at a news conference following meetings "
    "Tuesday in Reykjavik, Iceland."
)
BLURB = "For Israel’s prime minister, Gaza conflict brought political benefits — at least for now."


@pytest.fixture(scope="module")
def seed() -> PlainArticle:
    return parse_plaintext(SEED.read_text(encoding="utf-8"))


def test_seed_title(seed: PlainArticle) -> None:
    assert seed.title == "Biden sends Blinken to Mideast to push peace talks after Gaza truce"


def test_seed_captions_and_credits(seed: PlainArticle) -> None:
    assert seed.captions == ("Secretary of State Antony J. Blinken", CAPTION)
    assert seed.credits == ("Saul Loeb / Pool Photo",)


def test_seed_related_story(seed: PlainArticle) -> None:
    assert seed.related == (RelatedStory(BLURB, "May 23, 2021", datetime.date(2021, 5, 23)),)


def test_seed_body_is_only_prose(seed: PlainArticle) -> None:
    assert seed.body.startswith(
        "Secretary of State Antony J. Blinken is heading to the Middle East"
    )
    for boilerplate in ("Saul Loeb", "Reykjavik", BLURB, "May 23, 2021", seed.title):
        assert boilerplate not in seed.body
    assert "\n\n\n" not in seed.body
    assert seed.body.endswith("opportunity in the lives of people.”")
    assert len(seed.body.split("\n\n")) == 12


@pytest.mark.parametrize(
    ("text", "title", "body"),
    [
        pytest.param("T\n\nBody.", "T", "Body.", id="minimal"),
        pytest.param(
            "\ufeffT\r\n\r\nOne.\r\n\r\n\r\n\r\nTwo.\r\n", "T", "One.\n\nTwo.", id="crlf-bom"
        ),
        pytest.param("T\rOne.\r\rTwo.", "T", "One.\n\nTwo.", id="old-mac"),
        pytest.param("\n\n  T  \n\n  One.  \n", "T", "One.", id="leading-blank-lines"),
        pytest.param("T\nOne.\nTwo.", "T", "One.\n\nTwo.", id="single-newline-paragraphs"),
        pytest.param(
            "T\n\nIt was wrapped\nmid sentence.",
            "T",
            "It was wrapped mid sentence.",
            id="hard-wrapped",
        ),
        # A one-sentence paragraph is ordinary body text, not a blurb or caption.
        pytest.param(
            "T\n\nFirst paragraph here.\n\nHe declined to comment.\n\nMore text.",
            "T",
            "First paragraph here.\n\nHe declined to comment.\n\nMore text.",
            id="one-sentence-paragraph",
        ),
        pytest.param(
            "T\n\nShort line\n\nAnother short line",
            "T",
            "Short line\n\nAnother short line",
            id="short-lines-no-date",
        ),
        pytest.param(
            "T\n\nBody.\n\n(This story has been updated with new details.)",
            "T",
            "Body.\n\n(This story has been updated with new details.)",
            id="parenthesised-sentence-is-body",
        ),
        pytest.param(
            "T\n\nHe worked for Reuters.", "T", "He worked for Reuters.", id="agency-in-sentence"
        ),
    ],
)
def test_title_and_body(text: str, title: str, body: str) -> None:
    article = parse_plaintext(text)
    assert (article.title, article.body) == (title, body)


@pytest.mark.parametrize(
    ("line", "credit"),
    [
        ("(Saul Loeb / Pool Photo)", "Saul Loeb / Pool Photo"),
        ("(AP Photo/Evan Vucci)", "AP Photo/Evan Vucci"),
        ("(Reuters)", "Reuters"),
        ("Photo: Jane Doe/Reuters", "Jane Doe/Reuters"),
        ("Credit: Getty Images", "Getty Images"),
        ("Getty Images", "Getty Images"),
        ("AFP via Getty Images", "AFP via Getty Images"),
        ("Luis Sinco / Los Angeles Times", "Luis Sinco / Los Angeles Times"),
    ],
)
def test_credit_lines_leave_the_body(line: str, credit: str) -> None:
    article = parse_plaintext(f"Title\n\nA caption line.\n{line}\n\nThe body.")
    assert article.credits == (credit,)
    assert article.captions == ("A caption line.",)
    assert article.body == "The body."


def test_standalone_credit_keeps_neighbours_as_body() -> None:
    article = parse_plaintext("T\n\nFirst paragraph.\n\n(AP Photo/Evan Vucci)\n\nSecond.")
    assert article.credits == ("AP Photo/Evan Vucci",)
    assert article.captions == ()
    assert article.body == "First paragraph.\n\nSecond."


@pytest.mark.parametrize(
    ("blurb_and_date", "date", "published"),
    [
        ("Teaser headline here\n\nMay 23, 2021", "May 23, 2021", datetime.date(2021, 5, 23)),
        ("Teaser headline here\nSept. 5, 2020", "Sept. 5, 2020", datetime.date(2020, 9, 5)),
        ("Teaser headline here\n\n2021-05-23", "2021-05-23", datetime.date(2021, 5, 23)),
        ("Teaser headline here\n\n23 May 2021", "23 May 2021", datetime.date(2021, 5, 23)),
    ],
)
def test_related_story(blurb_and_date: str, date: str, published: datetime.date) -> None:
    article = parse_plaintext(f"T\n\nBody one.\n\n{blurb_and_date}\n\nBody two.")
    assert article.related == (RelatedStory("Teaser headline here", date, published),)
    assert article.body == "Body one.\n\nBody two."


def test_long_paragraph_before_date_stays_body() -> None:
    long_paragraph = " ".join(["word"] * 40) + "."
    article = parse_plaintext(f"T\n\n{long_paragraph}\n\nMay 23, 2021")
    assert article.related == ()
    assert article.body == f"{long_paragraph}\n\nMay 23, 2021"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("May 23, 2021", datetime.date(2021, 5, 23)),
        ("  December 1 2020 ", datetime.date(2020, 12, 1)),
        ("Feb. 29, 2020", datetime.date(2020, 2, 29)),
        ("February 30, 2021", None),
        ("May 23, 2021, at noon", None),
        ("Published May 23, 2021", None),
        ("", None),
    ],
)
def test_parse_date_line(line: str, expected: datetime.date | None) -> None:
    assert parse_date_line(line) == expected


@pytest.mark.parametrize(
    "text",
    ["", "   \n\t\r\n", "\ufeff", "Only a headline", "Headline\n\n(Saul Loeb / Pool Photo)\n"],
)
def test_empty_raises(text: str) -> None:
    with pytest.raises(ExtractError) as info:
        parse_plaintext(text)
    assert info.value.code == "empty"


@given(st.text())
def test_arbitrary_text_parses_or_raises_empty(text: str) -> None:
    try:
        article = parse_plaintext(text)
    except ExtractError as exc:
        assert exc.code == "empty"
    else:
        assert article.title and article.body
        assert "\r" not in article.body and "\n\n\n" not in article.body
