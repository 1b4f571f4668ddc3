"""per-feed full-text mode

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN on every backend (no table rebuild on SQLite); existing feeds get
    # `auto`. The allowed values are checked by the repository, not by a CHECK constraint,
    # which SQLite could only add by rebuilding `feeds` (its DROP would cascade to sightings).
    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("fulltext", sa.String(length=8), nullable=False, server_default="auto")
        )


def downgrade() -> None:
    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.drop_column("fulltext")
