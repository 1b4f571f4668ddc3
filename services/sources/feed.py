"""Feed parser: RSS/Atom bytes (+ the URL they came from) -> ParsedFeed. Never fetches."""

from __future__ import annotations

import calendar
import io
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import feedparser
from feedparser.encodings import convert_to_utf8

from services.core.errors import ParseError
from services.core.items import item_content_hash, item_key

MAX_TITLE_CHARS = 1000
MAX_AUTHOR_CHARS = 1000
MAX_CONTENT_CHARS = 1024 * 1024
MAX_URL_CHARS = 2048
HTML = "text/html"
PLAIN = "text/plain"

# An internal DTD subset or any entity declaration: feedparser's loose fallback parser would
# expand such entities without limit (quadratic blowup, RELIABILITY finding 3), so such
# documents are refused outright. No real news feed needs one.
_ENTITY_DECL = re.compile(rb"<!ENTITY|<!DOCTYPE[^>\[]*\[", re.IGNORECASE)
# The document element, after the XML declaration, comments and a DOCTYPE. Single-character
# whitespace alternative on purpose: `(\s+)*` backtracks exponentially.
_ROOT = re.compile(
    rb"\A(?:\s|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>)*<([A-Za-z_][\w.:-]*)", re.S | re.I
)
_FEED_ROOTS = frozenset({b"rss", b"feed", b"rdf", b"channel"})
# RSS full-content elements (content:encoded, xhtml:body, fullitem) under any prefix.
_RSS_CONTENT = re.compile(rb"<(?:[\w.-]+:)?(?:encoded|fullitem|body)[\s>/]")
_SNIFF_BYTES = 16 * 1024
# A closing item/entry tag (any prefix) outside CDATA sections and comments; an unterminated
# CDATA section or comment swallows the rest of the document (`|.*`), so the scan stays linear.
_ITEM_END = re.compile(
    rb"<!\[CDATA\[(?:.*?\]\]>|.*)|<!--(?:.*?-->|.*)|(</(?:[\w.-]+:)?(?:item|entry)\s*>)", re.S
)
# sy:updatePeriod (RSS 1.0 syndication module) in seconds; a month and a year as 30 and 365 days.
_SY_PERIODS = {
    "hourly": 3600.0,
    "daily": 86_400.0,
    "weekly": 7 * 86_400.0,
    "monthly": 30 * 86_400.0,
    "yearly": 365 * 86_400.0,
}
_COUNT = re.compile(r"\d{1,9}")
# Bozo reasons that say nothing about the XML itself.
_BENIGN_BOZO = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)


@dataclass(frozen=True)
class FeedItem:
    """One entry of a feed, as published."""

    item_key: str
    content_hash: str
    url: str | None
    title: str | None
    summary: str | None
    content: str | None
    content_type: str
    published: datetime | None
    author: str | None


@dataclass(frozen=True)
class ParsedFeed:
    """A feed document: its own metadata and its distinct items, in document order.

    ``ttl_seconds`` is the publisher's own "don't poll more often" hint: RSS ``<ttl>``
    (minutes), else ``sy:updatePeriod`` / ``sy:updateFrequency``; None when absent or unusable.
    """

    title: str | None
    site_url: str | None
    items: tuple[FeedItem, ...]
    version: str = ""
    ttl_seconds: float | None = None

    @property
    def published_times(self) -> tuple[datetime, ...]:
        """The items' known publication times, for ``schedule.publishing_interval``."""
        return tuple(item.published for item in self.items if item.published is not None)


def parse_feed(
    body: bytes, *, url: str, max_items: int = 1000, content_type: str | None = None
) -> ParsedFeed:
    """Parse an RSS 0.9x/1.0/2.0 or Atom document.

    Args:
        body: the document as fetched (decompressed).
        url: where it came from; relative links resolve against it. Never opened.
        max_items: items beyond this many are ignored (cut out before feedparser builds them).
        content_type: the HTTP Content-Type, only its charset parameter is used.

    Raises:
        ParseError: code ``not_a_feed`` (empty, HTML, garbage), ``entities_forbidden``
            (DTD internal subset or entity declaration) or ``parse_error`` (broken XML that
            yields no entries).
    """
    if not body.strip():
        raise ParseError("the document is empty", code="not_a_feed")
    headers = {"content-type": _xml_content_type(content_type), "content-location": url}
    # Decode exactly as feedparser will, so the entity check sees what the parser would see
    # (a UTF-16 or UTF-7 document hides "<!ENTITY" from a check on the raw bytes).
    state: dict[str, Any] = {}
    data = convert_to_utf8(headers, body, state)
    if state.get("encoding"):
        headers["content-type"] = "application/xml; charset=utf-8"
    if _ENTITY_DECL.search(data):
        raise ParseError(
            "the document declares entities or a DTD subset", code="entities_forbidden"
        )
    data = _cap_items(data, max_items)
    try:
        # BytesIO, never bytes or str: feedparser open()s a str/bytes argument that names a file.
        parsed = feedparser.parse(
            io.BytesIO(data),
            response_headers=headers,
            resolve_relative_uris=True,
            sanitize_html=True,
        )
    except Exception as exc:  # feedparser is not supposed to raise; a deep document might
        raise ParseError(f"feed parser failed: {exc!r}"[:500], code="parse_error") from None
    _check_usable(parsed, data)
    return ParsedFeed(
        title=_clip(_text(parsed.feed.get("title")), MAX_TITLE_CHARS),
        site_url=_http_url(parsed.feed.get("link")),
        items=_items(parsed.entries, max_items, _full_content_kind(parsed, data)),
        version=str(parsed.get("version") or ""),
        ttl_seconds=_ttl_seconds(parsed.feed),
    )


def _xml_content_type(content_type: str | None) -> str:
    """``application/xml`` with the server's charset, if any.

    The media type is not passed on: RFC 3023 makes feedparser read ``text/xml`` without a
    charset as US-ASCII, which mangles the many UTF-8 feeds served that way.
    """
    charset = ""
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip("\"'"):
            charset = value.strip().strip("\"'")
    return f"application/xml; charset={charset}" if charset else "application/xml"


def _cap_items(data: bytes, max_items: int) -> bytes:
    """The document without its items past ``max_items``.

    feedparser builds every entry before any can be dropped (100,000 items: ~15 s, ~170 MB),
    so the surplus is cut out of the bytes: from the end of the ``max_items``-th closing
    item/entry tag to the end of the last one. The tail (closing tags, trailing channel
    elements) is kept, so a well-formed document stays well-formed.
    """
    if max_items < 1:
        return data
    cut = last = count = 0
    for match in _ITEM_END.finditer(data):
        if match.group(1) is not None:
            count += 1
            last = match.end()
            if count == max_items:
                cut = last
    return data[:cut] + data[last:] if count > max_items else data


def _ttl_seconds(feed: Any) -> float | None:
    minutes = _count(feed.get("ttl"))
    if minutes is not None:
        return minutes * 60.0
    period_name = _text(feed.get("sy_updateperiod"))
    frequency = _count(feed.get("sy_updatefrequency"))
    if period_name is None and frequency is None:
        return None
    # The module's defaults: daily, once per period.
    period = _SY_PERIODS.get((period_name or "daily").lower())
    return None if period is None else period / (frequency or 1)


def _count(value: Any) -> int | None:
    """A positive whole number written in a feed, or None."""
    text = _text(value)
    if text is None or not _COUNT.fullmatch(text):
        return None
    return int(text) or None


def _check_usable(parsed: Any, data: bytes) -> None:
    if parsed.entries:
        return  # bozo or not, the entries it found are worth having
    exc = parsed.get("bozo_exception")
    broken = bool(parsed.get("bozo")) and not isinstance(exc, _BENIGN_BOZO)
    if parsed.get("version") and not broken:
        return  # a well-formed feed with no entries yet
    match = _ROOT.match(data[:_SNIFF_BYTES])
    root = match.group(1).rsplit(b":", 1)[-1].lower() if match else b""
    if root not in _FEED_ROOTS:
        shown = root.decode("ascii", "replace") if root else "no XML element"
        raise ParseError(f"not an RSS or Atom document ({shown})", code="not_a_feed")
    raise ParseError(f"malformed feed with no entries: {exc}"[:500], code="parse_error")


def _full_content_kind(parsed: Any, data: bytes) -> str:
    """Which of feedparser's ``content`` blocks are the article: ``any``, ``markup`` or ``none``.

    feedparser files a second description-like element (``media:description``, a photo
    caption) under ``content`` as text/plain. Atom's ``<content>`` is real whatever its type;
    in RSS only markup from an actual content element is.
    """
    if str(parsed.get("version") or "").startswith("atom"):
        return "any"
    return "markup" if _RSS_CONTENT.search(data) else "none"


def _items(entries: list[Any], max_items: int, content_kind: str) -> tuple[FeedItem, ...]:
    items: list[FeedItem] = []
    seen: set[str] = set()
    for entry in entries[:max_items]:
        item = _item(entry, content_kind)
        # A feed may list one GUID twice; the first occurrence wins.
        if item is not None and item.item_key not in seen:
            seen.add(item.item_key)
            items.append(item)
    return tuple(items)


def _item(entry: Any, content_kind: str) -> FeedItem | None:
    guid = _text(entry.get("id"))
    link = _text(entry.get("link"))
    title = _clip(_text(entry.get("title")), MAX_TITLE_CHARS)
    summary = _clip(_text(entry.get("summary")), MAX_CONTENT_CHARS)
    content, content_detail_type = _content(entry, content_kind)
    if not (guid or link or title or summary or content):
        return None
    url = _http_url(link)
    detail = entry.get("summary_detail") or {}
    media_type = content_detail_type if content else detail.get("type")
    return FeedItem(
        item_key=item_key(guid, link, title, content or summary),
        content_hash=item_content_hash(title, url, summary, content),
        url=url,
        title=title,
        summary=summary,
        content=content,
        content_type=PLAIN if media_type == PLAIN else HTML,
        published=_time(entry.get("published_parsed") or entry.get("updated_parsed")),
        author=_clip(_text(entry.get("author")), MAX_AUTHOR_CHARS),
    )


def _content(entry: Any, kind: str) -> tuple[str | None, str | None]:
    """The full content (``content:encoded``, Atom ``content``), HTML preferred."""
    blocks = [
        b
        for b in entry.get("content") or []
        if _text(b.get("value"))
        and (kind == "any" or (kind == "markup" and b.get("type") != PLAIN))
    ]
    if not blocks:
        return None, None
    block = next((b for b in blocks if b.get("type") != PLAIN), blocks[0])
    return _clip(_text(block.get("value")), MAX_CONTENT_CHARS), block.get("type")


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def _clip(value: str | None, limit: int) -> str | None:
    return value[:limit] if value is not None else None


def _http_url(value: Any) -> str | None:
    """Only absolute http(s) URLs leave the parser; ``javascript:`` and friends do not."""
    text = _text(value)
    if text is None or len(text) > MAX_URL_CHARS:
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    return text if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def _time(value: time.struct_time | None) -> datetime | None:
    """feedparser's UTC struct_time -> aware UTC datetime (None when absent or absurd)."""
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
    except (OverflowError, ValueError, OSError):
        return None
