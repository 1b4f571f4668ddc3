"""The article search syntax: a parser into a small AST and compilers for FTS5 and tsquery.

One syntax for every backend:

- words are ANDed: ``ceasefire gaza``;
- ``"a quoted phrase"`` matches the words in that order;
- ``OR`` (upper case) between terms matches either: ``truce OR ceasefire``;
- ``-word`` or ``-"a phrase"`` excludes articles that contain it;
- ``word*`` matches words starting with ``word`` (at least 3 letters or digits).

A word is a run of letters and digits; anything else separates words, so ``covid-19`` is the
phrase ``"covid 19"`` and punctuation never reaches a backend as syntax. The compilers emit only
those words, in a grammar each backend parses without surprises: every FTS5 token is quoted,
and every tsquery lexeme is made of letters and digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.core.errors import InvalidInput

MAX_QUERY_CHARS = 256
MAX_WORDS = 16
MIN_PREFIX_CHARS = 3

_WORD = re.compile(r"[^\W_]+")


class SearchSyntaxError(InvalidInput):
    """A search query that the syntax does not allow; the message says what to fix."""

    def __init__(self, message: str, *, param: str = "q") -> None:
        super().__init__(message, param=param)


@dataclass(frozen=True)
class Term:
    """One word, or several in order (a phrase); ``prefix`` makes the last word a prefix."""

    words: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True)
class AnyOf:
    """Terms joined by OR: an article matches if it contains any of them."""

    terms: tuple[Term, ...]


@dataclass(frozen=True)
class Query:
    """Every group in ``required`` must match and no term in ``excluded`` may."""

    required: tuple[AnyOf, ...]
    excluded: tuple[Term, ...] = ()


@dataclass(frozen=True)
class _Token:
    term: Term | None  # None: the OR operator
    negated: bool = False


def parse(text: str) -> Query:
    """Parse a search query.

    Raises:
        SearchSyntaxError: empty or too long, unbalanced quotes, too many words, a prefix
            shorter than 3 characters, an OR that does not stand between two terms, an
            excluded term inside an OR, or nothing left to search for.
    """
    if len(text) > MAX_QUERY_CHARS:
        raise SearchSyntaxError(f"q is longer than {MAX_QUERY_CHARS} characters")
    tokens = _tokens(text)
    if not tokens:
        raise SearchSyntaxError("q holds no word to search for")
    words = sum(len(t.term.words) for t in tokens if t.term is not None)
    if words > MAX_WORDS:
        raise SearchSyntaxError(f"q has {words} words; at most {MAX_WORDS}")
    return _group(tokens)


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, end = 0, len(text)
    while i < end:
        if text[i].isspace():
            i += 1
            continue
        negated = text[i] == "-" and i + 1 < end and not text[i + 1].isspace()
        if negated:
            i += 1
        if text[i] == '"':
            close = text.find('"', i + 1)
            if close < 0:
                raise SearchSyntaxError('q has an unbalanced double quote (")')
            raw, i = text[i + 1 : close], close + 1
            prefix = i < end and text[i] == "*"
            i += prefix
        else:
            stop = i
            while stop < end and not text[stop].isspace() and text[stop] != '"':
                stop += 1
            raw, i = text[i:stop], stop
            if raw == "OR" and not negated:
                tokens.append(_Token(None))
                continue
            prefix = raw.endswith("*")
        term = _term(raw, prefix=prefix)
        if term is not None:
            tokens.append(_Token(term, negated))
    return tokens


def _term(raw: str, *, prefix: bool) -> Term | None:
    words = tuple(w.lower() for w in _WORD.findall(raw))
    if not words:
        return None
    if prefix and len(words[-1]) < MIN_PREFIX_CHARS:
        raise SearchSyntaxError(
            f"q: a prefix needs at least {MIN_PREFIX_CHARS} letters or digits before '*'"
        )
    return Term(words, prefix)


def _group(tokens: list[_Token]) -> Query:
    required: list[list[Term]] = []
    excluded: list[Term] = []
    joined = False  # the previous token was OR
    for index, token in enumerate(tokens):
        if token.term is None:
            previous = tokens[index - 1] if index else None
            if previous is None or previous.term is None or index + 1 == len(tokens):
                raise SearchSyntaxError("q: OR must stand between two terms")
            joined = True
            continue
        if token.negated:
            if joined or (index + 1 < len(tokens) and tokens[index + 1].term is None):
                raise SearchSyntaxError("q: an excluded (-) term cannot be part of an OR")
            excluded.append(token.term)
        elif joined:
            required[-1].append(token.term)
        else:
            required.append([token.term])
        joined = False
    if not required:
        raise SearchSyntaxError("q needs at least one term that is not excluded (-)")
    return Query(tuple(AnyOf(tuple(group)) for group in required), tuple(excluded))


def to_fts5(query: Query) -> str:
    """An FTS5 MATCH expression: every word inside double quotes, operators added here only."""

    def term(t: Term) -> str:
        # Words are letters and digits only, so no quote can appear inside one.
        return '"' + " ".join(t.words) + '"' + (" *" if t.prefix else "")

    def group(g: AnyOf) -> str:
        return "(" + " OR ".join(term(t) for t in g.terms) + ")"

    expression = " AND ".join(group(g) for g in query.required)
    if query.excluded:
        expression = f"({expression}) NOT ({' OR '.join(term(t) for t in query.excluded)})"
    return expression


def to_tsquery(query: Query) -> str:
    """Text for PostgreSQL's ``to_tsquery``: lexemes of letters and digits, ``<->`` phrases."""

    def term(t: Term) -> str:
        words = list(t.words)
        if t.prefix:
            words[-1] += ":*"
        inner = " <-> ".join(words)
        return f"({inner})" if len(words) > 1 else inner

    def group(g: AnyOf) -> str:
        inner = " | ".join(term(t) for t in g.terms)
        return f"({inner})" if len(g.terms) > 1 else inner

    parts = [group(g) for g in query.required] + [f"!{term(t)}" for t in query.excluded]
    return " & ".join(parts)
