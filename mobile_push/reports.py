"""Deliveries (what was sent to whom) and device reports (what the device did).

A delivery row per (run, device) carries the idempotency key
``run:<run id>:device:<device id>``: a retried run finds the devices that
already accepted its push and does not push to them again.

Before a run pushes to a device it issues a per-run report token (shown once,
in the push payload; only its SHA-256 is kept). The device reports with it:
a wrong token, or one already used, is refused and changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from bgtasks.store import Store
from bgtasks.store.schema import deliveries, device_reports


def delivery_key(run_id: str, device_id: str) -> str:
    return f"run:{run_id}:device:{device_id}"


class ReportIn(BaseModel):
    """``POST /devices/{device_id}/runs/{run_id}/report``: what the device did."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    report_token: str = Field(min_length=1, max_length=200, description="The reportToken of the run's push payload.")
    success: bool
    data: Any = None
    error: str | None = Field(None, max_length=2000)
    duration_ms: int | None = Field(None, ge=0, le=7 * 24 * 3600 * 1000)
    stop_reason: str | None = Field(None, max_length=100, description="WorkManager's stop reason, or iOS's "
                                    "\"expired\", when the system stopped the work.")


class ReportRejected(Exception):
    """``status`` 403 (no push of this run to this device with this token) / 409 (already reported)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Delivery:
    device_id: str
    transport: str
    outcome: str
    attempts: int
    message_id: str | None
    error: str | None

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": self.outcome, "attempts": self.attempts}
        if self.message_id:
            out["messageId"] = self.message_id
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class Report:
    device_id: str
    reported_at: datetime
    success: bool
    data: Any
    error: str | None
    duration_ms: int | None
    stop_reason: str | None

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"success": self.success, "reportedAt": self.reported_at.isoformat().replace("+00:00", "Z")}
        for key, value in (("data", self.data), ("error", self.error), ("durationMs", self.duration_ms),
                           ("stopReason", self.stop_reason)):
            if value is not None:
                out[key] = value
        return out


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _aware(v: datetime) -> datetime:
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v


class RunLedger:
    """Deliveries and reports of runs, in bgtasks' database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- deliveries -----------------------------------------------------------------

    async def deliveries(self, run_id: str) -> dict[str, Delivery]:
        async with self.store.session() as s:
            rows = (await s.execute(sa.select(deliveries).where(deliveries.c.run_id == run_id))).all()
        return {r.device_id: Delivery(r.device_id, r.transport, r.outcome, r.attempts, r.message_id, r.error)
                for r in rows}

    async def record_delivery(self, *, run_id: str, task_id: str | None, device_id: str, transport: str,
                              outcome: str, attempts: int, message_id: str | None, error: str | None) -> None:
        """Insert or update the (run, device) delivery; attempts add up across retried runs."""
        key = delivery_key(run_id, device_id)
        now = datetime.now(UTC)
        async with self.store.session() as s:
            row = (await s.execute(sa.select(deliveries).where(deliveries.c.idempotency_key == key))).first()
            if row is None:
                await s.execute(deliveries.insert().values(
                    idempotency_key=key, run_id=run_id, task_id=task_id, device_id=device_id, transport=transport,
                    message_id=message_id, outcome=outcome, attempts=attempts, error=error and error[:1000],
                    created_at=now, updated_at=now))
            else:
                await s.execute(deliveries.update().where(deliveries.c.idempotency_key == key).values(
                    message_id=message_id or row.message_id, outcome=outcome, attempts=row.attempts + attempts,
                    error=error and error[:1000], updated_at=now))

    # ---- report tokens and reports ---------------------------------------------------------

    async def issue_token(self, run_id: str, device_id: str, task_id: str | None) -> str:
        """A fresh report token for (run, device); an earlier unused one stops working."""
        token = secrets.token_urlsafe(24)
        now = datetime.now(UTC)
        async with self.store.session() as s:
            row = (await s.execute(sa.select(device_reports.c.reported_at).where(
                device_reports.c.run_id == run_id, device_reports.c.device_id == device_id))).first()
            if row is None:
                await s.execute(device_reports.insert().values(
                    run_id=run_id, device_id=device_id, task_id=task_id, token_hash=_hash(token), issued_at=now))
            else:
                await s.execute(device_reports.update().where(
                    device_reports.c.run_id == run_id, device_reports.c.device_id == device_id,
                ).values(token_hash=_hash(token), issued_at=now))
        return token

    async def submit(self, device_id: str, run_id: str, report: ReportIn) -> Report:
        """Store a device's report; :class:`ReportRejected` for a wrong, foreign or reused token."""
        now = datetime.now(UTC)
        async with self.store.session() as s:
            row = (await s.execute(sa.select(device_reports).where(
                device_reports.c.run_id == run_id, device_reports.c.device_id == device_id))).first()
            # One answer whether the run did not push to this device or the token is wrong, so a
            # token cannot be used to learn which runs pushed to which devices.
            if row is None or not hmac.compare_digest(row.token_hash, _hash(report.report_token)):
                raise ReportRejected(403, f"no push of run {run_id} to device {device_id} carried this reportToken")
            # Only the first report counts: the UPDATE races safely on reported_at IS NULL.
            result = await s.execute(device_reports.update().where(
                device_reports.c.run_id == run_id, device_reports.c.device_id == device_id,
                device_reports.c.reported_at.is_(None),
            ).values(reported_at=now, success=report.success, data=report.data, error=report.error,
                     duration_ms=report.duration_ms, stop_reason=report.stop_reason))
            if result.rowcount == 0:
                raise ReportRejected(409, "this run's report from this device was already received; "
                                          "its reportToken cannot be used again")
        return Report(device_id, now, report.success, report.data, report.error, report.duration_ms,
                      report.stop_reason)

    async def reports(self, run_id: str) -> dict[str, Report]:
        async with self.store.session() as s:
            rows = (await s.execute(sa.select(device_reports).where(
                device_reports.c.run_id == run_id, device_reports.c.reported_at.is_not(None)))).all()
        return {r.device_id: Report(r.device_id, _aware(r.reported_at), bool(r.success), r.data, r.error,
                                    r.duration_ms, r.stop_reason) for r in rows}
