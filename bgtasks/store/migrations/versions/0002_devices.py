"""Devices, push deliveries and device reports (mobile_push).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("token", sa.String(4096), nullable=False),
        sa.Column("topic", sa.String(255), nullable=True),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("invalid_reason", sa.String(500), nullable=True),
        sa.Column("invalid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("transport", "token", name="uq_devices_transport_token"),
    )
    op.create_table(
        "deliveries",
        sa.Column("idempotency_key", sa.String(200), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False, index=True),
        sa.Column("task_id", sa.String(64), nullable=True),
        sa.Column("device_id", sa.String(100), nullable=False, index=True),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(300), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.String(1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "device_reports",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(100), primary_key=True),
        sa.Column("task_id", sa.String(64), nullable=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("success", sa.Boolean, nullable=True),
        sa.Column("data", sa.JSON, nullable=True),
        sa.Column("error", sa.String(2000), nullable=True),
        sa.Column("duration_ms", sa.Integer, nullable=True),
        sa.Column("stop_reason", sa.String(100), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("device_reports")
    op.drop_table("deliveries")
    op.drop_table("devices")
