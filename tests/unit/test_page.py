"""Article pages: main text without chrome, trusted canonical URLs, language, and the poller's
pure helpers (which items want a page, decoding, slimming)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.core.errors import ExtractError
from services.core.extract import ItemPayload, extract
from services.core.page import (
    declared_canonical,
    detect_language,
    extract_page,
    site_of,
    split_boilerplate,
    trusted_canonical,
)
from services.poller.pages import decode_html, has_full_content, slim_html, wants_page
from services.sources.feed import FeedItem
from tests.pages import CHROME_TEXT, Article, article_page, latimes_articles, seed_article

PAGE_URL = "http://www.latimes.test:8080/california/story/2020-04-21/story"
CANONICAL = "https://www.latimes.test/california/story/2020-04-21/story"
ARTICLES = [seed_article(), *latimes_articles()]


def page_item(article: Article, page: str, **changes: Any) -> ItemPayload:
    fields: dict[str, Any] = {
        "feed_id": 1, "kind": "feed", "item_key": "guid-1", "content_hash": "h",
        "url": PAGE_URL + "?utm_source=rss&fbclid=x", "title": article.title,
        "summary": f"<p>{article.paragraphs[0]}</p>", "page_html": page, "page_url": PAGE_URL,
    }  # fmt: skip
    return ItemPayload(**(fields | changes))


@pytest.mark.parametrize("article", ARTICLES, ids=lambda a: a.title[:40])
def test_page_text_is_the_real_paragraphs_and_nothing_else(article: Article) -> None:
    page = article_page(article, canonical=CANONICAL + "?utm_source=rss&utm_medium=feed#top")

    found = extract(page_item(article, page))

    assert found.text == article.body
    related = article.related[0] if article.related else None
    for chrome in (*CHROME_TEXT, article.caption, article.credit, related):
        # (an LA Times paragraph may quote another item's headline)
        assert chrome is None or chrome not in found.text or chrome in article.body
    assert found.title == article.title
    assert found.canonical_url == CANONICAL  # the page's own, tracking parameters dropped
    assert found.language == "en"
    assert found.page_url == PAGE_URL
    assert found.urls[0] == CANONICAL
    assert {PAGE_URL, PAGE_URL + "?utm_source=rss&fbclid=x"} <= set(found.urls)


def test_seed_page_keeps_caption_credit_and_related_out() -> None:
    article = seed_article()
    found = extract_page(article_page(article, og_url=CANONICAL), url=PAGE_URL)
    assert found is not None
    assert found.text == article.body
    assert "Reykjavik" not in found.text and "Saul Loeb" not in found.text
    assert "political benefits" not in found.text  # the related-story teaser
    assert found.canonical_url == CANONICAL  # og:url stands in for a missing rel=canonical
    assert found.author == "Times staff"


def test_feed_metadata_wins_over_the_page() -> None:
    article = seed_article()
    published = datetime(2021, 5, 24, 9, 30, tzinfo=UTC)
    item = page_item(article, article_page(article), title="Feed title", author="A. Reporter",
                     published=published)  # fmt: skip
    found = extract(item)
    assert (found.title, found.byline, found.published_at) == ("Feed title", "A. Reporter",
                                                               published)  # fmt: skip
    # No rel=canonical: the page's final URL is the article's canonical URL.
    assert found.canonical_url == "http://www.latimes.test:8080/california/story/2020-04-21/story"


def test_a_page_shorter_than_the_feed_text_is_not_used() -> None:
    article = seed_article()
    paywall = Article(title=article.title, paragraphs=("Subscribe to keep reading this story.",))
    full = "".join(f"<p>{p}</p>" for p in article.paragraphs)
    item = page_item(article, article_page(paywall, canonical="/login"), content=full,
                     url="https://feeds.test/item/1?utm_medium=rss")  # fmt: skip
    found = extract(item)
    assert found.text == article.body  # content:encoded, the whole article
    assert found.page_url is None and PAGE_URL not in found.urls  # the wall's URL is not kept
    assert found.canonical_url == "https://feeds.test/item/1"
    assert found.urls == ("https://feeds.test/item/1", "https://feeds.test/item/1?utm_medium=rss")


def test_payload_without_page_keys_is_still_accepted() -> None:
    raw = {
        "v": 1, "feed_id": 3, "kind": "feed", "item_key": "k", "content_hash": "h",
        "url": "https://example.com/a", "title": "T", "summary": "S", "content": None,
    }  # fmt: skip
    item = ItemPayload.from_dict(raw)
    assert item.page_html is None and item.page_url is None
    assert extract(item).text == "S"
    with pytest.raises(ExtractError) as caught:
        ItemPayload.from_dict(raw | {"page_html": 42})
    assert caught.value.code == "bad_payload"


def test_a_page_without_main_text_leaves_the_summary() -> None:
    item = page_item(seed_article(), "<html><body><nav>Home</nav></body></html>")
    assert extract(item).text == seed_article().paragraphs[0]
    assert extract_page("", url=PAGE_URL) is None


# -- boilerplate lines ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "dropped"),
    [
        ("Sign up for the Essential Politics newsletter", True),
        ("Subscribe to our daily email briefing.", True),
        ("Read more: Biden and the Middle East", True),
        ("Related: For Israel's prime minister, Gaza conflict brought political benefits", True),
        ("Advertisement", True),
        ("Photo: Saul Loeb / Pool", True),
        ("Continue reading the main story", True),
        ("Copyright © 2020, Los Angeles Times", True),
        ("Related companies reported losses in the first quarter.", False),
        ("Photographers gathered outside the courthouse on Monday.", False),
        ("Copyright law was not the issue, the judge said.", False),
        ("Sign up " + "for the long paragraph that only mentions a newsletter " * 5, False),
    ],
)
def test_boilerplate_lines(line: str, dropped: bool) -> None:
    kept, gone = split_boilerplate([line])
    assert (gone == [line], kept == [line]) == (dropped, not dropped)


def test_sign_up_box_heading_goes_with_it_but_a_sentence_stays() -> None:
    lines = ["A paragraph.", "Essential California", "Sign up for our newsletter", "Next one."]
    assert split_boilerplate(lines) == (
        ["A paragraph.", "Next one."],
        ["Essential California", "Sign up for our newsletter"],
    )
    kept, _ = split_boilerplate(["He said no.", "Sign up for our newsletter"])
    assert kept == ["He said no."]


# -- canonical URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("href", "page_url", "expected"),
    [
        ("https://www.example.com/a/b?utm_source=x", "https://www.example.com/a/b?x=1",
         "https://www.example.com/a/b"),
        ("/news/story-1/", "https://example.com/x", "https://example.com/news/story-1"),
        ("//m.example.com/story", "https://www.example.com/story", "https://m.example.com/story"),
        ("https://www.bbc.co.uk/news/uk-1", "https://bbc.co.uk/x", "https://www.bbc.co.uk/news/uk-1"),
        ("https://example.com/?p=123", "https://example.com/2020/story", "https://example.com/?p=123"),
        ("https://example.com:8443/a", "http://example.com/a", "https://example.com:8443/a"),
        ("https://www.example.com/", "https://www.example.com/story", None),  # the site root
        ("https://www.example.com", "https://www.example.com/story", None),
        ("https://other.com/story", "https://www.example.com/story", None),  # another site
        ("https://www.itv.co.uk/a", "https://www.bbc.co.uk/a", None),
        ("javascript:alert(1)", "https://example.com/a", None),
        ("ftp://example.com/a", "https://example.com/a", None),
        ("http://[::1/a", "https://example.com/a", None),
        ("", "https://example.com/a", None),
        ("https://example.com/a", None, None),
    ],
)  # fmt: skip
def test_trusted_canonical(href: str, page_url: str | None, expected: str | None) -> None:
    assert trusted_canonical(href, page_url=page_url) == expected


@pytest.mark.parametrize(
    ("host", "site"),
    [("www.bbc.co.uk", "bbc.co.uk"), ("edition.cnn.com", "cnn.com"), ("CNN.com.", "cnn.com"),
     ("abc.net.au", "abc.net.au"), ("www.abc.net.au", "abc.net.au"), ("localhost", "localhost"),
     ("127.0.0.1", "127.0.0.1"), ("news.example.de", "example.de")],
)  # fmt: skip
def test_site_of(host: str, site: str) -> None:
    assert site_of(host) == site


def test_declared_canonical_reads_the_head_only() -> None:
    page = (
        '<html><head><meta property="og:url" content="https://e.com/og">'
        "<link rel='alternate canonical' href='https://e.com/a?x=1&amp;y=2'></head>"
        '<body><link rel="canonical" href="https://evil.com/b"></body></html>'
    )
    assert declared_canonical(page) == "https://e.com/a?x=1&y=2"
    assert declared_canonical(page.replace("canonical' href", "x' href")) == "https://e.com/og"
    assert declared_canonical('<body><link rel="canonical" href="https://evil.com/b">') is None


# -- language ---------------------------------------------------------------------------------


def test_language() -> None:
    assert detect_language(seed_article().body) == "en"
    assert detect_language("Too short to tell what language this is.") is None
    assert detect_language("") is None


# -- the poller side: which items want a page, decoding, slimming -----------------------------


def feed_item(content: str | None, summary: str | None = "A summary of the story.") -> FeedItem:
    return FeedItem(item_key="k", content_hash="h", url="https://example.com/a", title="T",
                    summary=summary, content=content, content_type="text/html",
                    published=None, author=None)  # fmt: skip


def test_full_content_decision() -> None:
    body = "".join(f"<p>{p}</p>" for p in seed_article().paragraphs)
    short = "<p>One paragraph, as the LA Times feed carries it.</p>"
    assert has_full_content(feed_item(body))
    assert not has_full_content(feed_item(None))
    assert not has_full_content(feed_item(short))
    assert not has_full_content(feed_item(body, summary=body))  # content no longer than summary
    assert [wants_page(m, feed_item(body)) for m in ("auto", "always", "never")] == [
        False, True, False,
    ]  # fmt: skip
    assert [wants_page(m, feed_item(short)) for m in ("auto", "always", "never")] == [
        True, True, False,
    ]  # fmt: skip
    linkless = FeedItem(**(feed_item(short).__dict__ | {"url": None}))
    assert not wants_page("always", linkless)


@pytest.mark.parametrize(
    ("body", "content_type", "text"),
    [
        ("café".encode(), "text/html; charset=utf-8", "café"),
        ("café".encode("cp1252"), 'text/html; charset="ISO-8859-1"', "café"),
        ("€".encode("cp1252"), "text/html; charset=latin1", "€"),  # WHATWG: latin1 is cp1252
        ('<meta charset="windows-1251">Привет'.encode("cp1251"), "text/html", "Привет"),
        (b"<meta http-equiv='Content-Type' content='text/html; charset=Shift_JIS'>"
         + "日本".encode("shift_jis"), None, "日本"),
        (b"\xef\xbb\xbfcaf\xc3\xa9", None, "café"),
        (b"caf\xe9", "text/html", "caf\ufffd"),  # no declaration: UTF-8, with replacement
        ("café".encode(), "text/html; charset=no-such-codec", "café"),
    ],
)  # fmt: skip
def test_decode_html(body: bytes, content_type: str | None, text: str) -> None:
    assert decode_html(body, content_type).endswith(text)


def test_slim_html_drops_scripts_styles_and_comments_but_keeps_json_ld() -> None:
    page = (
        "<head><script>var a = '</p>';</script><STYLE>p{}</STYLE>"
        '<script type="application/ld+json">{"headline": "H"}</script></head>'
        "<body><!-- <p>hidden</p> --><p>kept</p><script src=x.js></script ><p>also</p>"
    )
    assert slim_html(page) == (
        '<head><script type="application/ld+json">{"headline": "H"}</script></head>'
        "<body><p>kept</p><p>also</p>"
    )
    assert slim_html("<p>a</p><script>never closed <p>b</p>") == "<p>a</p>"
    assert slim_html("<p>a</p><!-- never closed") == "<p>a</p>"
    assert slim_html("<p>a</p>") == "<p>a</p>"
