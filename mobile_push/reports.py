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
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

from bgtasks.store import Store
from bgtasks.store.schema import deliveries, device_reports
from bgtasks.store.schema import devices as devices_table


def delivery_key(run_id: str, device_id: str) -> str:
    return f"run:{run_id}:device:{device_id}"


#: A report's states (docs/device-protocol.md). ``started`` and ``stopped`` are progress: the
#: run keeps waiting and the report token stays valid. ``succeeded`` and ``failed`` are final:
#: they decide the device's part of the run and spend the token.
STARTED, STOPPED, SUCCEEDED, FAILED = "started", "stopped", "succeeded", "failed"
PROGRESS = (STARTED, STOPPED)
ReportState = Literal["started", "stopped", "succeeded", "failed"]


class ReportIn(BaseModel):
    """``POST /devices/{device_id}/runs/{run_id}/report``: what the device did."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    report_token: str = Field(min_length=1, max_length=200, description="The reportToken of the run's push payload.")
    state: ReportState | None = Field(None, description=(
        "started: the work began; stopped: the system stopped it and will run it again (stopReason says why); "
        "both may come any number of times and keep the reportToken valid. succeeded / failed: the final "
        "report, once. Without state, success decides: true is succeeded, false is failed."))
    success: bool | None = Field(None, validate_default=True, description="The final report's outcome; "
                                 "with state, only on succeeded (true) or failed (false).")
    data: Any = None
    error: str | None = Field(None, max_length=2000)
    duration_ms: int | None = Field(None, ge=0, le=7 * 24 * 3600 * 1000)
    stop_reason: str | None = Field(None, max_length=100, validate_default=True, description=(
        "Why the system stopped the work (WorkManager's stop reason, or \"expired\" for an iOS expiration "
        "handler): required with state stopped."))

    @field_validator("success")
    @classmethod
    def _success_matches_state(cls, v: bool | None, info: ValidationInfo) -> bool | None:
        state = info.data.get("state")
        if state is None and v is None and "state" in info.data:
            raise ValueError("is required when state is not given (or give state)")
        if state in PROGRESS and v is not None:
            raise ValueError(f"is only for a final report; a {state} report has none")
        if state in (SUCCEEDED, FAILED) and v is not None and v != (state == SUCCEEDED):
            raise ValueError(f"{str(v).lower()} contradicts state {state}")
        return v

    @field_validator("data")
    @classmethod
    def _data_only_when_final(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None and info.data.get("state") in PROGRESS:
            raise ValueError(f"is only for a final report (succeeded or failed), not {info.data['state']}")
        return v

    @field_validator("stop_reason")
    @classmethod
    def _stop_reason_with_stopped(cls, v: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("state") == STOPPED and not v:
            raise ValueError("is required with state stopped (why the system stopped the work)")
        return v

    @property
    def final_state(self) -> str:
        """The report's state, ``success`` read when ``state`` was not given."""
        if self.state is not None:
            return self.state
        return SUCCEEDED if self.success else FAILED


class ReportRejected(Exception):
    """``status`` 403 (no push of this run to this device with this token) / 409 (already reported)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


#: A delivery's outcome while the device's push budget holds it back (see :mod:`mobile_push.budget`).
HELD = "held"
#: A delivery's outcome from its budget slot's reservation until the service answers.
SENDING = "sending"


@dataclass(frozen=True)
class Delivery:
    device_id: str
    transport: str
    outcome: str
    attempts: int
    message_id: str | None
    error: str | None
    reason: str | None = None
    held_until: datetime | None = None
    run_id: str | None = None
    updated_at: datetime | None = None

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": self.outcome, "attempts": self.attempts}
        if self.message_id:
            out["messageId"] = self.message_id
        if self.reason:
            out["reason"] = self.reason
        if self.error:
            out["error"] = self.error
        if self.held_until is not None and self.outcome == HELD:
            out["heldUntil"] = _iso(self.held_until)
        return out


def _delivery(r: Any) -> Delivery:
    return Delivery(r.device_id, r.transport, r.outcome, r.attempts, r.message_id, r.error, r.reason,
                    r.held_until and _aware(r.held_until), r.run_id, _aware(r.updated_at))


def _iso(v: datetime) -> str:
    return _aware(v).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Report:
    """A device's latest report for a run: final (``succeeded``/``failed``) or progress."""

    device_id: str
    reported_at: datetime
    success: bool | None
    data: Any
    error: str | None
    duration_ms: int | None
    stop_reason: str | None
    state: str = SUCCEEDED
    started_at: datetime | None = None
    stops: int = 0

    @property
    def final(self) -> bool:
        return self.state not in PROGRESS

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "reportedAt": _iso(self.reported_at)}
        if self.final:
            out["success"] = bool(self.success)
        for key, value in (("data", self.data), ("error", self.error), ("durationMs", self.duration_ms),
                           ("stopReason", self.stop_reason)):
            if value is not None:
                out[key] = value
        if self.started_at is not None:
            out["startedAt"] = _iso(self.started_at)
        if self.stops:
            out["stops"] = self.stops
        return out


def _report(r: Any) -> Report:
    state = r.state or (SUCCEEDED if r.success else FAILED)  # rows from before states were kept
    final = r.reported_at is not None
    return Report(r.device_id, _aware(r.reported_at if final else r.updated_at), r.success if final else None,
                  r.data, r.error, r.duration_ms, r.stop_reason, state,
                  r.started_at and _aware(r.started_at), r.stops or 0)


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
        return {r.device_id: _delivery(r) for r in rows}

    async def device_deliveries(self, device_id: str, limit: int = 50) -> list[Delivery]:
        """The device's latest deliveries, newest first."""
        async with self.store.session() as s:
            rows = (await s.execute(sa.select(deliveries).where(deliveries.c.device_id == device_id)
                                    .order_by(deliveries.c.updated_at.desc()).limit(limit))).all()
        return [_delivery(r) for r in rows]

    async def reserve(self, run_id: str, task_id: str | None, devices: list[tuple[str, str]],
                      slot_of: Callable[[str, list[datetime]], datetime | None]) -> dict[str, datetime]:
        """Take a push-budget slot for each ``(device id, transport)``, atomically: in one
        transaction that locks the devices' rows, count each device's pushes of the trailing
        hour (accepted, or being sent by another run), ask ``slot_of(device id, times)`` when it
        may be pushed, and mark the ones free now :data:`SENDING` (counted by the next run that
        looks). Returns the others' slots. Two runs reaching one device at once cannot both
        take its last slot."""
        if not devices:
            return {}
        ids = sorted({d for d, _ in devices})
        now = datetime.now(UTC)
        held: dict[str, datetime] = {}
        async with self.store.session() as s:
            if s.bind.dialect.name == "sqlite":  # the write lock, taken now rather than at the first insert
                await s.execute(sa.update(devices_table).where(devices_table.c.id == ids[0]).values(id=ids[0]))
            await s.execute(sa.select(devices_table.c.id).where(devices_table.c.id.in_(ids))
                            .order_by(devices_table.c.id).with_for_update())  # PostgreSQL: row locks, in order
            rows = (await s.execute(sa.select(deliveries.c.device_id, deliveries.c.updated_at).where(
                deliveries.c.device_id.in_(ids), deliveries.c.outcome.in_(("delivered", SENDING)),
                deliveries.c.run_id != run_id, deliveries.c.updated_at > now - timedelta(hours=1)))).all()
            seen: dict[str, list[datetime]] = {}
            for r in rows:
                seen.setdefault(r.device_id, []).append(_aware(r.updated_at))
            for device_id, transport in devices:
                slot = slot_of(device_id, seen.get(device_id, []))
                if slot is not None:
                    held[device_id] = slot
                    continue
                key = delivery_key(run_id, device_id)
                if (await s.execute(sa.select(deliveries.c.idempotency_key)
                                    .where(deliveries.c.idempotency_key == key))).first() is None:
                    await s.execute(deliveries.insert().values(
                        idempotency_key=key, run_id=run_id, task_id=task_id, device_id=device_id,
                        transport=transport, outcome=SENDING, attempts=0, created_at=now, updated_at=now, holds=0))
                else:
                    await s.execute(deliveries.update().where(deliveries.c.idempotency_key == key).values(
                        outcome=SENDING, held_until=None, updated_at=now))
        return held

    async def record_delivery(self, *, run_id: str, task_id: str | None, device_id: str, transport: str,
                              outcome: str, attempts: int, message_id: str | None, error: str | None,
                              reason: str | None = None, held_until: datetime | None = None) -> None:
        """Insert or update the (run, device) delivery; attempts add up across retried runs.
        An outcome of :data:`HELD` with ``held_until`` records a hold of the push budget."""
        key = delivery_key(run_id, device_id)
        now = datetime.now(UTC)
        held = outcome == HELD
        values = dict(outcome=outcome, error=error and error[:1000], reason=reason and reason[:100],
                      held_until=held_until if held else None, updated_at=now)
        async with self.store.session() as s:
            row = (await s.execute(sa.select(deliveries).where(deliveries.c.idempotency_key == key))).first()
            if row is None:
                await s.execute(deliveries.insert().values(
                    idempotency_key=key, run_id=run_id, task_id=task_id, device_id=device_id, transport=transport,
                    message_id=message_id, attempts=attempts, created_at=now, holds=int(held), **values))
            else:
                # A hold renewed for the same wait is one hold, not one per check.
                new_hold = held and not (row.outcome == HELD and row.held_until is not None
                                         and _aware(row.held_until) == held_until)
                await s.execute(deliveries.update().where(deliveries.c.idempotency_key == key).values(
                    message_id=message_id or row.message_id, attempts=row.attempts + attempts,
                    holds=row.holds + int(new_hold), **values))

    async def stats(self) -> list[dict[str, Any]]:
        """Counts per (transport, outcome, reason) over every delivery kept: messages (one per run and
        device), attempts (sends), retries (attempts after a message's first) and budget holds."""
        async with self.store.session() as s:
            rows = (await s.execute(sa.select(
                deliveries.c.transport, deliveries.c.outcome, deliveries.c.reason,
                sa.func.count().label("messages"), sa.func.coalesce(sa.func.sum(deliveries.c.attempts), 0).label("attempts"),
                sa.func.coalesce(sa.func.sum(sa.case((deliveries.c.attempts > 1, deliveries.c.attempts - 1),
                                                     else_=0)), 0).label("retries"),
                sa.func.coalesce(sa.func.sum(deliveries.c.holds), 0).label("holds"),
            ).group_by(deliveries.c.transport, deliveries.c.outcome, deliveries.c.reason))).all()
        return [{"transport": r.transport, "outcome": r.outcome, "reason": r.reason, "messages": int(r.messages),
                 "attempts": int(r.attempts), "retries": int(r.retries), "holds": int(r.holds)} for r in rows]

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
        """Store a device's report; :class:`ReportRejected` for a wrong or foreign token, or for
        any report after the final one. A progress report (started, stopped) keeps the token."""
        now = datetime.now(UTC)
        state = report.final_state
        async with self.store.session() as s:
            row = (await s.execute(sa.select(device_reports).where(
                device_reports.c.run_id == run_id, device_reports.c.device_id == device_id))).first()
            # One answer whether the run did not push to this device or the token is wrong, so a
            # token cannot be used to learn which runs pushed to which devices.
            if row is None or not hmac.compare_digest(row.token_hash, _hash(report.report_token)):
                raise ReportRejected(403, f"no push of run {run_id} to device {device_id} carried this reportToken")
            values: dict[str, Any] = dict(state=state, updated_at=now, error=report.error,
                                          duration_ms=report.duration_ms, stop_reason=report.stop_reason)
            if state == STARTED:
                values["started_at"] = sa.func.coalesce(device_reports.c.started_at, now)
            elif state == STOPPED:
                values["stops"] = sa.func.coalesce(device_reports.c.stops, 0) + 1
            else:
                values.update(reported_at=now, success=state == SUCCEEDED, data=report.data)
            # Nothing after the final report: the UPDATE races safely on reported_at IS NULL.
            result = await s.execute(device_reports.update().where(
                device_reports.c.run_id == run_id, device_reports.c.device_id == device_id,
                device_reports.c.reported_at.is_(None),
            ).values(**values))
            if result.rowcount == 0:
                raise ReportRejected(409, "this run's final report from this device was already received; "
                                          "its reportToken cannot be used again")
            row = (await s.execute(sa.select(device_reports).where(
                device_reports.c.run_id == run_id, device_reports.c.device_id == device_id))).one()
        return _report(row)

    async def reports(self, run_id: str) -> dict[str, Report]:
        """Each device's latest report for the run, final or progress (``Report.final``)."""
        async with self.store.session() as s:
            rows = (await s.execute(sa.select(device_reports).where(
                device_reports.c.run_id == run_id, device_reports.c.state.is_not(None)
                | device_reports.c.reported_at.is_not(None)))).all()
        return {r.device_id: _report(r) for r in rows}
