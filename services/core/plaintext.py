"""Split a plain-text article file into headline, body and boilerplate (captions, credits...)."""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.core.errors import ExtractError

# Caption blocks are a photo title plus one or two caption sentences; more short lines than
# this before a credit are more likely single-newline body paragraphs.
MAX_CAPTION_LINES = 3
MAX_CAPTION_CHARS = 300
# A related-story blurb is a headline, not a paragraph.
MAX_BLURB_CHARS = 200
MAX_BLURB_WORDS = 30
MAX_PAREN_CREDIT_WORDS = 8

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH_RE = (
    r"(?P<month>Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sept?(?:ember)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_DATE_LINE_RES = (
    re.compile(rf"^{_MONTH_RE}\s+(?P<day>\d{{1,2}}),?\s+(?P<year>\d{{4}})$", re.IGNORECASE),
    re.compile(rf"^(?P<day>\d{{1,2}})\s+{_MONTH_RE},?\s+(?P<year>\d{{4}})$", re.IGNORECASE),
    re.compile(r"^(?P<year>\d{4})-(?P<mnum>\d{2})-(?P<day>\d{2})$"),
)
_CREDIT_PREFIX_RE = re.compile(
    r"^(?:photo(?:graph)?s?|image|picture|credit|photo credit|illustration)\s*:\s*(?P<who>.+)$",
    re.IGNORECASE,
)
_AGENCY = r"(?:Getty Images|Associated Press|AP|AFP|Reuters|EPA|Bloomberg|Shutterstock|Pool)"
_BARE_CREDIT_RE = re.compile(rf"^(?:[\w.'’ -]+\s*(?:/|\bvia\b)\s*)?{_AGENCY}(?: Photo)?$")
_CREDIT_WORD_RE = re.compile(rf"\b(?:Photo|Photos|Photographer|Staff|{_AGENCY})\b")
_SENTENCE_END = (".", "!", "?", "”", '"')


@dataclass(frozen=True)
class RelatedStory:
    """A "related story" teaser: its headline and its date as written (parsed when possible)."""

    text: str
    date: str
    published: datetime.date | None


@dataclass(frozen=True)
class PlainArticle:
    """A plain-text article split into its parts; ``body`` paragraphs are joined by blank lines."""

    title: str
    body: str
    captions: tuple[str, ...]
    credits: tuple[str, ...]
    related: tuple[RelatedStory, ...]


def parse_plaintext(text: str) -> PlainArticle:
    """Split ``text`` into headline, body paragraphs and boilerplate.

    Raises:
        ExtractError: code ``empty`` when there is no headline or no body text.
    """
    lines = _normalise(text).split("\n")
    first = next((i for i, line in enumerate(lines) if line), None)
    if first is None:
        raise ExtractError("plain-text article is empty", code="empty")
    title = lines[first]
    blocks = _blocks(lines[first + 1 :])
    captions: list[str] = []
    credits: list[str] = []
    related: list[RelatedStory] = []
    kept: list[list[str]] = []
    i = 0
    while i < len(blocks):
        block = blocks[i]
        found = _related_story(blocks, i)
        if found is not None:
            related.append(found[0])
            i += found[1]
            continue
        credit = _credit(block[-1])
        if credit is not None:
            caption_lines = _caption_lines(block[:-1])
            captions.extend(caption_lines)
            credits.append(credit)
            block = block[: len(block) - 1 - len(caption_lines)]
        if block:
            kept.append(block)
        i += 1
    paragraphs = [p for block in kept for p in _paragraphs(block)]
    if not paragraphs:
        raise ExtractError(f"plain-text article {title!r} has no body text", code="empty")
    return PlainArticle(
        title=title,
        body="\n\n".join(paragraphs),
        captions=tuple(captions),
        credits=tuple(credits),
        related=tuple(related),
    )


def parse_date_line(line: str) -> datetime.date | None:
    """Return the date when ``line`` is only a date ("May 23, 2021", "2021-05-23"), else None."""
    candidate = line.strip()
    for pattern in _DATE_LINE_RES:
        match = pattern.match(candidate)
        if match is None:
            continue
        groups = match.groupdict()
        if groups.get("mnum"):
            month = int(groups["mnum"])
        else:
            month = _MONTHS.index(groups["month"].lower()[:3]) + 1
        try:
            return datetime.date(int(groups["year"]), month, int(groups["day"]))
        except ValueError:  # "February 30, 2021" is shaped like a date but is not one
            return None
    return None


def _normalise(text: str) -> str:
    """Drop BOMs and edge whitespace; every kind of line ending (CRLF, CR, U+2028) becomes LF."""
    return "\n".join(line.strip() for line in text.replace("\ufeff", "").splitlines())


def _blocks(lines: Sequence[str]) -> list[list[str]]:
    """Group lines into blank-line separated blocks (runs of blank lines count as one)."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in lines:
        if line:
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def _credit(line: str) -> str | None:
    """Return the credit held by ``line`` (without parentheses or prefix), or None."""
    if line.startswith("(") and line.endswith(")"):
        inner = line[1:-1].strip()
        # A parenthesised editor's note is a sentence; a credit names a person or agency.
        short = len(inner.split()) <= MAX_PAREN_CREDIT_WORDS and not inner.endswith(_SENTENCE_END)
        if inner and ("/" in inner or _CREDIT_WORD_RE.search(inner) or short):
            return inner
        return None
    prefixed = _CREDIT_PREFIX_RE.match(line)
    if prefixed is not None:
        return prefixed.group("who").strip()
    if _BARE_CREDIT_RE.match(line) or _is_slash_credit(line):
        return line
    return None


def _is_slash_credit(line: str) -> bool:
    """A short title-case line with a slash: "Luis Sinco / Los Angeles Times", "AP Photo/X"."""
    words = line.replace("/", " ").split()
    return (
        "/" in line
        and 0 < len(words) <= MAX_PAREN_CREDIT_WORDS
        and not line.endswith(_SENTENCE_END)
        and all(word[0].isupper() for word in words)
    )


def _caption_lines(lines: Sequence[str]) -> list[str]:
    """The short lines directly above a credit line, in reading order."""
    picked: list[str] = []
    for line in reversed(lines):
        if len(picked) == MAX_CAPTION_LINES or len(line) > MAX_CAPTION_CHARS:
            break
        picked.append(line)
    return picked[::-1]


def _related_story(blocks: Sequence[Sequence[str]], i: int) -> tuple[RelatedStory, int] | None:
    """A one-line teaser followed by a line that is only a date; returns it and blocks used.

    The date sits either on the next line of the same block or alone in the next block.
    """
    block = blocks[i]
    if len(block) == 2:
        blurb, date_line, used = block[0], block[1], 1
    elif len(block) == 1 and i + 1 < len(blocks) and len(blocks[i + 1]) == 1:
        blurb, date_line, used = block[0], blocks[i + 1][0], 2
    else:
        return None
    if len(blurb) > MAX_BLURB_CHARS or len(blurb.split()) > MAX_BLURB_WORDS:
        return None
    published = parse_date_line(date_line)
    if published is None:
        return None
    return RelatedStory(text=blurb, date=date_line, published=published), used


def _paragraphs(block: Sequence[str]) -> list[str]:
    """One paragraph per line, except hard-wrapped continuations (mid-sentence, lower case)."""
    paragraphs: list[str] = []
    for line in block:
        wrapped = paragraphs and not paragraphs[-1].endswith(_SENTENCE_END) and line[0].islower()
        if wrapped:
            paragraphs[-1] = f"{paragraphs[-1]} {line}"
        else:
            paragraphs.append(line)
    return paragraphs
