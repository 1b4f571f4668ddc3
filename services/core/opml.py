"""OPML subscription lists: parse (refusing DTDs, so no XML bombs) and render, stdlib only."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from services.core.errors import InvalidInput, ParseError
from services.core.feedurl import normalise_feed_url

CODE = "bad_opml"
MAX_TITLE_CHARS = 1000
_DECLARATIONS = (b"<!DOCTYPE", b"<!ENTITY")
_REFUSED = "OPML must not contain DOCTYPE or ENTITY declarations (refused: possible XML bomb)"
# Characters XML 1.0 cannot carry at all, not even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;",
     "\t": "&#9;"}
)  # fmt: skip
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


@dataclass(frozen=True)
class OpmlFeed:
    """One subscription: its feed URL, title, site and the folders it sits in."""

    url: str
    title: str | None = None
    html_url: str | None = None
    category: tuple[str, ...] = ()


class _Refused(Exception):
    pass


class _NoDoctype(ET.TreeBuilder):
    """Stops at a DOCTYPE even when the byte check was dodged by an encoding (UTF-16)."""

    def doctype(self, name: str, pubid: str, system: str) -> None:
        raise _Refused


def parse_opml(data: bytes) -> list[OpmlFeed]:
    """Every outline with an ``xmlUrl``, in document order, nested folders flattened.

    The title is the ``title`` attribute, else ``text`` (stripped; ``None`` when empty or
    just the URL again); the category is the path of folder names above the outline.

    Raises:
        ParseError: code ``bad_opml``: a DTD, malformed XML, or a root other than ``<opml>``
            with a ``<body>``.
    """
    upper = data.upper()
    if any(marker in upper for marker in _DECLARATIONS):
        raise ParseError(_REFUSED, code=CODE)
    parser = ET.XMLParser(target=_NoDoctype())
    try:
        parser.feed(data)
        root = parser.close()
    except _Refused:
        raise ParseError(_REFUSED, code=CODE) from None
    except (ET.ParseError, ValueError, LookupError) as exc:
        raise ParseError(f"OPML is not well-formed XML: {exc}", code=CODE) from None
    if _local(root.tag) != "opml":
        raise ParseError(f"root element is <{_local(root.tag)}>, not <opml>", code=CODE)
    body = next((child for child in root if _local(child.tag) == "body"), None)
    if body is None:
        raise ParseError("OPML has no <body> element", code=CODE)
    return list(_outlines(body))


def _local(tag: object) -> str:
    """The element name without its namespace (comments and PIs have non-str tags)."""
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _outlines(body: ET.Element) -> Iterator[OpmlFeed]:
    # An explicit stack: a hostile file may nest outlines far deeper than the recursion limit.
    stack: list[tuple[Iterator[ET.Element], tuple[str, ...]]] = [(iter(body), ())]
    while stack:
        children, path = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            continue
        if _local(child.tag) != "outline":
            continue
        attrs = {name.lower(): value for name, value in child.attrib.items()}
        name = (attrs.get("title") or "").strip() or (attrs.get("text") or "").strip()
        url = attrs.get("xmlurl")
        if url is not None:
            url = url.strip()
            html_url = (attrs.get("htmlurl") or "").strip() or None
            title = name if name and name != url else None
            yield OpmlFeed(url=url, title=title, html_url=html_url, category=path)
        if len(child):
            stack.append((iter(child), (*path, name)))


def _attr(value: str) -> str:
    return _NOT_XML.sub("", value).translate(_ATTR_ESCAPES)


class OpmlWriter:
    """Renders OPML 2.0 in pieces, so a long list can be streamed page by page.

    Consecutive feeds of the same category share one folder outline; feed order is kept.
    """

    def __init__(self) -> None:
        self._open: tuple[str, ...] = ()

    def head(self, *, title: str, now: datetime) -> str:
        """The XML declaration, ``<head>`` and the opening ``<body>``."""
        text = _NOT_XML.sub("", title).translate(_TEXT_ESCAPES)
        created = format_datetime(now.astimezone(UTC), usegmt=True)
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">\n  <head>\n'
            f"    <title>{text}</title>\n    <dateCreated>{created}</dateCreated>\n"
            "  </head>\n  <body>\n"
        )

    def feeds(self, feeds: Iterable[OpmlFeed]) -> str:
        """Outlines for ``feeds``, opening and closing folders as the category changes."""
        parts: list[str] = []
        for feed in feeds:
            parts.extend(self._move_to(feed.category))
            attrs = ['type="rss"']
            if feed.title is None:
                attrs.append(f'text="{_attr(feed.url)}"')
            else:
                attrs.append(f'text="{_attr(feed.title)}" title="{_attr(feed.title)}"')
            attrs.append(f'xmlUrl="{_attr(feed.url)}"')
            if feed.html_url:
                attrs.append(f'htmlUrl="{_attr(feed.html_url)}"')
            parts.append(f"{self._indent()}<outline {' '.join(attrs)}/>\n")
        return "".join(parts)

    def tail(self) -> str:
        """Closes any open folder, ``<body>`` and ``<opml>``."""
        return "".join(self._move_to(())) + "  </body>\n</opml>\n"

    def _indent(self) -> str:
        return "  " * (2 + len(self._open))

    def _move_to(self, category: tuple[str, ...]) -> Iterator[str]:
        common = 0
        while (
            common < min(len(self._open), len(category)) and self._open[common] == category[common]
        ):
            common += 1
        while len(self._open) > common:
            self._open = self._open[:-1]
            yield f"{self._indent()}</outline>\n"
        for name in category[common:]:
            yield f'{self._indent()}<outline text="{_attr(name)}" title="{_attr(name)}">\n'
            self._open = (*self._open, name)


def render_opml(feeds: Iterable[OpmlFeed], *, title: str, now: datetime) -> str:
    """A whole OPML 2.0 document listing ``feeds`` (see :class:`OpmlWriter`)."""
    writer = OpmlWriter()
    return writer.head(title=title, now=now) + writer.feeds(feeds) + writer.tail()


@dataclass(frozen=True)
class Screened:
    """A batch of OPML entries sorted for import."""

    new: list[OpmlFeed]  # valid, URL normalised, first time seen in this import
    repeated: int  # valid but already seen earlier in the same import
    invalid: list[tuple[str, str]]  # (url as given, why it was refused)


def screen(entries: Iterable[OpmlFeed], seen: set[str]) -> Screened:
    """Normalise and validate each URL, dropping repeats; ``seen`` is updated in place.

    An invalid URL never stops the import: it is reported with the reason and skipped.
    """
    new: list[OpmlFeed] = []
    invalid: list[tuple[str, str]] = []
    repeated = 0
    for entry in entries:
        try:
            url = normalise_feed_url(entry.url)
        except InvalidInput as exc:
            invalid.append((entry.url[:300], str(exc)))
            continue
        if url in seen:
            repeated += 1
            continue
        seen.add(url)
        title = entry.title[:MAX_TITLE_CHARS] if entry.title else None
        new.append(OpmlFeed(url, title, entry.html_url, entry.category))
    return Screened(new=new, repeated=repeated, invalid=invalid)
