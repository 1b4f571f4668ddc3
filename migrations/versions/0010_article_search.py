"""article search: FTS5 on SQLite, a weighted tsvector with a GIN index on PostgreSQL

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

import string
from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite: an external-content FTS5 table over articles(title, text). Its rowid is the
# article id; the triggers keep it in step with every insert, text change and delete (merges
# delete the merged-away row). Porter stemming stands in for PostgreSQL's English stemmer, and
# diacritics are kept as PostgreSQL's `english` configuration keeps them, so both backends
# find the same articles for the same query.
SQLITE_UPGRADE = (
    """
    CREATE VIRTUAL TABLE articles_fts USING fts5(
        title, text, content='articles', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 0'
    )
    """,
    """
    CREATE TRIGGER articles_fts_insert AFTER INSERT ON articles BEGIN
        INSERT INTO articles_fts(rowid, title, text) VALUES (new.id, new.title, new.text);
    END
    """,
    """
    CREATE TRIGGER articles_fts_delete AFTER DELETE ON articles BEGIN
        INSERT INTO articles_fts(articles_fts, rowid, title, text)
        VALUES ('delete', old.id, old.title, old.text);
    END
    """,
    """
    CREATE TRIGGER articles_fts_update AFTER UPDATE OF title, text ON articles BEGIN
        INSERT INTO articles_fts(articles_fts, rowid, title, text)
        VALUES ('delete', old.id, old.title, old.text);
        INSERT INTO articles_fts(rowid, title, text) VALUES (new.id, new.title, new.text);
    END
    """,
    "INSERT INTO articles_fts(articles_fts) VALUES ('rebuild')",
)
SQLITE_DOWNGRADE = (
    "DROP TRIGGER IF EXISTS articles_fts_update",
    "DROP TRIGGER IF EXISTS articles_fts_delete",
    "DROP TRIGGER IF EXISTS articles_fts_insert",
    "DROP TABLE IF EXISTS articles_fts",
)

# PostgreSQL: a stored generated column, so inserts and updates maintain it and a phrase
# query's recheck reads it instead of re-parsing the text. The title weighs more than the
# body. ASCII punctuation becomes a space first, so that words are runs of letters and digits
# as for FTS5 and the query parser (PostgreSQL's own parser reads "covid-19" as "covid" and
# "-19", and "U.S." as one word). The text is capped because a tsvector is limited to 1 MB;
# positions past 16,383 are not kept anyway.
PUNCTUATION = string.punctuation.replace("'", "''")  # as an SQL string literal
BLANKS = " " * len(string.punctuation)
POSTGRES_UPGRADE = (
    f"""
    ALTER TABLE articles ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english'::regconfig,
                              translate(title, '{PUNCTUATION}', '{BLANKS}')), 'A')
        || setweight(to_tsvector('english'::regconfig,
                                 translate(left(text, 200000), '{PUNCTUATION}', '{BLANKS}')), 'B')
    ) STORED
    """,
    "CREATE INDEX ix_articles_search ON articles USING gin (search_vector)",
)
POSTGRES_DOWNGRADE = (
    "DROP INDEX IF EXISTS ix_articles_search",
    "ALTER TABLE articles DROP COLUMN IF EXISTS search_vector",
)


def upgrade() -> None:
    statements = SQLITE_UPGRADE if _sqlite() else POSTGRES_UPGRADE
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    statements = SQLITE_DOWNGRADE if _sqlite() else POSTGRES_DOWNGRADE
    for statement in statements:
        op.execute(statement)


def _sqlite() -> bool:
    return bool(op.get_bind().dialect.name == "sqlite")
