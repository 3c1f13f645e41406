"""The tables, as SQLAlchemy Core metadata (the migrations create them)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.String(200), nullable=False),
    sa.Column("device_id", sa.String(100), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("transport", sa.String(16), nullable=False),
    sa.Column("token", sa.String(4096), nullable=False),
    sa.Column("topic", sa.String(255), nullable=True),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("apns_environment", sa.String(16), nullable=True),  # None: the setting's
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("invalid_reason", sa.String(500), nullable=True),
    sa.Column("invalid_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("transport", "token", name="uq_devices_transport_token"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("idempotency_key", sa.String(200), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("task_id", sa.String(64), nullable=True),
    sa.Column("device_id", sa.String(100), nullable=False, index=True),
    sa.Column("transport", sa.String(16), nullable=False),
    sa.Column("message_id", sa.String(300), nullable=True),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("error", sa.String(1000), nullable=True),
    sa.Column("reason", sa.String(100), nullable=True),  # the service's code (UNREGISTERED, BadDeviceToken)
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # The push budget: outcome "held" waits until held_until; holds counts how often it was held.
    sa.Column("held_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("holds", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_deliveries_device_updated", "device_id", "updated_at"),
)

device_reports = sa.Table(
    "device_reports",
    metadata,
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
    # The latest report's state (mobile_push.reports): progress (started, stopped) or final.
    sa.Column("state", sa.String(20), nullable=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("stops", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
)
