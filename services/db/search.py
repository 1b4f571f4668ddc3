"""Article search in SQL: a parsed query as a WHERE clause on each backend's full-text index.

The index itself is not in the models: revision 0010 creates the FTS5 table ``articles_fts``
(SQLite) or the generated column ``articles.search_vector`` with its GIN index (PostgreSQL).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    String,
    bindparam,
    column,
    func,
    literal_column,
    select,
    table,
)

from services.core.search import Query, to_fts5, to_tsquery
from services.db.models import Article

FTS_TABLE = "articles_fts"
SEARCH_COLUMN = "search_vector"
SEARCH_INDEX = "ix_articles_search"
TEXT_CONFIG = "english"

_fts = table(FTS_TABLE, column("rowid"), column(FTS_TABLE))

# Bound parameter names of the prebuilt statements: a query's text travels as a value.
FTS_PARAM = "fts_match"
TSQUERY_PARAM = "tsquery"


def fts_ids(query: Query | None = None) -> Select[Any]:
    """SQLite: the ids of the articles that ``query`` finds, from the FTS5 table.

    Without ``query`` the MATCH expression is left to the ``fts_match`` parameter (see
    :func:`search_params`), so that one statement serves every query.
    """
    expression: BindParameter[str] = (
        bindparam(FTS_PARAM, type_=String)
        if query is None
        else bindparam(FTS_PARAM, to_fts5(query))
    )
    return select(_fts.c.rowid).where(_fts.c[FTS_TABLE].op("MATCH")(expression))


def vector_matches(query: Query | None = None) -> ColumnElement[bool]:
    """PostgreSQL: true for the ``articles`` rows that ``query`` finds (GIN-indexed).

    Without ``query`` the tsquery text is left to the ``tsquery`` parameter.
    """
    config: ColumnElement[Any] = literal_column(f"'{TEXT_CONFIG}'::regconfig")
    text: BindParameter[str] = (
        bindparam(TSQUERY_PARAM, type_=String)
        if query is None
        else bindparam(TSQUERY_PARAM, to_tsquery(query))
    )
    tsquery = func.to_tsquery(config, text)
    vector: ColumnElement[Any] = literal_column(f"{Article.__tablename__}.{SEARCH_COLUMN}")
    return vector.op("@@")(tsquery)


def search_params(query: Query, dialect: str) -> dict[str, str]:
    """The parameter values of :func:`fts_ids` / :func:`vector_matches` built without a query."""
    if dialect == "sqlite":
        return {FTS_PARAM: to_fts5(query)}
    return {TSQUERY_PARAM: to_tsquery(query)}
