"""A device's APNs environment (production or sandbox; empty: BGTASKS_PUSH_APNS_ENVIRONMENT).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("apns_environment", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("apns_environment")
