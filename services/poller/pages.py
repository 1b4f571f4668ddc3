"""Article pages for feed items without their full text: which to fetch, and fetching them
politely into the extraction payloads (the workers extract; they never fetch)."""

from __future__ import annotations

import asyncio
import codecs
import logging
import re
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from services.config import Settings
from services.core.errors import FetchError
from services.core.records import FeedRecord
from services.fetch import FetchResult, HTTPStatusError, SupportsFetch
from services.poller.health import CycleStats, host_of
from services.poller.payloads import feed_payload
from services.poller.politeness import HostBusy, Politeness
from services.sources.feed import FeedItem

log = logging.getLogger("newsdesk.poller")

PAGE_MAX_BYTES = 2 * 1024 * 1024  # decompressed; a news article page is far smaller
PAGE_CONCURRENCY = 8  # page requests in flight per poller process
# A page waits longer than a feed poll for its host: it cannot be put off to a later cycle.
PAGE_MAX_WAIT = 30.0
# Pages fetched per feed poll: at the default 1 s host spacing the poll stays well inside
# the feed's 10-minute lease. Further items go out with their summary.
PAGES_PER_POLL = 200
# "auto" mode: the feed carries the whole article when its content has at least this many
# words and is clearly longer than the summary.
FULL_CONTENT_WORDS = 150
FULL_CONTENT_RATIO = 1.5
THROTTLE_DELAY = 60.0  # a 429/503 page answer without Retry-After slows its host this long
_TAG = re.compile(r"<[^>]*>")
_META_CHARSET = re.compile(rb"""<meta\b[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)
_SNIFF_BYTES = 4096
# WHATWG encoding labels that Python would decode differently from a browser.
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
    "us-ascii": "cp1252", "ascii": "cp1252", "utf-16": "utf-8", "utf-16le": "utf-8",
    "utf-16be": "utf-8", "x-user-defined": "cp1252",
}  # fmt: skip
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))  # fmt: skip
_DROPPED = re.compile(r"<(script|style)\b([^>]*)>|<!--", re.IGNORECASE)
_CLOSERS = {name: re.compile(rf"</{name}\s*>", re.IGNORECASE) for name in ("script", "style")}


def page_settings(settings: Settings) -> Settings:
    """Settings for the page Fetcher: the feed fetcher's, with the page size cap."""
    return settings.with_overrides(max_body_bytes=min(settings.max_body_bytes, PAGE_MAX_BYTES))


def has_full_content(item: FeedItem) -> bool:
    """True when the item's content (``content:encoded``) is plausibly the whole article."""
    if not item.content:
        return False
    content = _TAG.sub(" ", item.content)
    if len(content.split()) < FULL_CONTENT_WORDS:
        return False
    summary = _TAG.sub(" ", item.summary or "")
    return len(content.strip()) >= FULL_CONTENT_RATIO * len(summary.strip())


def wants_page(mode: str, item: FeedItem) -> bool:
    """Whether to fetch ``item``'s page under the feed's full-text ``mode``."""
    if item.url is None or mode == "never":
        return False
    return mode == "always" or not has_full_content(item)


def decode_html(body: bytes, content_type: str | None) -> str:
    """``body`` as text: the HTTP charset, else a BOM, else ``<meta charset>``, else UTF-8.

    Undecodable bytes become U+FFFD; an unknown charset name falls back to UTF-8.
    """
    charset = _charset_param(content_type)
    if charset is None:
        charset = next((name for bom, name in _BOMS if body.startswith(bom)), None)
    if charset is None:
        found = _META_CHARSET.search(body, 0, _SNIFF_BYTES)
        charset = found.group(1).decode("ascii") if found else None
    name = _CHARSET_ALIASES.get((charset or "utf-8").lower(), charset or "utf-8")
    try:
        return body.decode(name, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _charset_param(content_type: str | None) -> str | None:
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip("\"'"):
            return value.strip().strip("\"'")
    return None


def slim_html(markup: str) -> str:
    """``markup`` without scripts (JSON-LD metadata stays), styles and comments.

    None of them is article text, and they are often most of a page's bytes: the page
    travels in the job, and Redis holds every queued job. Linear: an unterminated element
    drops the rest of the document, as a browser would not render it either.
    """
    out: list[str] = []
    pos = 0
    while (found := _DROPPED.search(markup, pos)) is not None:
        out.append(markup[pos : found.start()])
        if found.group(1) is None:
            end = markup.find("-->", found.end())
            pos = len(markup) if end < 0 else end + 3
            continue
        closer = _CLOSERS[found.group(1).lower()].search(markup, found.end())
        pos = len(markup) if closer is None else closer.end()
        if "ld+json" in found.group(2).lower():
            out.append(markup[found.start() : pos])
    out.append(markup[pos:])
    return "".join(out)


@dataclass(frozen=True)
class Page:
    html: str
    url: str  # after redirects


class PageFetcher:
    """Fetches the pages of a feed poll's new items through ``fetcher`` and the host gate.

    Args:
        fetcher: a Fetcher built with :func:`page_settings` (same guard, timeouts, page cap).
        gate: the per-host politeness gate (None: no gate).
        executor: where decoding and slimming run, off the event loop.
        throttle_cap: longest Retry-After honoured, seconds.
    """

    def __init__(
        self, fetcher: SupportsFetch, *, gate: Politeness | None, executor: Executor | None,
        throttle_cap: float, concurrency: int = PAGE_CONCURRENCY,
    ) -> None:  # fmt: skip
        self._fetcher = fetcher
        self._gate = gate
        self._executor = executor
        self._throttle_cap = throttle_cap
        self._limit = asyncio.Semaphore(concurrency)

    async def payloads(
        self, feed: FeedRecord, items: Sequence[FeedItem]
    ) -> tuple[list[dict[str, Any]], CycleStats]:
        """One payload per item, with its page when the feed's mode wants it and the fetch
        works; a failed fetch is logged and counted, and the item goes out without it."""
        loop = asyncio.get_running_loop()
        wanted = await loop.run_in_executor(
            self._executor, lambda: [wants_page(feed.fulltext, item) for item in items]
        )
        budget = PAGES_PER_POLL
        tasks = []
        for item, want in zip(items, wanted, strict=True):
            tasks.append(self._payload(feed.id, item, want and budget > 0))
            budget -= want
        if budget < 0:
            log.warning("page.skipped feed_id=%d count=%d code=page_budget", feed.id, -budget)
        results = await asyncio.gather(*tasks)
        fetched = sum(1 for _, page in results if page is True)
        failed = sum(1 for _, page in results if page is False) + max(0, -budget)
        return [p for p, _ in results], CycleStats(pages_fetched=fetched, pages_failed=failed)

    async def _payload(
        self, feed_id: int, item: FeedItem, want: bool
    ) -> tuple[dict[str, Any], bool | None]:
        """(payload, True: page fetched | False: fetch failed | None: not wanted)."""
        if not want or item.url is None:
            return feed_payload(feed_id, item), None
        try:
            page = await self.fetch(item.url)
        except FetchError as exc:
            log.warning("page.failed feed_id=%d code=%s url=%s detail=%s", feed_id, exc.code,
                        item.url[:300], exc.detail[:300])  # fmt: skip
            return feed_payload(feed_id, item), False
        return feed_payload(feed_id, item, page_html=page.html, page_url=page.url), True

    async def fetch(self, url: str) -> Page:
        """The page at ``url``, decoded and slimmed. Raises FetchError (``host_busy`` when
        the host's gate stays shut past ``PAGE_MAX_WAIT``, ``not_html``, or the Fetcher's)."""
        async with self._limit:
            try:
                result = await self._fetch_politely(url)
            except HostBusy as busy:
                raise FetchError(str(busy), code="host_busy") from None
            except HTTPStatusError as exc:
                if exc.status in (429, 503) and self._gate is not None:
                    delay = min(exc.retry_after_seconds or THROTTLE_DELAY, self._throttle_cap)
                    await self._gate.slow_down(host_of(url), delay)
                raise
        media_type = result.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type and "html" not in media_type and "xml" not in media_type:
            raise FetchError(f"the page is {media_type}, not HTML", code="not_html")
        markup = await asyncio.get_running_loop().run_in_executor(
            self._executor, _page_text, result.body, result.headers.get("content-type")
        )
        if not markup.strip():
            raise FetchError("the page is empty", code="empty")
        return Page(markup, result.final_url)

    async def _fetch_politely(self, url: str) -> FetchResult:
        if self._gate is None:
            return await self._fetcher.fetch(url)
        async with self._gate.slot(host_of(url), max_wait=PAGE_MAX_WAIT):
            return await self._fetcher.fetch(url)


def _page_text(body: bytes, content_type: str | None) -> str:
    return slim_html(decode_html(body, content_type))
