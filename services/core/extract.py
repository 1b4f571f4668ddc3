"""Turn one queued item (a feed entry or a folder file) into an article to store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from services.core.errors import ExtractError
from services.core.fingerprint import joined_hash, normalise_text
from services.core.html_text import html_to_text, looks_like_html
from services.core.page import PageArticle, detect_language, extract_page
from services.core.plaintext import parse_plaintext
from services.core.urls import canonical_url

PAYLOAD_VERSION = 1
SUMMARY_CHARS = 400
MAX_TITLE_CHARS = 1000


@dataclass(frozen=True)
class ItemPayload:
    """The extraction job's argument, validated (see ``services/poller`` for the producer)."""

    feed_id: int
    kind: str
    item_key: str
    content_hash: str
    url: str | None = None
    title: str | None = None
    summary: str | None = None
    content: str | None = None
    content_type: str = "text/html"
    published: datetime | None = None
    author: str | None = None
    # The article page, when the poller fetched it (optional keys of a version-1 payload).
    page_html: str | None = field(default=None, repr=False)
    page_url: str | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> ItemPayload:
        """Validate a job payload; raises ExtractError(code="bad_payload")."""
        if not isinstance(raw, dict) or raw.get("v") != PAYLOAD_VERSION:
            raise ExtractError("job payload is not a version-1 item", code="bad_payload")
        try:
            published = raw.get("published")
            item = cls(
                feed_id=int(raw["feed_id"]),
                kind=str(raw["kind"]),
                item_key=str(raw["item_key"]),
                content_hash=str(raw["content_hash"]),
                url=_opt_str(raw.get("url")),
                title=_opt_str(raw.get("title")),
                summary=_opt_str(raw.get("summary")),
                content=_opt_str(raw.get("content")),
                content_type=str(raw.get("content_type") or "text/html"),
                published=_parse_time(published) if published else None,
                author=_opt_str(raw.get("author")),
                page_html=_opt_str(raw.get("page_html")),
                page_url=_opt_str(raw.get("page_url")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ExtractError(f"malformed job payload: {exc}", code="bad_payload") from None
        if item.kind not in {"feed", "file"}:
            raise ExtractError(f"unknown item kind {item.kind!r}", code="bad_payload")
        return item


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass(frozen=True)
class Extracted:
    """An article ready to store: text and metadata, plus what is not body text."""

    title: str
    text: str
    summary: str | None
    url: str | None
    canonical_url: str | None
    published_at: datetime | None
    byline: str | None
    content_hash: str
    boilerplate: dict[str, Any] = field(default_factory=dict)
    language: str | None = None  # ISO 639-1, None when the text is too short to tell
    page_url: str | None = None  # where the article page was read (after redirects)
    # ``text`` through normalise_text, as extraction worked it out for the hash (the
    # near-duplicate sketch reads it too); None when not at hand.
    normalised_text: str | None = field(default=None, repr=False, compare=False)

    @cached_property
    def urls(self) -> tuple[str, ...]:
        """Every URL the article is known under, canonical first: the item link and the page
        URL, each as seen and canonicalised (worked out once: dedup reads them several
        times)."""
        found = [self.canonical_url]
        for seen in (self.url, self.page_url):
            if seen:
                found += [canonical_url(seen), seen]
        return tuple(dict.fromkeys(u for u in found if u))

    @property
    def analysed_text(self) -> str:
        """What NER reads: the headline and the body, never captions or credits."""
        return f"{self.title}\n\n{self.text}"


def _as_text(value: str | None) -> str:
    if not value:
        return ""
    return html_to_text(value) if looks_like_html(value) else value.strip()


def _summary(text: str) -> str:
    first = text.split("\n\n", 1)[0].strip()
    return first if len(first) <= SUMMARY_CHARS else first[: SUMMARY_CHARS - 1].rstrip() + "…"


def extract(item: ItemPayload) -> Extracted:
    """Extract the article an item carries; raises ExtractError when there is none.

    The text is the feed's own (``content:encoded``, else the summary) unless the poller
    fetched the article page and the page's main text is at least as long: a paywall or a
    failed extraction then leaves the feed's text in place.
    """
    if item.kind == "file":
        return _extract_file(item)
    title = " ".join(_as_text(item.title).split())[:MAX_TITLE_CHARS]
    summary = _as_text(item.summary)
    text = _as_text(item.content) or summary
    page = _page(item)
    if page is not None and len(page.text.split()) >= len(text.split()):
        text = page.text
    else:
        # Nothing from a page whose text lost (a paywall, a consent or login wall): its URL
        # and canonical may be the wall's, shared by every article behind it.
        page = None
    title = title or (page.title if page and page.title else "")
    if not text and not title:
        raise ExtractError("the item has no title and no text", code="empty")
    if not title:
        title = text.split("\n", 1)[0][:MAX_TITLE_CHARS]
    text = text or title
    body = normalise_text(text)
    return Extracted(
        title=title,
        text=text,
        summary=_summary(summary or text),
        url=item.url,
        canonical_url=_canonical(item, page),
        published_at=item.published or (page.published if page else None),
        byline=item.author or (page.author if page else None),
        content_hash=joined_hash(normalise_text(title), body),
        boilerplate={"dropped": list(page.dropped)} if page and page.dropped else {},
        language=detect_language(text),
        page_url=item.page_url if page else None,
        normalised_text=body,
    )


def _page(item: ItemPayload) -> PageArticle | None:
    if not item.page_html:
        return None
    return extract_page(item.page_html, url=item.page_url or item.url)


def _canonical(item: ItemPayload, page: PageArticle | None) -> str | None:
    """The page's trusted canonical, else the page's final URL, else the item link."""
    if page is not None:
        found = page.canonical_url or (canonical_url(item.page_url) if item.page_url else None)
        if found:
            return found
    return canonical_url(item.url) if item.url else None


def _extract_file(item: ItemPayload) -> Extracted:
    parsed = parse_plaintext(item.content or "")
    body = normalise_text(parsed.body)
    return Extracted(
        title=parsed.title[:MAX_TITLE_CHARS],
        text=parsed.body,
        summary=_summary(parsed.body),
        url=None,
        canonical_url=None,
        published_at=item.published,
        byline=item.author,
        content_hash=joined_hash(normalise_text(parsed.title), body),
        boilerplate={
            "captions": list(parsed.captions),
            "credits": list(parsed.credits),
            "related": [{"text": r.text, "date": r.date} for r in parsed.related],
        },
        language=detect_language(parsed.body),
        normalised_text=body,
    )
