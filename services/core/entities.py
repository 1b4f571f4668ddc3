"""Turn raw NER mentions of one article into canonical entities (names, types, lookup keys)."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

# spaCy label -> entity type. Dates, times, numbers and languages are not entities.
LABEL_TYPES: dict[str, str] = {
    "PERSON": "person",
    "ORG": "organization",
    "GPE": "place",
    "LOC": "place",
    "NORP": "group",
    "FAC": "facility",
    "EVENT": "event",
    "PRODUCT": "product",
    "LAW": "law",
    "WORK_OF_ART": "work",
}
# Entity type -> the spaCy label a recognised name of that type is given.
TYPE_LABELS: dict[str, str] = {t: label for label, t in LABEL_TYPES.items() if label != "LOC"}
# fmt: off
# Tie-break for the per-entity type vote: earlier wins.
TYPE_PRIORITY: tuple[str, ...] = (
    "person", "organization", "place", "group", "facility", "event", "product", "law", "work",
)
# Titles and honorifics stripped from the front of a person's name. Royal and religious styles
# ("Queen Elizabeth", "Pope Francis") stay: without them the name no longer identifies anyone.
PERSON_TITLES: tuple[str, ...] = (
    "Secretary of State", "Secretary of Defense", "Secretary of Homeland Security",
    "Secretary-General", "Secretary General", "Attorney General", "Surgeon General",
    "Prime Minister", "Foreign Minister", "Deputy Prime Minister", "Vice President",
    "President-elect", "President", "Chief Justice", "Justice", "Judge",
    "House Speaker", "Speaker", "Majority Leader", "Minority Leader",
    "Senator", "Sen.", "Representative", "Rep.", "Governor", "Gov.", "Lt. Gov.",
    "Mayor", "City Manager", "Councilmember", "Councilman", "Councilwoman",
    "Assemblyman", "Assemblywoman", "Congressman", "Congresswoman", "Supervisor",
    "Ambassador", "Chancellor", "Minister", "Secretary", "Commissioner", "Sheriff",
    "Chairman", "Chairwoman", "Director", "Superintendent", "First Lady", "Special Agent",
    "General", "Gen.", "Lt. Gen.", "Maj. Gen.", "Brig. Gen.", "Col.", "Lt.", "Capt.",
    "Sgt.", "Adm.", "Maj.", "Cmdr.", "Mr.", "Mrs.", "Ms.", "Miss", "Mx.", "Dr.",
    "Prof.", "Professor", "Rev.", "Sir", "Dame", "Sheikh", "Former",
)
# Capitalised words that start sentences or name days, never a cut-off given name.
_NOT_GIVEN_NAMES = frozenset((
    "The", "A", "An", "In", "On", "At", "But", "And", "Or", "Then", "When", "While", "As",
    "If", "So", "Yet", "For", "With", "By", "From", "To", "After", "Before", "Late",
    "What", "Who", "Why", "How", "Where", "Which", "Does", "Did", "Is", "Are", "Was", "Were",
    "Has", "Had", "Can", "This", "That", "Both", "Each", "Every", "All", "Even", "Now",
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
))
# fmt: on
# Longest first, so "Secretary of State" is stripped whole rather than leaving "of State".
_TITLES_LONGEST_FIRST = sorted(PERSON_TITLES, key=len, reverse=True)
_TITLE_WORDS = frozenset(word for title in PERSON_TITLES for word in title.split())
MAX_WIDEN_WORDS = 2
_PRECEDING_NAME_RE = re.compile(r"(?<![\w.’'])([A-Z][a-zA-Z’'-]*[a-z]|[A-Z]\.) \Z")
# Every title of several words, at every place it starts (a zero-width match, so titles that
# overlap are all found); longest first, so where two start together the longer one is taken.
_TITLE_PHRASE_RE = re.compile(
    r"(?<!\w)(?=("
    + "|".join(re.escape(title) for title in _TITLES_LONGEST_FIRST if " " in title)
    + r")(?!\w))"
)
# A leading title and what separates it from the name (spaces, or none after a dot before a
# capital: "Gen.Smith"), where a name remains after it; one pattern for every title, tried
# longest first. The spaces are taken whole (possessive): a title followed by spaces alone is
# no title of a name.
_TITLE_PREFIX_RE = re.compile(
    "(?:"
    + "|".join(re.escape(title) for title in _TITLES_LONGEST_FIRST)
    + r")(?:\s++|(?<=\.)(?=[A-Z]))(?!\Z)",
    re.IGNORECASE,
)
# Defence in depth: photo credits ("Saul Loeb / Pool Photo") are not entities.
_CREDIT_RE = re.compile(r"/|\bPhotos?\b|\bPhotograph\w*|\bGetty Images\b|\bvia (?:Getty|AP|AFP)\b")
_LEADING_THE_RE = re.compile(r"^the\s+", re.IGNORECASE)
_POSSESSIVE_RE = re.compile(r"['’]s$")
_EDGE_PUNCT = "\"'“”‘’«»()[]{}<>,;:!?*–—-_ \t\n"
_QUOTES = str.maketrans({"‘": "'", "’": "'", "‛": "'", "ʼ": "'", "′": "'", "“": '"', "”": '"'})


@dataclass(frozen=True)
class RawMention:
    """A span the NER model tagged: its text, spaCy label and char offsets in the analysed text."""

    text: str
    label: str
    start: int
    end: int


@dataclass(frozen=True)
class ArticleEntity:
    """One canonical entity of one article, with how often and where it was mentioned."""

    name: str
    type: str
    key: str
    mentions: int
    first_offset: int
    surface_forms: tuple[str, ...]


class MentionRecogniser(Protocol):
    """Port for the NER model (implemented by ``workers.nlp.Recogniser``)."""

    def recognise(self, text: str) -> list[RawMention]: ...

    def recognise_many(self, texts: Iterable[str]) -> list[list[RawMention]]: ...


@dataclass(frozen=True)
class _Mention:
    surface: str
    name: str
    label: str
    start: int
    untitled: str  # ``name`` without leading titles; used for other labels only if a person


# Names recur from article to article, so keys are cached: at most this many, of names at
# most this long (the API computes keys of what clients send: the cache stays a few MB).
_KEY_CACHE_SIZE = 1 << 14
_KEY_CACHE_MAX_CHARS = 200


def entity_key(name: str) -> str:
    """Normalised lookup key: NFKC, casefolded, straight quotes, no dots, single spaces.

    ``(type, entity_key(name))`` identifies an entity in storage.
    """
    return _cached_key(name) if len(name) <= _KEY_CACHE_MAX_CHARS else _key(name)


def _key(name: str) -> str:
    key = name
    for _ in range(4):  # normalising can expose a new composition; stop at the fixed point
        step = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", key).casefold())
        step = " ".join(step.translate(_QUOTES).replace(".", "").split())
        if step == key:
            break
        key = step
    return key


_cached_key = functools.lru_cache(maxsize=_KEY_CACHE_SIZE)(_key)


def display_name(surface: str, label: str) -> str:
    """How a mention reads as a name: tidied, and without leading titles for a person.

    "the State Department’s" -> "State Department"; "President Biden" (PERSON) -> "Biden".
    """
    name = _tidy(" ".join(surface.split()))
    return _strip_titles(name) if label == "PERSON" else name


def canonicalise(text: str, mentions: Sequence[RawMention]) -> list[ArticleEntity]:
    """Merge the mentions of one article into entities, most mentioned first.

    Args:
        text: the analysed text the mention offsets point into.
        mentions: the model's spans, in any order.
    """
    kept = [m for m in sorted(mentions, key=lambda m: m.start) if m.label in LABEL_TYPES]
    inside_titles = _title_spans(text)
    cleaned: list[_Mention] = []
    for raw in kept:
        if raw.label != "PERSON" and any(s <= raw.start and raw.end <= e for s, e in inside_titles):
            continue  # "State" in "Secretary of State Antony J. Blinken" names no organisation
        mention = _clean(text, raw, kept)
        if mention is not None:
            cleaned.append(mention)
    return _group(_resolve(cleaned))


def _title_spans(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end(1)) for m in _TITLE_PHRASE_RE.finditer(text)]


def _clean(text: str, raw: RawMention, others: Sequence[RawMention]) -> _Mention | None:
    start, surface = raw.start, raw.text
    if raw.label == "PERSON" and text[raw.start : raw.end] == raw.text:
        start = _widen_start(text, raw, others)
        surface = text[start : raw.end]
    surface = " ".join(surface.split())
    if _CREDIT_RE.search(surface):
        return None
    name = _tidy(surface)
    untitled = _strip_titles(name)
    if raw.label == "PERSON":
        name = untitled
    if not any(ch.isalpha() for ch in name):
        return None
    return _Mention(surface, name, raw.label, start, untitled)


def _widen_start(text: str, raw: RawMention, others: Sequence[RawMention]) -> int:
    """Extend a person span left over given names the model cut off ("Antony" J. Blinken)."""
    start = raw.start
    for _ in range(MAX_WIDEN_WORDS):
        match = _PRECEDING_NAME_RE.search(text, max(0, start - 40), start)
        if match is None:
            break
        word = match.group(1)
        word_start, word_end = match.span(1)
        taken = any(o is not raw and o.start < word_end and word_start < o.end for o in others)
        if taken or word in _TITLE_WORDS or word in _NOT_GIVEN_NAMES or _POSSESSIVE_RE.search(word):
            break
        start = word_start
    return start


def _tidy(surface: str) -> str:
    """Drop surrounding quotes and punctuation, a leading "the" and a possessive ending."""
    name = surface
    while True:
        before = name
        name = _LEADING_THE_RE.sub("", name.strip(_EDGE_PUNCT))
        name = _POSSESSIVE_RE.sub("", name)
        if name == before:
            return name


def _strip_titles(name: str) -> str:
    """Remove leading titles ("Former Secretary of State ...") while a name remains after them."""
    while (match := _TITLE_PREFIX_RE.match(name)) is not None:
        name = name[match.end() :]
    return name


def _resolve(mentions: list[_Mention]) -> list[_Mention]:
    """Map a surname or partial name to the one full person name in the article ending with it.

    The model tags "Blinken" as a place and "President Biden" as an organisation at times; a
    person name found elsewhere in the article settles the type, so resolved mentions vote
    PERSON whatever their own label.
    """
    people: dict[tuple[str, ...], str] = {}
    for m in mentions:
        if m.label == "PERSON":
            people.setdefault(tuple(entity_key(m.name).split()), m.name)
    resolved: list[_Mention] = []
    for m in mentions:
        name = _full_name(m.name, people)
        if name is None and m.label != "PERSON" and m.untitled != m.name:
            untitled_key = tuple(entity_key(m.untitled).split())
            name = people.get(untitled_key) or _full_name(m.untitled, people)
        if name is not None:
            m = _Mention(m.surface, name, "PERSON", m.start, name)
        resolved.append(m)
    return resolved


def _full_name(name: str, people: dict[tuple[str, ...], str]) -> str | None:
    """The one longer person name whose last words are ``name``, if exactly one exists."""
    words = tuple(entity_key(name).split())
    if not words:
        return None
    found = {
        full
        for full_words, full in people.items()
        if len(full_words) > len(words) and full_words[-len(words) :] == words
    }
    return found.pop() if len(found) == 1 else None


def _group(mentions: list[_Mention]) -> list[ArticleEntity]:
    groups: dict[str, list[_Mention]] = {}
    for m in mentions:
        groups.setdefault(entity_key(m.name), []).append(m)
    entities = [_entity(key, group) for key, group in groups.items()]
    return sorted(entities, key=lambda e: (-e.mentions, e.name))


def _entity(key: str, group: list[_Mention]) -> ArticleEntity:
    names = Counter(m.name for m in group)
    name = max(names, key=lambda n: (names[n], len(n)))
    votes = Counter(LABEL_TYPES[m.label] for m in group)
    entity_type = max(votes, key=lambda t: (votes[t], -TYPE_PRIORITY.index(t)))
    return ArticleEntity(
        name=name,
        type=entity_type,
        key=key,
        mentions=len(group),
        first_offset=min(m.start for m in group),
        surface_forms=tuple(dict.fromkeys(m.surface for m in group)),
    )
