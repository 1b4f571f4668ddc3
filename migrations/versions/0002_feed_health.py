"""feed health: throttling, outage start, disable reason, operator interval, moves

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("disabled_reason", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("interval_override", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("ttl_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("first_error_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("throttled_until", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("moved_from", sa.String(length=2048), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.drop_column("moved_from")
        batch_op.drop_column("throttled_until")
        batch_op.drop_column("first_error_at")
        batch_op.drop_column("ttl_seconds")
        batch_op.drop_column("interval_override")
        batch_op.drop_column("disabled_reason")
