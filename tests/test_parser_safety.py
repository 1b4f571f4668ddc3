"""parse_feed against hostile input (RELIABILITY rows 32-35): entity bombs, XXE, huge feeds."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.errors import ParseError
from services.sources.feed import MAX_TITLE_CHARS, ParsedFeed, parse_feed

REPO = Path(__file__).resolve().parent.parent
CODES = {"not_a_feed", "parse_error", "entities_forbidden"}
CANARY = "CANARY-7f3a9c-secret"
GUID = '<guid isPermaLink="false">'


def billion_laughs() -> bytes:
    """The classic 10-level ``lol9`` document (~1 KB, 10**9 "lol"s once expanded)."""
    refs = ["&lol;" * 10] + [f"&lol{n};" * 10 for n in range(1, 9)]
    decls = ['<!ENTITY lol "lol">'] + [
        f'<!ENTITY lol{n} "{ref}">' for n, ref in enumerate(refs, start=1)
    ]
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE rss [\n' + "\n".join(decls) + "\n]>\n"
        '<rss version="2.0"><channel><title>&lol9;</title>'
        "<item><title>&lol9;</title><link>https://laughs.example/1</link></item>"
        "</channel></rss>"
    ).encode()


def quadratic_blowup(entity_chars: int = 50_000, refs: int = 50_000) -> bytes:
    """One flat 50,000-char entity referenced 50,000 times (~250 KB; 2.5 GB expanded)."""
    return (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "{"A" * entity_chars}">]>'
        '<rss version="2.0"><channel><title>t</title><item><title>'
        + "&a;" * refs
        + "</title><link>https://q.example/</link></item></channel></rss>"
    ).encode()


def rss(items: str, *, title: str = "c", tail: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>{title}</title><link>https://s.example/</link>{items}{tail}</channel></rss>"
    ).encode()


def all_text(feed: ParsedFeed) -> str:
    return repr(feed)


# ---- entity bombs: rejected fast with bounded memory (rows 32, 33) --------------------------

_MEASURE = """
import json, resource, sys, time
from services.core.errors import ParseError
from services.sources.feed import parse_feed
body = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
try:
    parse_feed(body, url="https://bomb.example/")
    code = None
except ParseError as exc:
    code = exc.code
seconds = time.monotonic() - started
grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"code": code, "seconds": seconds, "grown_mb": grown_kb / 1024}))
"""


@pytest.mark.parametrize(
    ("make", "size"),
    [(billion_laughs, (500, 2_000)), (quadratic_blowup, (150_000, 300_000))],
    ids=["billion_laughs", "quadratic_blowup"],
)
def test_entity_bombs_are_rejected_fast_in_bounded_memory(
    make: Callable[[], bytes], size: tuple[int, int], tmp_path: Path
) -> None:
    body = make()
    assert size[0] <= len(body) <= size[1]
    bomb = tmp_path / "bomb.xml"
    bomb.write_bytes(body)
    # A fresh process: ru_maxrss is a high-water mark, meaningless after earlier tests.
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(bomb)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    result = json.loads(run.stdout)
    assert result["code"] == "entities_forbidden"
    assert result["seconds"] < 1.0
    assert result["grown_mb"] < 100


# ---- XXE and external DTDs (row 34) ---------------------------------------------------------


class _Canary(BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = f'<!ENTITY x "{CANARY}"><!ENTITY % p "">'.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/xml-dtd")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def canary_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback server whose every request is recorded (there should be none)."""
    hits: list[str] = []
    handler = type("Handler", (_Canary,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def canary_file(tmp_path: Path) -> Path:
    path = tmp_path / "canary.txt"
    path.write_text(CANARY)
    return path


def test_xxe_documents_are_rejected_and_leak_nothing(
    canary_server: tuple[str, list[str]], canary_file: Path
) -> None:
    base, hits = canary_server
    documents = [
        f'<!DOCTYPE rss [<!ENTITY x SYSTEM "file://{canary_file}">]>',
        f'<!DOCTYPE rss [<!ENTITY x SYSTEM "{canary_file}">]>',
        f'<!DOCTYPE rss [<!ENTITY % x SYSTEM "{base}/param.dtd"> %x;]>',
        f'<!DOCTYPE rss SYSTEM "{base}/evil.dtd" [<!ENTITY y SYSTEM "file://{canary_file}">]>',
        f'<!DOCTYPE rss PUBLIC "-//X//Y" "{base}/pub.dtd" [<!ENTITY x SYSTEM "{base}/e">]>',
    ]
    for doctype in documents:
        body = (
            f'<?xml version="1.0"?>{doctype}<rss version="2.0"><channel><title>&x;</title>'
            "<item><title>&x;</title><link>https://x.example/1</link></item></channel></rss>"
        ).encode()
        with pytest.raises(ParseError) as info:
            parse_feed(body, url="https://xxe.example/")
        assert info.value.code == "entities_forbidden", doctype
        assert CANARY not in str(info.value)
    assert hits == []


def test_external_dtd_is_never_fetched(canary_server: tuple[str, list[str]]) -> None:
    """A bare external DTD is allowed (old RSS 0.91 feeds have one), but never loaded."""
    base, hits = canary_server
    for ref in ("&x;", ""):
        body = (
            f'<?xml version="1.0"?><!DOCTYPE rss SYSTEM "{base}/evil.dtd"><rss version="2.0">'
            f"<channel><title>t{ref}</title><item><title>one{ref}</title>"
            "<link>https://x.example/1</link></item></channel></rss>"
        ).encode()
        try:
            feed = parse_feed(body, url="https://xxe.example/")
        except ParseError as exc:
            assert CANARY not in str(exc)
        else:
            assert CANARY not in all_text(feed)
    assert hits == []


# ---- hidden declarations, huge and odd feeds (row 35) ---------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "cp037"])
def test_a_re_encoded_entity_declaration_is_still_rejected(encoding: str) -> None:
    declared = encoding.removesuffix("-le").removesuffix("-be")
    body = (
        f'<?xml version="1.0" encoding="{declared}"?><!DOCTYPE rss [<!ENTITY a "b">]>'
        '<rss version="2.0"><channel><item><title>&a;</title></item></channel></rss>'
    ).encode(encoding)
    assert b"<!ENTITY" not in body  # invisible to a check on the raw bytes
    with pytest.raises(ParseError) as info:
        parse_feed(body, url="https://hidden.example/")
    assert info.value.code == "entities_forbidden"


def test_a_hundred_thousand_items_are_cut_to_max_items_quickly() -> None:
    items = "".join(
        f"<item>{GUID}g{i}</guid><title>t{i}</title><link>https://x.example/{i}</link>"
        f"<pubDate>Mon, 01 Jan 2024 00:00:00 GMT</pubDate></item>"
        for i in range(100_000)
    )
    body = rss(items, tail="<ttl>30</ttl>")  # after the items: the document's tail survives
    started = time.monotonic()
    feed = parse_feed(body, url="https://many.example/")
    assert time.monotonic() - started < 5.0
    assert [i.item_key for i in feed.items] == [f"g{i}" for i in range(1000)]
    assert feed.ttl_seconds == 1800.0
    assert len(feed.published_times) == 1000
    small = parse_feed(body, url="https://many.example/", max_items=3)
    assert [i.title for i in small.items] == ["t0", "t1", "t2"]


def test_item_cut_ignores_closing_tags_in_cdata_and_comments() -> None:
    items = "".join(
        f"<item>{GUID}g{i}</guid><description><![CDATA[a </item></item> b]]></description>"
        f"<!-- </item> --></item>"
        for i in range(10)
    )
    feed = parse_feed(rss(items), url="https://c.example/", max_items=4)
    assert [i.item_key for i in feed.items] == ["g0", "g1", "g2", "g3"]
    assert feed.items == parse_feed(rss(items), url="https://c.example/").items[:4]


def test_atom_entries_are_cut_too() -> None:
    entries = "".join(f"<entry><id>urn:e:{i}</id><title>e{i}</title></entry>" for i in range(50))
    body = f'<feed xmlns="http://www.w3.org/2005/Atom"><title>a</title>{entries}</feed>'.encode()
    feed = parse_feed(body, url="https://a.example/", max_items=5)
    assert [i.title for i in feed.items] == [f"e{i}" for i in range(5)]
    assert feed.version.startswith("atom")


def test_a_five_megabyte_title_is_clipped() -> None:
    big = "T" * (5 * 1024 * 1024)
    body = rss(f"<item><guid>1</guid><title>{big}</title></item>", title=big)
    started = time.monotonic()
    feed = parse_feed(body, url="https://big.example/")
    assert time.monotonic() - started < 5.0
    (item,) = feed.items
    assert item.title == "T" * MAX_TITLE_CHARS
    assert feed.title is not None and len(feed.title) == MAX_TITLE_CHARS


@pytest.mark.parametrize(
    "body",
    [
        rss("<item><guid>1</guid><description>" + "<a>" * 10_000 + "</a>" * 10_000),
        rss("<item><guid>1</guid></item>" + "<x>" * 10_000),
        b"<rss>" + b"<channel>" * 10_000,
    ],
    ids=["nested_in_item", "unclosed_after_item", "deep_garbage"],
)
def test_deep_nesting_does_not_crash(body: bytes) -> None:
    try:
        parse_feed(body, url="https://deep.example/")
    except ParseError as exc:
        assert exc.code in CODES


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("<ttl>60</ttl>", 3600.0),
        ("<ttl> 15 </ttl>", 900.0),
        ("", None),
        ("<ttl>0</ttl>", None),
        ("<ttl>-5</ttl>", None),
        ("<ttl>soon</ttl>", None),
        ("<ttl>1e999</ttl>", None),
        ("<ttl>99999999999999</ttl>", None),
        ("<sy:updatePeriod>hourly</sy:updatePeriod>", 3600.0),
        (
            "<sy:updatePeriod>daily</sy:updatePeriod><sy:updateFrequency>4</sy:updateFrequency>",
            21600.0,
        ),
        ("<sy:updateFrequency>2</sy:updateFrequency>", 43200.0),  # period defaults to daily
        ("<sy:updatePeriod>fortnightly</sy:updatePeriod>", None),
        ("<ttl>5</ttl><sy:updatePeriod>daily</sy:updatePeriod>", 300.0),  # <ttl> wins
    ],
)
def test_ttl_seconds(channel: str, expected: float | None) -> None:
    body = (
        '<rss version="2.0" xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"><channel>'
        f"<title>c</title>{channel}<item><guid>1</guid></item></channel></rss>"
    ).encode()
    assert parse_feed(body, url="https://t.example/").ttl_seconds == expected


# ---- every feedparser.parse call gets a BytesIO (RELIABILITY finding 2) ---------------------


def feedparser_parse_calls(tree: ast.AST) -> list[ast.Call]:
    """Calls of ``feedparser.parse`` however imported (``import feedparser as fp``,
    ``from feedparser import parse as p``, ``feedparser.api.parse``)."""
    modules: set[str] = {"feedparser"}
    functions: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if a.name == "feedparser")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("feedparser"):
            functions.update(a.asname or a.name for a in node.names if a.name == "parse")
            modules.update(a.asname or a.name for a in node.names if a.name == "api")
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in functions:
            calls.append(node)
        elif isinstance(func, ast.Attribute) and func.attr == "parse":
            root = func.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in modules:
                calls.append(node)
    return calls


def wraps_bytesio(call: ast.Call) -> bool:
    if not call.args or isinstance(call.args[0], ast.Starred):
        return False
    arg = call.args[0]
    return isinstance(arg, ast.Call) and (
        (isinstance(arg.func, ast.Attribute) and arg.func.attr == "BytesIO")
        or (isinstance(arg.func, ast.Name) and arg.func.id == "BytesIO")
    )


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ("import feedparser, io\nfeedparser.parse(io.BytesIO(b))", True),
        ("from io import BytesIO\nimport feedparser\nfeedparser.parse(BytesIO(b), x=1)", True),
        ("import feedparser\nfeedparser.parse(body)", False),
        ("import feedparser as fp\nfp.parse(body.decode())", False),
        ("from feedparser import parse as p\np(url)", False),
        ("import feedparser\nfeedparser.api.parse(b)", False),
        ("import feedparser\nfeedparser.parse(url_file_stream_or_string=io.BytesIO(b))", False),
    ],
)
def test_the_bytesio_guard_itself(source: str, ok: bool) -> None:
    (call,) = feedparser_parse_calls(ast.parse(source))
    assert wraps_bytesio(call) is ok


def test_feedparser_only_ever_gets_a_bytesio() -> None:
    found = []
    for folder in ("services", "workers"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for call in feedparser_parse_calls(ast.parse(path.read_text(encoding="utf-8"))):
                found.append(path)
                assert wraps_bytesio(call), (
                    f"{path.relative_to(REPO)}:{call.lineno}: feedparser.parse must be given "
                    "io.BytesIO(...): a str or bytes argument can make it open a file or URL"
                )
    assert found, "expected at least one feedparser.parse call"


# ---- properties -----------------------------------------------------------------------------


def check(body: bytes, *, max_items: int = 1000) -> ParsedFeed | None:
    """Parse; the only allowed failure is a ParseError with a known code. Check the caps."""
    try:
        feed = parse_feed(body, url="https://fuzz.example/feed", max_items=max_items)
    except ParseError as exc:
        assert exc.code in CODES
        return None
    assert isinstance(feed, ParsedFeed)
    assert len(feed.items) <= max_items
    assert feed.ttl_seconds is None or feed.ttl_seconds > 0
    for item in feed.items:
        assert item.title is None or len(item.title) <= MAX_TITLE_CHARS
        assert item.url is None or item.url.startswith(("http://", "https://"))
    return feed


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes(body: bytes) -> None:
    check(body)


FRAGMENTS = [
    '<?xml version="1.0"?>', '<?xml version="1.0" encoding="utf-16"?>', '<rss version="2.0">',
    "</rss>", "<channel>", "</channel>", "<item>", "</item>", "<title>", "</title>", "<link>",
    "</link>", "<guid>", "</guid>", "<description>", "</description>", "<ttl>", "</ttl>",
    "<pubDate>", "</pubDate>", "Mon, 01 Jan 2024 10:00:00 GMT", "https://a.example/x", "60",
    '<feed xmlns="http://www.w3.org/2005/Atom">', "</feed>", "<entry>", "</entry>",
    '<link href="/rel"/>', "<id>", "</id>", "<updated>2024-01-01T00:00:00Z</updated>",
    '<content type="html">', '<content type="xhtml">', "</content>", "<rdf:RDF>",
    "</rdf:RDF>", "<![CDATA[", "]]>", "<!--", "-->", "&amp;", "&lt;", "&#x26;", "&#0;", "&x;",
    "<!DOCTYPE rss>", '<!DOCTYPE rss SYSTEM "http://127.0.0.1:9/x.dtd">', "<!ENTITY x 'y'>",
    "<!doctype rss [", "]>", "<script>alert(1)</script>", 'javascript:alert(1)', "<", ">", "&",
    "\x00", "\ufeff", " ", "\n",
]  # fmt: skip
fragment = st.sampled_from(FRAGMENTS) | st.text(max_size=12)
encodings = st.sampled_from(["utf-8", "utf-16", "utf-16-be", "latin-1", "cp1252", "utf-7"])


@settings(max_examples=200, deadline=None)
@given(st.lists(fragment, max_size=60), encodings, st.integers(1, 5))
def test_xmlish_documents(parts: list[str], encoding: str, max_items: int) -> None:
    text = "".join(parts)
    body = text.encode(encoding, errors="replace")
    try:
        feed = parse_feed(body, url="https://fuzz.example/", max_items=max_items)
    except ParseError as exc:
        assert exc.code in CODES
        feed = None
    if "<!entity" in text.lower() and encoding != "utf-7" and text.strip():
        assert feed is None
    check(body, max_items=max_items)


safe_text = st.text(alphabet="ab <>&]/é\u4e2d", max_size=20)
cdata_text = safe_text.filter(lambda s: "]]>" not in s)


@st.composite
def wellformed_feed(draw: st.DrawFn) -> tuple[bytes, int]:
    """A well-formed RSS or Atom document whose CDATA and comments mention closing tags."""
    atom = draw(st.booleans())
    tag = "entry" if atom else "item"
    entries = []
    for i in range(draw(st.integers(0, 12))):
        guid = draw(st.sampled_from([f"g{i}", "dup", ""]))
        title = escape(draw(safe_text))
        cdata = draw(cdata_text | st.just(f"</{tag}>"))
        comment = draw(st.sampled_from(["", f"<!-- </{tag}> -->"]))
        if atom:
            fields = f"<id>{guid}</id><title>{title}</title><summary><![CDATA[{cdata}]]></summary>"
        else:
            fields = f"<guid>{guid}</guid><title>{title}</title><description><![CDATA[{cdata}]]>"
            fields += "</description>"
        entries.append(f"<{tag}>{fields}{comment}</{tag}>")
    items = "".join(entries)
    if atom:
        doc = f'<feed xmlns="http://www.w3.org/2005/Atom"><title>f</title>{items}</feed>'
    else:
        doc = f'<rss version="2.0"><channel><title>f</title>{items}<ttl>7</ttl></channel></rss>'
    return doc.encode(), draw(st.integers(1, 14))


@settings(max_examples=150, deadline=None)
@given(wellformed_feed())
def test_item_cap_equals_taking_the_first_items(case: tuple[bytes, int]) -> None:
    """Cutting items out of the bytes gives what parsing everything and slicing would."""
    body, max_items = case
    full = check(body, max_items=10_000)
    capped = check(body, max_items=max_items)
    if full is None:
        assert capped is None
        return
    assert capped is not None
    assert capped.items == full.items[: len(capped.items)]
    assert (capped.title, capped.ttl_seconds, capped.version) == (
        full.title, full.ttl_seconds, full.version,
    )  # fmt: skip
