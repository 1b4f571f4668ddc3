"""The Alembic revisions and the models describe the same schema, on every backend."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from services.db.models import Base


def test_migrations_match_models(engine: Engine) -> None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
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
