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


def fts_ids(query: Query) -> Select[Any]:
    """SQLite: the ids of the articles that ``query`` finds, from the FTS5 table."""
    expression: BindParameter[str] = bindparam("fts_match", to_fts5(query))
    return select(_fts.c.rowid).where(_fts.c[FTS_TABLE].op("MATCH")(expression))


def vector_matches(query: Query) -> ColumnElement[bool]:
    """PostgreSQL: true for the ``articles`` rows that ``query`` finds (GIN-indexed)."""
    config: ColumnElement[Any] = literal_column(f"'{TEXT_CONFIG}'::regconfig")
    tsquery = func.to_tsquery(config, bindparam("tsquery", to_tsquery(query)))
    vector: ColumnElement[Any] = literal_column(f"{Article.__tablename__}.{SEARCH_COLUMN}")
    return vector.op("@@")(tsquery)
