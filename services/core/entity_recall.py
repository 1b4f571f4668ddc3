"""Recall from knowledge: find known names the NER model missed, on token boundaries.

Known names are the country gazetteer, the names stored for entities seen before, and the
names the model tagged elsewhere in the same article. In prose the model's spans win: a
recalled name never overlaps one (of any label, so "May" tagged DATE stays a date). In
headline-case and all-caps lines the model is unreliable ("Trump Removes State Dept" as one
organisation), so there a known name displaces a model span that is not itself that name.
A model span never crosses a line break (title and body): one that does is cut there.

Safeguards, because a name can also be an ordinary word:

- the match is case-sensitive; in an all-caps line a name matches upper-cased only if it
  has at least ``MIN_CAPS_LETTERS`` letters, and an acronym that spells a common word
  (``US``, ``WHO``) does not match there at all;
- a name needs two letters and a capital; a one-word name that is a common word ("May",
  "Will", "Bill") is never recalled, nor one whose lower-case form occurs in the text
  ("china" the tableware);
- a name known with two different types (Washington the person and the place) is skipped.
  How much evidence a stored name needs is the loader's business (``known_names``).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.core.entities import LABEL_TYPES, TYPE_LABELS, RawMention, display_name

MIN_LETTERS = 2
MIN_CAPS_LETTERS = 4
# A headline-case line has this many words at least, and every word this long is capitalised.
HEADLINE_MIN_WORDS = 3
HEADLINE_WORD_LETTERS = 4
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_WORD_RE = re.compile(r"\w+")
_APOSTROPHES = frozenset("'’")

Span = tuple[int, int]
Token = tuple[str, int, int]


@dataclass(frozen=True)
class KnownName:
    """A name the service knows, with the type of the entity it names."""

    text: str
    type: str


@dataclass(frozen=True)
class CommonWords:
    """Common words already case-folded (see :attr:`NameIndex.folded_common_words`)."""

    words: frozenset[str]


@dataclass(frozen=True)
class _Entry:
    tokens: tuple[str, ...]
    label: str
    single_word: bool
    acronym: bool
    common: bool  # the name, lower-cased, is a common word


class NameIndex:
    """Known names by their first token, longest first, ready for :func:`with_known`."""

    def __init__(
        self, names: Iterable[KnownName], common_words: Iterable[str] | CommonWords
    ) -> None:
        # Another index's words are folded already: an article's own index reuses them.
        self.common_words = (
            common_words.words
            if isinstance(common_words, CommonWords)
            else frozenset(w.casefold() for w in common_words)
        )
        types: defaultdict[tuple[str, ...], set[str]] = defaultdict(set)
        for known in names:
            label = TYPE_LABELS.get(known.type)
            tokens = tuple(_TOKEN_RE.findall(known.text))
            if label is not None and self._admissible(known.text, tokens):
                types[tokens].add(label)
        entries: defaultdict[str, list[_Entry]] = defaultdict(list)
        for tokens, labels in types.items():
            if len(labels) == 1:
                entries[tokens[0].casefold()].append(self._entry(tokens, labels.pop()))
        for bucket in entries.values():
            bucket.sort(key=lambda e: -len(e.tokens))
        self._entries = dict(entries)
        firsts = {e.tokens[0] for bucket in entries.values() for e in bucket}
        self._firsts = frozenset(firsts | {t.upper() for t in firsts})

    @property
    def folded_common_words(self) -> CommonWords:
        """This index's common words, to build another index without folding them again."""
        return CommonWords(self.common_words)

    @property
    def firsts(self) -> frozenset[str]:
        """The tokens a match of an indexed name can begin with (as written, or upper-cased
        for all-caps lines)."""
        return self._firsts

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._entries.values())

    def candidates(self, token: str) -> list[_Entry]:
        return self._entries.get(token.casefold(), [])

    def _admissible(self, text: str, tokens: tuple[str, ...]) -> bool:
        if sum(ch.isalpha() for ch in text) < MIN_LETTERS or not any(ch.isupper() for ch in text):
            return False
        words = [t for t in tokens if _WORD_RE.fullmatch(t)]
        if not words or not tokens[0][:1].isalnum():
            return False
        single_title_word = len(words) == 1 and not words[0].isupper()
        return not (single_title_word and words[0].casefold() in self.common_words)

    def _entry(self, tokens: tuple[str, ...], label: str) -> _Entry:
        words = "".join(t for t in tokens if _WORD_RE.fullmatch(t))
        return _Entry(
            tokens=tokens,
            label=label,
            single_word=sum(1 for t in tokens if _WORD_RE.fullmatch(t)) == 1,
            acronym=words.isupper() and len(words) <= 5,
            common=words.casefold() in self.common_words,
        )


def article_names(mentions: Sequence[RawMention]) -> list[KnownName]:
    """Names the model tagged in this article, each with its majority type."""
    votes: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for m in mentions:
        if m.label in LABEL_TYPES:
            votes[display_name(m.text, m.label)][LABEL_TYPES[m.label]] += 1
    return [KnownName(name, c.most_common(1)[0][0]) for name, c in votes.items() if name]


def with_known(
    text: str, mentions: Sequence[RawMention], knowledge: Sequence[NameIndex]
) -> list[RawMention]:
    """The model's ``mentions`` plus the known names it missed, ordered by offset.

    ``knowledge`` are indexes of names known before this text, most trusted first; the names
    the model tagged in this text's prose lines are tried before them.
    """
    mentions = cut_at_breaks(mentions)
    caps = _caps_lines(text)
    headlines = _headline_lines(text, caps)
    weak = {m for m in mentions if _inside(headlines, m.start)}
    strong = [m for m in mentions if m not in weak]
    common = knowledge[0].folded_common_words if knowledge else CommonWords(frozenset())
    here = NameIndex(article_names(strong), common)
    found = recall(text, strong, weak, [here, *knowledge], caps)
    found = [f for f in found if not any(_fuller_name(w, f) for w in weak)]
    found_spans = [(f.start, f.end) for f in found]
    kept = [m for m in mentions if not (m in weak and _overlaps(found_spans, m.start, m.end))]
    return sorted([*kept, *found], key=lambda m: (m.start, m.end))


def _fuller_name(span: RawMention, name: RawMention) -> bool:
    """A person span ending with a known surname is that person's full name: "George Floyd"."""
    return span.label == name.label == "PERSON" and span.start < name.start and span.end == name.end


def cut_at_breaks(mentions: Sequence[RawMention]) -> list[RawMention]:
    """Cut model spans at line breaks: "the W.H.O.\\n\\nAmerica’s" is two names."""
    out: list[RawMention] = []
    for m in mentions:
        if "\n" not in m.text:
            out.append(m)
            continue
        for part in re.finditer(r"[^\n]+", m.text):
            segment = part.group().strip()
            if any(ch.isalpha() for ch in segment):
                start = m.start + part.start() + (len(part.group()) - len(part.group().lstrip()))
                out.append(RawMention(segment, m.label, start, start + len(segment)))
    return out


def recall(
    text: str,
    strong: Sequence[RawMention],
    weak: Iterable[RawMention],
    indexes: Sequence[NameIndex],
    caps_lines: Sequence[Span],
) -> list[RawMention]:
    """Known names in ``text`` overlapping none of the ``strong`` model spans.

    A name may overlap ``weak`` spans (the caller drops those), but is not reported where a
    weak span covers exactly it: the model found that one already.
    """
    tokens: list[Token] = [(m.group(), m.start(), m.end()) for m in _TOKEN_RE.finditer(text)]
    words = [t[0] for t in tokens]
    taken = sorted((m.start, m.end) for m in strong)
    same = {(m.start, m.end) for m in weak}
    # The text's lower-case words, from its tokens: their word tokens are _WORD_RE's matches,
    # and the punctuation tokens among them never begin a name.
    lowered = {w for w in words if w.islower()}
    # Only a token that can begin some known name can start a match: most tokens of an
    # article begin none, and are passed over without a lookup in every index.
    distinct = set(words)
    starts = set().union(*(index.firsts & distinct for index in indexes))
    found: list[RawMention] = []
    resume = 0  # tokens before this one are inside a name already found
    for i, word in enumerate(words):
        if i < resume or word not in starts:
            continue
        offset = tokens[i][1]
        match = _match_at(tokens, words, i, indexes, lowered, _inside(caps_lines, offset))
        if match is None:
            continue
        length, label = match
        start, end = offset, tokens[i + length - 1][2]
        if _overlaps(taken, start, end) or (start, end) in same:
            continue
        found.append(RawMention(text[start:end], label, start, end))
        resume = i + length
    return found


def _match_at(
    tokens: list[Token],
    words: list[str],
    i: int,
    indexes: Sequence[NameIndex],
    lowered: set[str],
    in_caps: bool,
) -> tuple[int, str] | None:
    """The longest known name starting at token ``i`` (``words``: the tokens' text):
    (token count, label)."""
    if i > 1 and tokens[i - 1][0] in _APOSTROPHES and _glued(tokens, i - 2, i):
        return None  # "Brien" in "O'Brien" is no name of its own
    best: tuple[int, str] | None = None
    first = tokens[i][0]
    for index in indexes:
        for entry in index.candidates(first):
            n = len(entry.tokens)
            if best is not None and n <= best[0]:
                break  # entries are longest first
            if first != entry.tokens[0] and not (in_caps and first == entry.tokens[0].upper()):
                continue  # cheaper than comparing every token (see _same)
            got = tuple(words[i : i + n])
            if len(got) < n or not _same(got, entry, in_caps):
                continue
            if entry.single_word and not entry.acronym and got[0].casefold() in lowered:
                continue  # the word occurs in lower case here: it is a word in this text
            best = (n, entry.label)
            break
    return best


def _same(got: tuple[str, ...], entry: _Entry, in_caps: bool) -> bool:
    if not in_caps:
        return got == entry.tokens
    if entry.acronym:
        return got == entry.tokens and not entry.common
    letters = sum(ch.isalpha() for t in entry.tokens for ch in t)
    return letters >= MIN_CAPS_LETTERS and got == tuple(t.upper() for t in entry.tokens)


def _glued(tokens: list[Token], a: int, b: int) -> bool:
    """Tokens ``a`` .. ``b`` follow each other with no space between them."""
    return all(tokens[k][2] == tokens[k + 1][1] for k in range(a, b))


def _lines(text: str) -> Iterable[tuple[int, str]]:
    pos = 0
    for line in text.split("\n"):
        yield pos, line
        pos += len(line) + 1


def _caps_lines(text: str) -> list[Span]:
    """Lines written in capitals only (two words at least)."""
    return [
        (pos, pos + len(line))
        for pos, line in _lines(text)
        if len(_WORD_RE.findall(line)) >= 2
        and not any(ch.islower() for ch in line)
        and any(ch.isupper() for ch in line)
    ]


def _headline_lines(text: str, caps_lines: Sequence[Span]) -> list[Span]:
    """All-caps lines (``caps_lines``, from :func:`_caps_lines`) and headline-case lines
    ("Trump Says U.S. Will Leave the W.H.O.")."""
    spans = list(caps_lines)
    for pos, line in _lines(text):
        words = re.findall(r"[^\W\d_][\w’'-]*", line)
        long = [w for w in words if len(w) >= HEADLINE_WORD_LETTERS]
        if len(words) >= HEADLINE_MIN_WORDS and long and all(w[0].isupper() for w in long):
            spans.append((pos, pos + len(line)))
    return spans


def _overlaps(spans: Sequence[Span], start: int, end: int) -> bool:
    return any(s < end and start < e for s, e in spans)


def _inside(spans: Sequence[Span], offset: int) -> bool:
    return any(s <= offset < e for s, e in spans)
