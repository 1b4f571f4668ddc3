"""An article page's main text and metadata (trafilatura), its trusted canonical URL, language.

Runs in the workers on HTML the poller fetched; never fetches anything itself.
"""

from __future__ import annotations

import html
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urljoin, urlsplit

import py3langid
import trafilatura

from services.core.urls import canonical_url

MAX_TITLE_CHARS = 1000
MAX_AUTHOR_CHARS = 1000
# Where <link rel=canonical> and og:url may sit: the head. Markup past it (user comments,
# embeds) must not be able to name the article's canonical URL.
MAX_HEAD_CHARS = 512 * 1024
# Fewer words than this say too little for py3langid to be trusted.
MIN_LANGUAGE_WORDS = 20
# py3langid is linear in the text; the opening of an article decides as well as all of it.
LANGUAGE_SAMPLE_CHARS = 10_000
# Lines longer than this are paragraphs, whatever they start with.
MAX_BOILERPLATE_CHARS = 200
MAX_HEADING_WORDS = 6  # a sign-up box's title ("Essential California")

# Leftover chrome that trafilatura keeps when a site puts it inside the article element.
# Each pattern matches a whole (short) line; dropped lines are kept aside, not lost.
SIGN_UP = re.compile(
    r"(?:sign up|subscribe|register)\b.*\b(?:newsletters?|e-?mails?|inbox|alerts?)\b.*", re.I
)
_OTHER_BOILERPLATE = (
    r"(?:read|see|watch|listen|more)(?: more| also| next)?\s*:.*",
    r"(?:read more|continue reading|keep reading)\b.*",
    r"(?:related(?: stories| articles| coverage| content)?|recommended|most read)(?:\s*:.*)?",
    r"(?:advertisement|advertising|sponsored(?: content)?|ad)\.?",
    r"(?:photo(?:graph)?s?|images?|pictures?|video|illustration|graphic)(?: credit)?\s*:.*",
    r"(?:follow us|share this(?: article| story)?|share on)\b.*",
    r"(?:©|copyright\s+(?:©|\(c\)|\d{4})).*",
)
BOILERPLATE_LINES = (SIGN_UP, *(re.compile(p, re.I) for p in _OTHER_BOILERPLATE))
# ccTLD second levels under which registrations happen (example.co.uk, example.com.au).
_SECOND_LEVELS = frozenset(
    ("co", "com", "net", "org", "gov", "govt", "edu", "ac", "ne", "or", "go", "gob", "mil"),
) | frozenset(("nic", "ltd", "plc", "sch", "nhs", "nom", "gv", "gen", "web"))
# py3langid labels that are not ISO 639-1, mapped to their macro-language where one exists.
_LANGUAGE_ALIASES = {"arz": "ar", "ary": "ar", "yue": "zh", "wuu": "zh", "uzs": "uz"}
_HEAD_END = re.compile(r"</head\s*>|<body[\s>]", re.IGNORECASE)
_META_TAG = re.compile(r"<(link|meta)\b([^<>]{0,4096})>", re.IGNORECASE)
_ATTR = re.compile(r"""([^\s"'<>/=]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))""")
_SPACE = re.compile(r"\s+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]")


@dataclass(frozen=True)
class PageArticle:
    """What an article page says about itself.

    ``text``: paragraphs separated by a blank line, headline and boilerplate lines removed.
    ``canonical_url``: the page's own canonical URL if it can be trusted (see
    :func:`trusted_canonical`), canonicalised; None otherwise. ``dropped``: the boilerplate
    lines taken out of the text.
    """

    text: str
    title: str | None
    author: str | None
    published: datetime | None
    canonical_url: str | None
    dropped: tuple[str, ...] = ()


def extract_page(markup: str, *, url: str | None) -> PageArticle | None:
    """The main text and metadata of an HTML page; None when it holds no main text.

    Args:
        markup: the page, decoded.
        url: where it was fetched from (after redirects): relative canonical links resolve
            against it and a canonical must be on its site.

    Comments, tables, images, links and formatting are left out, and trafilatura's precision
    mode keeps figure captions, credits, bylines and "related" boxes out of the text.
    """
    try:
        doc = trafilatura.bare_extraction(
            markup,
            url=url,
            include_comments=False,
            include_tables=False,
            include_images=False,
            include_links=False,
            favor_precision=True,
            with_metadata=True,
            date_extraction_params={"extensive_search": False, "original_date": True},
        )
    except Exception:  # a hostile page must cost its text, never the item
        return None
    if doc is None or isinstance(doc, dict):
        return None
    title = _clip(doc.title, MAX_TITLE_CHARS)
    lines, dropped = split_boilerplate(_lines(doc.text or "", title))
    if not lines:
        return None
    return PageArticle(
        text="\n\n".join(lines),
        title=title,
        author=_clip(doc.author, MAX_AUTHOR_CHARS),
        published=_date(doc.date),
        canonical_url=trusted_canonical(declared_canonical(markup), page_url=url),
        dropped=tuple(dropped),
    )


def _lines(text: str, title: str | None) -> list[str]:
    lines = [_SPACE.sub(" ", line).strip() for line in text.split("\n")]
    lines = [line for line in lines if line]
    # The headline is stored on its own; repeated as the body's first line it would be
    # counted twice by NER.
    if lines and title and _same_words(lines[0], title):
        lines = lines[1:]
    return lines


def split_boilerplate(lines: Iterable[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped): short lines matching ``BOILERPLATE_LINES`` are dropped, and so is
    the heading of a sign-up box (a short line without final punctuation just before it)."""
    kept: list[str] = []
    dropped: list[str] = []
    for line in lines:
        if len(line) > MAX_BOILERPLATE_CHARS or not any(
            p.fullmatch(line) for p in BOILERPLATE_LINES
        ):
            kept.append(line)
            continue
        if SIGN_UP.fullmatch(line) and kept and _is_heading(kept[-1]):
            dropped.append(kept.pop())
        dropped.append(line)
    return kept, dropped


def _is_heading(line: str) -> bool:
    return len(line.split()) <= MAX_HEADING_WORDS and not line.endswith(
        (".", "!", "?", ":", "”", '"')
    )


def declared_canonical(markup: str) -> str | None:
    """The page head's ``<link rel=canonical href>``, else its ``og:url``, as written."""
    end = _HEAD_END.search(markup, 0, MAX_HEAD_CHARS)
    head = markup[: end.start() if end else MAX_HEAD_CHARS]
    og_url = None
    for match in _META_TAG.finditer(head):
        attrs = _attrs(match.group(2))
        if match.group(1).lower() == "link":
            rels = attrs.get("rel", "").lower().split()
            if "canonical" in rels and attrs.get("href", "").strip():
                return attrs["href"].strip()
        elif og_url is None and attrs.get("property", attrs.get("name", "")).lower() == "og:url":
            og_url = attrs.get("content", "").strip() or None
    return og_url


def _attrs(raw: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for m in _ATTR.finditer(raw):
        value = next((v for v in m.group(2, 3, 4) if v is not None), "")
        found.setdefault(m.group(1).lower(), html.unescape(value))
    return found


def trusted_canonical(href: str | None, *, page_url: str | None) -> str | None:
    """``href`` canonicalised, if a page at ``page_url`` may claim it as its canonical URL.

    Trusted: an http(s) URL (relative ones resolve against the page) on the page's own site
    (same registrable domain, so ``m.`` and ``www.`` hosts agree; scheme and port may
    differ), not the site's root. Refused: another site (a page could otherwise attach
    itself to, or squat, any other publisher's article), and ``/`` (CMSes that point every
    page at the home page would merge all their articles into one).
    """
    if not href or not page_url:
        return None
    try:
        absolute = urljoin(page_url, href)
        target, page = urlsplit(absolute), urlsplit(page_url)
    except ValueError:
        return None
    if target.scheme.lower() not in ("http", "https") or not target.hostname:
        return None
    if target.path in ("", "/") and not target.query:
        return None
    if not page.hostname or site_of(target.hostname) != site_of(page.hostname):
        return None
    return canonical_url(absolute)


def site_of(host: str) -> str:
    """The registrable part of a host name, by a rule of thumb (no public suffix list).

    ``www.bbc.co.uk`` -> ``bbc.co.uk``, ``edition.cnn.com`` -> ``cnn.com``; IP literals are
    their own site. Hosting suffixes (``*.github.io``) count as one site.
    """
    host = host.lower().rstrip(".")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return host
    labels = host.split(".")
    keep = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVELS else 2
    return ".".join(labels[-keep:])


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of ``text``'s language, or None below ``MIN_LANGUAGE_WORDS`` words."""
    # Chinese and Japanese are written without spaces: count their characters as words.
    words = len(text.split()) + len(_CJK.findall(text, 0, LANGUAGE_SAMPLE_CHARS))
    if words < MIN_LANGUAGE_WORDS:
        return None
    label, _score = py3langid.classify(text[:LANGUAGE_SAMPLE_CHARS])
    code = _LANGUAGE_ALIASES.get(str(label), str(label))
    return code if len(code) == 2 else None


def warm_up() -> None:
    """Load the language model and trafilatura's tables now rather than in the first job."""
    detect_language("warm up " * MIN_LANGUAGE_WORDS)
    extract_page("<html><body><article><p>warm up</p></article></body></html>", url=None)


def _same_words(a: str, b: str) -> bool:
    return a.casefold().split() == b.casefold().split()


def _clip(value: str | None, limit: int) -> str | None:
    value = _SPACE.sub(" ", value).strip() if value else None
    return value[:limit] if value else None


def _date(value: str | None) -> datetime | None:
    """trafilatura's ``YYYY-MM-DD`` as midnight UTC (only used when the feed gives no time)."""
    if not value:
        return None
    try:
        return datetime.strptime(value[:10], "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None
