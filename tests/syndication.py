"""Syndication cases built from real article texts, for the near-duplicate tests and bench.

Real texts: the seed article (``seeds/``) and items of the real feed captures in
``tests/data/feeds`` (provenance in its SOURCES.tsv). The variants are what syndication does
to a wire story: a new headline, a dateline + wire credit ("WASHINGTON (AP) —"), a paragraph
rewritten by an editor, the tail cut to length, a follow-up that keeps the top of the story.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from services.core.extract import ItemPayload, extract
from services.core.plaintext import parse_plaintext
from services.poller.payloads import feed_payload
from services.sources.feed import parse_feed

REPO = Path(__file__).resolve().parent.parent
FEEDS = REPO / "tests" / "data" / "feeds"
SEED = REPO / "seeds" / "000_a39bf01833f5003a.txt"
LATIMES_APRIL = "latimes__20200421T200942Z.xml"
LATIMES_MAY = "latimes__20200512T020122Z.xml"

# An editor's rewrite of the seed's paragraph 10 (same facts, new wording for two clauses).
SEED_PARAGRAPH_10_EDITED = (
    "He said it was too early to resume negotiations between the two sides, but that "
    "humanitarian steps could be taken now to repair the damage from Israeli airstrikes in "
    "Gaza, which killed more than 200 people and badly damaged civilian infrastructure."
)


@dataclass(frozen=True)
class Text:
    """An article as a feed carries it: headline, body paragraphs and link."""

    key: str
    title: str
    paragraphs: tuple[str, ...]
    url: str

    @property
    def body(self) -> str:
        return "\n\n".join(self.paragraphs)


def seed() -> Text:
    parsed = parse_plaintext(SEED.read_text("utf-8"))
    return Text(
        key="seed",
        title=parsed.title,
        paragraphs=tuple(parsed.body.split("\n\n")),
        url="https://www.latimes.com/world-nation/story/2021-05-24/blinken-mideast-gaza",
    )


@cache
def capture(name: str) -> tuple[Text, ...]:
    """The items of one real capture, extracted by the production code."""
    parsed = parse_feed((FEEDS / name).read_bytes(), url="https://news.example/feed.xml")
    found = []
    for item in parsed.items:
        extracted = extract(ItemPayload.from_dict(feed_payload(1, item)))
        paragraphs = tuple(p for p in extracted.text.split("\n\n") if p.strip())
        found.append(Text(item.item_key, extracted.title, paragraphs, item.url or item.item_key))
    return tuple(found)


def item(name: str, url_part: str) -> Text:
    """The item of capture ``name`` whose link contains ``url_part``."""
    return next(t for t in capture(name) if url_part in t.url)


def wire_copy(
    text: Text,
    *,
    key: str,
    headline: str,
    dateline: str = "WASHINGTON",
    changed: dict[int, str] | None = None,
    keep: int | None = None,
) -> Text:
    """``text`` as another outlet runs it: own headline and link, wire credit, edits, cuts."""
    paragraphs = list(text.paragraphs[:keep])
    for index, new in (changed or {}).items():
        paragraphs[index] = new
    paragraphs[0] = f"{dateline} (AP) — {paragraphs[0]}"
    return Text(key, headline, tuple(paragraphs), f"https://{key}.example/story")


def follow_up(text: Text, *, key: str, headline: str, keep: int, new: list[str]) -> Text:
    """A later article of the same story: the top ``keep`` paragraphs, then new reporting."""
    return Text(key, headline, (*text.paragraphs[:keep], *new), f"https://{key}.example/story")


def sentence_rewritten(text: Text, *, key: str, dateline: str) -> Text:
    """A wire copy whose last sentence an editor replaced."""
    paragraphs = list(text.paragraphs)
    last = paragraphs[-1]
    cut = max(last.rstrip(". ").rfind(". "), 0)
    paragraphs[-1] = last[: cut + 1] + " More details are expected later this week."
    copy = Text(key, text.title, tuple(paragraphs), f"https://{key}.example/story")
    return wire_copy(copy, key=key, headline=text.title, dateline=dateline)


def payload(
    feed_id: int, text: Text, *, url: str | None = None, guid: str | None = None
) -> dict[str, Any]:
    """A version-1 extraction job for ``text`` as an RSS item with full content."""
    link = url or text.url
    content = text.body
    digest = hashlib.sha256(f"{text.title}\x1f{link}\x1f{content}".encode()).hexdigest()
    return {
        "v": 1,
        "feed_id": feed_id,
        "kind": "feed",
        "item_key": guid or text.key,
        "content_hash": digest,
        "url": link,
        "title": text.title,
        "summary": None,
        "content": content,
        "content_type": "text/plain",
        "published": "2026-11-27T10:00:00+00:00",
        "author": None,
    }


def upper(text: Text, *, key: str) -> Text:
    """The same text in capitals under another link: equal after normalisation."""
    return replace(
        text,
        key=key,
        paragraphs=tuple(p.upper() for p in text.paragraphs),
        url=f"https://{key}.example/s",
    )


def wire(s: Text) -> Text:
    """The seed as AP runs it: new headline, dateline + credit, paragraph 10 rewritten."""
    return wire_copy(
        s,
        key="seed-ap",
        headline="Blinken heads to Israel, West Bank to shore up Gaza cease-fire",
        changed={10: SEED_PARAGRAPH_10_EDITED},
    )


def later(s: Text) -> Text:
    """A different article of the same story: the top seven paragraphs, then new reporting
    (stood in for by five real LA Times items' texts)."""
    sources = [
        (LATIMES_APRIL, "food-trucks"),
        (LATIMES_APRIL, "mariachi"),
        (LATIMES_APRIL, "edd-struggling"),
    ]
    sources += [
        (LATIMES_APRIL, "stay-at-home-order-california"),
        (LATIMES_MAY, "dont-blame-the-beaches"),
    ]
    return follow_up(
        s,
        key="follow-up",
        headline="Blinken arrives in Israel as Gaza truce holds",
        keep=7,
        new=[item(name, part).body for name, part in sources],
    )
