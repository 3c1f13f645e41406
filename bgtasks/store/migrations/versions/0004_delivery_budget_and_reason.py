"""Deliveries: the service's reason code, and push-budget holds (held_until, holds).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("reason", sa.String(100), nullable=True))
        batch.add_column(sa.Column("held_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("holds", sa.Integer, nullable=False, server_default="0"))
        batch.create_index("ix_deliveries_device_updated", ["device_id", "updated_at"])


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:  # SQLite drops a column by copying the table
        batch.drop_index("ix_deliveries_device_updated")
        batch.drop_column("holds")
        batch.drop_column("held_until")
        batch.drop_column("reason")
