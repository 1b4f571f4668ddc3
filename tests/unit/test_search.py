"""The search syntax: parsing into the AST, compiling to FTS5 and tsquery text, and errors."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.errors import InvalidInput
from services.core.search import (
    MAX_QUERY_CHARS,
    MAX_WORDS,
    AnyOf,
    Query,
    SearchSyntaxError,
    Term,
    parse,
    to_fts5,
    to_tsquery,
)


def q(*groups: tuple[Term, ...] | Term, excluded: tuple[Term, ...] = ()) -> Query:
    return Query(tuple(AnyOf(g if isinstance(g, tuple) else (g,)) for g in groups), excluded)


def w(*words: str, prefix: bool = False) -> Term:
    return Term(words, prefix)


# (query, AST, FTS5 MATCH expression, to_tsquery text)
CASES = [
    ("gaza", q(w("gaza")), '("gaza")', "gaza"),
    ("Gaza  ceasefire", q(w("gaza"), w("ceasefire")), '("gaza") AND ("ceasefire")',
     "gaza & ceasefire"),
    ('"peace talks"', q(w("peace", "talks")), '("peace talks")', "(peace <-> talks)"),
    ("truce OR ceasefire", q((w("truce"), w("ceasefire"))), '("truce" OR "ceasefire")',
     "(truce | ceasefire)"),
    ("a OR b OR c d", q((w("a"), w("b"), w("c")), w("d")),
     '("a" OR "b" OR "c") AND ("d")', "(a | b | c) & d"),
    ("gaza -hamas", q(w("gaza"), excluded=(w("hamas"),)), '(("gaza")) NOT ("hamas")',
     "gaza & !hamas"),
    ('gaza -"west bank" -egypt', q(w("gaza"), excluded=(w("west", "bank"), w("egypt"))),
     '(("gaza")) NOT ("west bank" OR "egypt")', "gaza & !(west <-> bank) & !egypt"),
    ("elect*", q(w("elect", prefix=True)), '("elect" *)', "elect:*"),
    ('"prime minist"*', q(w("prime", "minist", prefix=True)), '("prime minist" *)',
     "(prime <-> minist:*)"),
    ("covid-19", q(w("covid", "19")), '("covid 19")', "(covid <-> 19)"),
    ("U.S. tariffs", q(w("u", "s"), w("tariffs")), '("u s") AND ("tariffs")',
     "(u <-> s) & tariffs"),
    ("or and", q(w("or"), w("and")), '("or") AND ("and")', "or & and"),
    ('"OR"', q(w("or")), '("or")', "or"),
    ("Zürich café", q(w("zürich"), w("café")), '("zürich") AND ("café")', "zürich & café"),
    ("x -OR", q(w("x"), excluded=(w("or"),)), '(("x")) NOT ("or")', "x & !or"),
    ("NEAR(a b) AND: c^ {d}", q(w("near", "a"), w("b"), w("and"), w("c"), w("d")),
     '("near a") AND ("b") AND ("and") AND ("c") AND ("d")', "(near <-> a) & b & and & c & d"),
    ("'quoted' & !bang", q(w("quoted"), w("bang")), '("quoted") AND ("bang")',
     "quoted & bang"),
    ('gaza "" - ***', q(w("gaza")), '("gaza")', "gaza"),
    ('"a"b', q(w("a"), w("b")), '("a") AND ("b")', "a & b"),
    ("snake_case", q(w("snake", "case")), '("snake case")', "(snake <-> case)"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "ast", "fts5", "tsquery"), CASES, ids=[c[0] for c in CASES])
def test_parse_and_compile(text: str, ast: Query, fts5: str, tsquery: str) -> None:
    parsed = parse(text)
    assert parsed == ast
    assert to_fts5(parsed) == fts5
    assert to_tsquery(parsed) == tsquery


ERRORS = [
    ("", "no word"),
    ("   ", "no word"),
    ("!!! ...", "no word"),
    ('"unclosed', "unbalanced"),
    ('gaza "peace', "unbalanced"),
    ("OR gaza", "OR must stand between"),
    ("gaza OR", "OR must stand between"),
    ("gaza OR OR hamas", "OR must stand between"),
    ("gaza OR -hamas", "cannot be part of an OR"),
    ("-gaza OR hamas", "cannot be part of an OR"),
    ("-gaza", "at least one term"),
    ('-gaza -"west bank"', "at least one term"),
    ("ab*", "prefix needs at least 3"),
    ('"the u"*', "prefix needs at least 3"),
    (" ".join(["word"] * (MAX_WORDS + 1)), f"at most {MAX_WORDS}"),
    ("x" * (MAX_QUERY_CHARS + 1), "longer than"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[e[0][:30] for e in ERRORS])
def test_invalid_queries(text: str, message: str) -> None:
    with pytest.raises(SearchSyntaxError, match=message) as caught:
        parse(text)
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.param == "q"


def test_limits_are_inclusive() -> None:
    assert len(parse(" ".join(["word"] * MAX_WORDS)).required) == MAX_WORDS
    assert parse("x" * MAX_QUERY_CHARS).required == (AnyOf((w("x" * MAX_QUERY_CHARS),)),)


# Only these tokens may appear in a compiled query besides the words themselves.
FTS5_TOKEN = re.compile(r'"[^\W_]+(?: [^\W_]+)*"|\*|\(|\)|AND|OR|NOT')
TSQUERY_TOKEN = re.compile(r"[^\W_]+(?::\*)?|<->|[&|!()]")

syntaxish = st.text(
    alphabet=st.sampled_from("abcXYZ éß19 \"-*()&|!:<>'^{}.,_+OR\\\x00\t"), max_size=80
)


@given(st.one_of(st.text(max_size=300), syntaxish))
def test_any_input_parses_or_raises_the_syntax_error(text: str) -> None:
    try:
        parsed = parse(text)
    except SearchSyntaxError:
        return
    assert parsed.required
    fts5, tsquery = to_fts5(parsed), to_tsquery(parsed)
    assert FTS5_TOKEN.sub("", fts5).strip() == ""
    assert TSQUERY_TOKEN.sub("", tsquery).strip() == ""
    assert fts5.count("(") == fts5.count(")") and tsquery.count("(") == tsquery.count(")")
