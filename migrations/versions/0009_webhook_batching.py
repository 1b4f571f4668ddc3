"""webhook batching: deliveries indexed by subscription and due time

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A subscription's next due deliveries are read in due order, a few at a time, however
    # long its backlog or its history (succeeded and dead rows have no next_attempt_at).
    op.create_index(
        "ix_deliveries_subscription_due", "deliveries", ["subscription_id", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_subscription_due", table_name="deliveries")
