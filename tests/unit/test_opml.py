"""OPML parsing and rendering: nesting, titles, hostile documents, and a round-trip property."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from services.core.errors import ParseError
from services.core.feedurl import MAX_URL_CHARS, normalise_feed_url
from services.core.opml import OpmlFeed, OpmlWriter, parse_opml, render_opml

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

NESTED = b"""<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head><title>Subscriptions</title></head>
  <body>
    <outline text="Top" type="rss" xmlUrl="https://top.test/rss" htmlUrl="https://top.test/"/>
    <outline text="News" title="News">
      <!-- a comment among outlines -->
      <outline text="World" title="  World  ">
        <outline text="Text only" xmlUrl=" https://world.test/feed "/>
        <outline title="Title wins" text="ignored" xmlUrl="https://w2.test/atom"/>
      </outline>
      <outline type="link" text="A bookmark, not a feed" url="https://link.test/"/>
      <outline text="https://untitled.test/rss" xmlUrl="https://untitled.test/rss"/>
    </outline>
    <outline text="Tech">
      <outline TEXT="Shouty" XMLURL="https://shout.test/rss" HTMLURL="https://shout.test/"/>
      <outline text="" xmlUrl=""/>
    </outline>
  </body>
</opml>
"""


def test_parse_flattens_nested_outlines_keeping_the_category_path() -> None:
    assert parse_opml(NESTED) == [
        OpmlFeed("https://top.test/rss", "Top", "https://top.test/", ()),
        OpmlFeed("https://world.test/feed", "Text only", None, ("News", "World")),
        OpmlFeed("https://w2.test/atom", "Title wins", None, ("News", "World")),
        OpmlFeed("https://untitled.test/rss", None, None, ("News",)),
        OpmlFeed("https://shout.test/rss", "Shouty", "https://shout.test/", ("Tech",)),
        OpmlFeed("", None, None, ("Tech",)),  # kept, so that an import reports it as invalid
    ]


def test_namespaced_opml_and_empty_body() -> None:
    doc = b'<opml xmlns="http://example.test/ns" version="1.0"><body/></opml>'
    assert parse_opml(doc) == []


def test_deep_nesting_does_not_hit_the_recursion_limit() -> None:
    depth = 5000
    doc = (
        b"<opml><body>"
        + b'<outline text="f">' * depth
        + b'<outline xmlUrl="https://deep.test/"/>'
        + b"</outline>" * depth
        + b"</body></opml>"
    )
    (feed,) = parse_opml(doc)
    assert feed.url == "https://deep.test/" and len(feed.category) == depth


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<opml><body><outline text="&lol3;" xmlUrl="https://x.test/"/></body></opml>
"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE opml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<opml><body><outline text="&xxe;" xmlUrl="https://x.test/"/></body></opml>"""


@pytest.mark.parametrize(
    "doc",
    [
        BILLION_LAUGHS,
        EXTERNAL,
        b'<!doctype opml SYSTEM "http://evil.test/x.dtd"><opml><body/></opml>',
        b"<opml><body/></opml><!ENTITY x 'y'>",
        # UTF-16 hides the declaration from a byte search; the parser hook still stops it.
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x []><opml><body/></opml>'.encode(
            "utf-16"
        ),
    ],
    ids=["billion-laughs", "external-entity", "external-dtd", "entity", "utf-16"],
)
def test_dtds_are_refused_before_expansion(doc: bytes) -> None:
    with pytest.raises(ParseError, match="DOCTYPE or ENTITY") as info:
        parse_opml(doc)
    assert info.value.code == "bad_opml"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"", "not well-formed"),
        (b"<opml><body>", "not well-formed"),
        (b"\xff\xfe\x00garbage", "not well-formed"),
        (b'<?xml version="1.0" encoding="x-unknown"?><opml/>', "not well-formed"),
        (b"<rss><channel/></rss>", "root element is <rss>, not <opml>"),
        (b"<opml><head/></opml>", "no <body>"),
    ],
)
def test_malformed_documents_raise_bad_opml(doc: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message) as info:
        parse_opml(doc)
    assert info.value.code == "bad_opml"


def test_render_escapes_and_groups_consecutive_categories() -> None:
    feeds = [
        OpmlFeed("https://a.test/?x=1&y=2", 'A "quoted" <title> & more', "https://a.test/"),
        OpmlFeed("https://b.test/rss", None, None, ("News", "World")),
        OpmlFeed("https://c.test/rss", "C", None, ("News", "World")),
        OpmlFeed("https://d.test/rss", "Line\nbreak\ttab", None, ("News",)),
    ]

    doc = render_opml(feeds, title="My <feeds>", now=NOW)

    assert doc.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">')
    assert "<title>My &lt;feeds&gt;</title>" in doc
    assert "<dateCreated>Wed, 01 May 2024 12:00:00 GMT</dateCreated>" in doc
    assert (
        '<outline type="rss" text="A &quot;quoted&quot; &lt;title&gt; &amp; more" '
        'title="A &quot;quoted&quot; &lt;title&gt; &amp; more" '
        'xmlUrl="https://a.test/?x=1&amp;y=2" htmlUrl="https://a.test/"/>'
    ) in doc
    assert '<outline type="rss" text="https://b.test/rss" xmlUrl="https://b.test/rss"/>' in doc
    assert doc.count('<outline text="World"') == 1 and doc.count('<outline text="News"') == 1
    assert parse_opml(doc.encode()) == feeds


def test_writer_in_pages_equals_one_render() -> None:
    feeds = [OpmlFeed(f"https://f{i}.test/", f"F{i}", None, (f"c{i // 3}",)) for i in range(10)]
    writer = OpmlWriter()
    pieces = [writer.head(title="t", now=NOW)]
    pieces += [writer.feeds(feeds[i : i + 4]) for i in range(0, 10, 4)]
    pieces.append(writer.tail())
    assert "".join(pieces) == render_opml(feeds, title="t", now=NOW)


def test_characters_xml_cannot_carry_are_dropped() -> None:
    doc = render_opml([OpmlFeed("https://x.test/", "bad\x00\x1fchars\ufffe")], title="t", now=NOW)
    assert parse_opml(doc.encode())[0].title == "badchars"


# --- properties ----------------------------------------------------------------------------------

# Text XML 1.0 can carry; parsing strips titles and folder names, so generate them stripped.
xml_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff")
    | st.sampled_from("\t\n\r"),
    min_size=1,
    max_size=30,
)
names = xml_text.map(str.strip).filter(bool)
urls = st.builds(
    "https://{}.test/{}".format,
    st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True),
    st.text("abc/?&=%#<>\"'", max_size=20),
)
opml_feeds = st.builds(
    OpmlFeed,
    url=urls,
    title=st.none() | names,
    html_url=st.none() | urls,
    category=st.lists(names, max_size=3).map(tuple),
)


@given(st.lists(opml_feeds, max_size=15), names)
def test_render_then_parse_round_trips(feeds: list[OpmlFeed], title: str) -> None:
    assume(all(f.title != f.url for f in feeds))
    assert parse_opml(render_opml(feeds, title=title, now=NOW).encode("utf-8")) == feeds


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_parse_error(data: bytes) -> None:
    try:
        result = parse_opml(data)
    except ParseError as exc:
        assert exc.code == "bad_opml"
    else:
        assert isinstance(result, list)


@given(st.text(max_size=60))
def test_arbitrary_opml_text_parses_or_raises_parse_error(inner: str) -> None:
    data = f"<opml><body>{inner}</body></opml>".encode("utf-8", "surrogatepass")
    try:
        result = parse_opml(data)
    except ParseError as exc:
        assert exc.code == "bad_opml"
    else:
        assert all(isinstance(feed, OpmlFeed) for feed in result)


def test_feed_url_limit_matches_the_column() -> None:
    from services.db.models import URL_LENGTH

    assert MAX_URL_CHARS == URL_LENGTH
    assert normalise_feed_url(" HTTPS://Ex.TEST/a?b#frag ") == "https://ex.test/a?b"
