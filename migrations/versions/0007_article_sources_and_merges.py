"""article sources for reprocessing, and merged article ids

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Articles stored before this revision have no source: reprocessing re-cleans their
    # stored text instead of re-extracting it (workers/reprocess.py).
    op.create_table(
        "article_sources",
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["articles.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("article_id"),
    )
    op.create_table(
        "article_merges",
        sa.Column("old_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["articles.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("old_id"),
    )
    op.create_index("ix_article_merges_article_id", "article_merges", ["article_id"])


def downgrade() -> None:
    op.drop_index("ix_article_merges_article_id", table_name="article_merges")
    op.drop_table("article_merges")
    op.drop_table("article_sources")
