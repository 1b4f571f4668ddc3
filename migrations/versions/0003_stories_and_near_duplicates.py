"""stories and near-duplicate fingerprints

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

New tables only: ``articles`` is not rebuilt (on SQLite a rebuild drops the table, and with
foreign keys on that cascades into its children), so ``articles.story_id`` keeps no foreign
key and stays nullable; existing articles keep ``story_id`` NULL and are not indexed for
near-duplicate search until they change (nothing to backfill in production yet).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stories",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("article_count", sa.Integer(), nullable=False),
        sa.Column("first_article_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["first_article_id"],
            ["articles.id"],
            name=op.f("fk_stories_first_article_id_articles"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stories")),
    )
    op.create_table(
        "article_bands",
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("band", sa.SmallInteger(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["articles.id"],
            name=op.f("fk_article_bands_article_id_articles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("article_id", "band", name=op.f("pk_article_bands")),
    )
    op.create_index("ix_article_bands_band_value", "article_bands", ["band", "value"])


def downgrade() -> None:
    op.execute("UPDATE articles SET story_id = NULL")
    op.drop_index("ix_article_bands_band_value", table_name="article_bands")
    op.drop_table("article_bands")
    op.drop_table("stories")
