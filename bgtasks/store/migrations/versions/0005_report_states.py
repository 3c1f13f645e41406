"""Device reports: the latest report's state (started, stopped, succeeded, failed), when the
work first started, how often the system stopped it, and when the device last reported.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("device_reports") as batch:
        batch.add_column(sa.Column("state", sa.String(20), nullable=True))
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("stops", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_reports") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("updated_at")
        batch.drop_column("stops")
        batch.drop_column("started_at")
        batch.drop_column("state")
