"""Unit tests for HTML fragment to plain text conversion."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import feedparser
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.html_text import html_to_text, looks_like_html

LATIMES = Path(__file__).parent.parent / "data" / "feeds" / "latimes__20200421T200942Z.xml"


@pytest.mark.parametrize(
    ("html", "text"),
    [
        pytest.param("<p>One</p><p>Two</p>", "One\n\nTwo", id="paragraphs"),
        pytest.param("<p>Line<br>break<br/>again</p>", "Line\nbreak\nagain", id="br"),
        pytest.param("A<br><br>B", "A\n\nB", id="double-br-is-paragraph"),
        pytest.param("<div>a<div>b</div>c</div>", "a\n\nb\n\nc", id="nested-blocks"),
        pytest.param("<h2>Head</h2><ul><li>x</li><li>y</li></ul>", "Head\n\nx\n\ny", id="lists"),
        pytest.param(
            "<p>Tom &amp; Jerry&rsquo;s &#8220;show&#x201D;</p>",
            "Tom & Jerry’s “show”",
            id="entities",
        ),
        pytest.param(
            "<p>  lots \n\t of   space&nbsp;here </p>", "lots of space here", id="whitespace"
        ),
        pytest.param("<p>a <b>bold</b> <a href='x'>link</a>.</p>", "a bold link.", id="inline"),
        pytest.param("plain text only", "plain text only", id="no-tags"),
        pytest.param("", "", id="empty"),
        pytest.param("<p>unclosed <div>block", "unclosed\n\nblock", id="unclosed"),
        pytest.param("<p>x</b></i></p>", "x", id="stray-end-tags"),
        pytest.param("<svg/>after", "after", id="self-closing-skipped-tag"),
        pytest.param("<!-- hidden --><p>shown</p>", "shown", id="comment"),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


@pytest.mark.parametrize(
    "tag",
    [
        "script",
        "style",
        "noscript",
        "iframe",
        "figure",
        "figcaption",
        "aside",
        "nav",
        "form",
        "button",
        "svg",
    ],
)
def test_dropped_elements(tag: str) -> None:
    html = f"<p>before</p><{tag}><span>hidden <b>x</b></span><p>gone</p></{tag}><p>after</p>"
    assert html_to_text(html) == "before\n\nafter"


def test_figure_with_caption_is_dropped() -> None:
    html = (
        '<p>Lead.</p><figure><img src="a.jpg"><figcaption>Caption (AP Photo)</figcaption>'
        "</figure><p>Rest.</p>"
    )
    assert html_to_text(html) == "Lead.\n\nRest."


def test_unclosed_script_drops_the_rest() -> None:
    assert html_to_text("<p>kept</p><script>var x = '<p>no</p>';") == "kept"


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("<p>Hello</p>", True),
        ("Text with <br/> break", True),
        ("<a href='https://example.com'>x</a>", True),
        ("AT&amp;T", True),
        ("&#8220;quoted&#8221;", True),
        ("plain text", False),
        ("x < y and y > z", False),
        ("a <Secretary> of nothing", False),
        ("Fish & chips", False),
        ("", False),
    ],
)
def test_looks_like_html(s: str, expected: bool) -> None:
    assert looks_like_html(s) is expected


@given(st.text())
def test_never_raises_on_arbitrary_text(s: str) -> None:
    assert isinstance(html_to_text(s), str)
    assert isinstance(looks_like_html(s), bool)


_MARKUP = st.lists(
    st.sampled_from(
        [
            "<p>",
            "</p>",
            "<div>",
            "</div>",
            "<br>",
            "<script>",
            "</script>",
            "<svg/>",
            "<![",
            "<!--",
            "-->",
            "<a href='",
            "'>",
            "&amp;",
            "&#x",
            "&",
            "<",
            ">",
            "</",
            "text",
            " ",
            "<![CDATA[",
            "]]>",
            "<!DOCTYPE",
            "<?xml",
            "?>",
            "<figure>",
            "</figure>",
        ]
    )
).map("".join)


@given(_MARKUP)
def test_never_raises_on_tag_soup(s: str) -> None:
    text = html_to_text(s)
    assert "\n\n\n" not in text
    assert text == text.strip()


def _latimes_items() -> list[Any]:
    if not LATIMES.exists():
        pytest.skip(f"shared feed corpus not available at {LATIMES}")
    return list(feedparser.parse(io.BytesIO(LATIMES.read_bytes())).entries)


def test_latimes_content_encoded() -> None:
    items = _latimes_items()
    assert len(items) == 100
    for item in items:
        html = item.content[0]["value"]
        text = html_to_text(html)
        assert looks_like_html(html)
        assert text, item.title
        assert "<" not in text and "&#" not in text and "\n\n\n" not in text
    first = html_to_text(items[0].content[0]["value"])
    assert first == (
        "No one was hurt in the fire, but a Facebook video shows debris littering the outside "
        "of the Vision Theatre, an Art Deco building that opened in 1931."
    )


def test_latimes_apostrophes_unescaped() -> None:
    texts = [html_to_text(item.content[0]["value"]) for item in _latimes_items()]
    assert any("California's" in t for t in texts)
