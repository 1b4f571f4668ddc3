"""The Alembic revisions and the models describe the same schema, on every backend."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Engine, inspect

from services.db.models import Base
from services.db.search import FTS_TABLE, SEARCH_COLUMN, SEARCH_INDEX


def _modelled(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """False for the full-text structures of revision 0010, which no model describes (see
    ``services/db/search.py``): the FTS5 table and its shadow tables on SQLite, the generated
    column and its GIN index on PostgreSQL. ``tests/test_search_api.py`` checks them."""
    if not reflected or compare_to is not None or name is None:
        return True
    if type_ == "table":
        return not (name == FTS_TABLE or name.startswith(f"{FTS_TABLE}_"))
    if type_ == "column" and isinstance(obj, Column):
        return not (name == SEARCH_COLUMN and obj.table.name == "articles")
    return not (type_ == "index" and name == SEARCH_INDEX)


def test_migrations_match_models(engine: Engine) -> None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": _modelled}
        )
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_unique_constraints_that_make_writes_idempotent(engine: Engine) -> None:
    insp = inspect(engine)

    def uniques(table: str) -> set[tuple[str, ...]]:
        found = {tuple(u["column_names"]) for u in insp.get_unique_constraints(table)}
        found |= {tuple(i["column_names"]) for i in insp.get_indexes(table) if i["unique"]}
        return found

    assert ("feed_id", "item_key_hash") in uniques("sightings")
    assert ("content_hash",) in uniques("articles")
    assert ("canonical_url",) in uniques("articles")
    assert ("url",) in uniques("article_urls")
    assert ("type", "key") in uniques("entities")
    assert set(insp.get_pk_constraint("article_entities")["constrained_columns"]) == {
        "article_id",
        "entity_id",
    }
