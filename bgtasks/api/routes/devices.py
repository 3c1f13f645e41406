"""``/devices``: the registry of phones bgtasks wakes (:mod:`mobile_push.registry`), and the
reports devices send about their runs (:mod:`mobile_push.reports`)."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field

from bgtasks.api import deps
from bgtasks.api.deps import MANAGE_DEVICES, READ, bearer, requires
from bgtasks.api.errors import DENIED, AuthError, field_problem, ok, problem, problems
from bgtasks.auth import ApiToken, Scope
from mobile_push.registry import Device, DeviceIn, DeviceUpdate
from mobile_push.reports import ReportIn
from mobile_push.types import Platform

router = APIRouter()


class DeviceReport(BaseModel):
    """A device's latest report for a run (docs/device-protocol.md)."""

    state: Literal["started", "stopped", "succeeded", "failed"]
    success: bool | None = Field(None, description="Set on a final report (succeeded, failed).")
    reported_at: str = Field(alias="reportedAt")
    started_at: str | None = Field(None, alias="startedAt", description="When the device first reported started.")
    stops: int | None = Field(None, description="How many times the system stopped the work.")
    data: Any = None
    error: str | None = None
    duration_ms: int | None = Field(None, alias="durationMs")
    stop_reason: str | None = Field(None, alias="stopReason")


@router.post("/devices", status_code=201, dependencies=MANAGE_DEVICES,
             responses=ok(Device, 201) | DENIED | problems(400, 409, 413, 422))
async def register_device(request: Request, body: DeviceIn = Body(...)) -> Any:
    """Register a device to wake with silent pushes; its token is checked for shape."""
    device = await deps.devices(request).add(body)
    return JSONResponse(device.public(), status_code=201)


@router.get("/devices", dependencies=READ, responses=ok(list[Device]) | DENIED | problems(422))
async def list_devices(request: Request, platform: Platform | None = None, label: str | None = None,
                       state: Literal["active", "invalid"] | None = None) -> Any:
    found = await deps.devices(request).list(platform=platform, label=label, state=state)
    return JSONResponse([d.public() for d in found])


@router.get("/devices/{device_id}", dependencies=READ, responses=ok(Device) | DENIED | problems(404))
async def get_device(request: Request, device_id: str) -> Any:
    return JSONResponse((await deps.devices(request).get(device_id)).public())


@router.put("/devices/{device_id}", responses=ok(Device) | DENIED | problems(400, 404, 409, 413, 422))
async def update_device(request: Request, device_id: str, body: DeviceUpdate = Body(...),
                        creds: HTTPAuthorizationCredentials | None = Security(bearer)) -> Any:
    """A new push token (tokens rotate) or labels. A device's own token may update it."""
    token = deps.authenticated(request)
    if token is not None and Scope.DEVICES_WRITE not in token.scopes:
        if Scope.DEVICES_REPORT not in token.scopes or token.device_id != device_id:
            raise AuthError(403, "updating a device needs devices:write, or the device's own token",
                            Scope.DEVICES_WRITE.value)
        if body.labels is not None:
            # Labels decide which tasks push to a device (and hand it their data): only an admin sets them.
            raise AuthError(403, "a device's own token may change only its push token; labels need devices:write",
                            Scope.DEVICES_WRITE.value)
    # A token of the wrong shape is a FieldProblem: 422 naming the field (bgtasks.api.errors).
    return JSONResponse((await deps.devices(request).update(device_id, body)).public())


@router.delete("/devices/{device_id}", status_code=204, dependencies=MANAGE_DEVICES,
               responses=DENIED | problems(404))
async def remove_device(request: Request, device_id: str) -> Response:
    await deps.devices(request).remove(device_id)
    return Response(status_code=204)


@router.post("/devices/{device_id}/runs/{run_id}/report", status_code=201,
             responses=ok(DeviceReport, 201) | DENIED | problems(400, 409, 413, 422))
async def report_run(request: Request, device_id: str, run_id: str, body: ReportIn = Body(...),
                     token: ApiToken | None = Depends(requires(Scope.DEVICES_REPORT))) -> Any:
    """A device reports what it did for a run, with the run's reportToken from the push: progress
    (started, stopped) any number of times, then one final report (succeeded or failed)."""
    if token is not None and token.device_id is not None and token.device_id != device_id:
        raise AuthError(403, f"this token belongs to device {token.device_id!r}: "
                             "a device can only report its own runs")
    limit = deps.settings(request).api.max_report_data_bytes
    size = len(json.dumps(body.data).encode())
    if size > limit:
        return field_problem(422, "Invalid input", "data", f"is {size} bytes as JSON, over the limit of {limit} "
                             "(BGTASKS_API_MAX_REPORT_DATA_BYTES)")
    report = await deps.ledger(request).submit(device_id, run_id, body)
    await deps.devices(request).touch(device_id)
    return JSONResponse(report.to_json_dict(), status_code=201)


class DeliveryOut(BaseModel):
    """One push of a run to a device, as its transport answered (or held by the push budget)."""

    run_id: str | None = Field(None, alias="runId")
    outcome: Literal["delivered", "invalid-token", "transient", "config", "held", "sending"]
    attempts: int
    message_id: str | None = Field(None, alias="messageId")
    reason: str | None = None
    error: str | None = None
    held_until: str | None = Field(None, alias="heldUntil", description="When a held push may go (outcome held).")
    updated_at: str | None = Field(None, alias="updatedAt")


@router.get("/devices/{device_id}/deliveries", dependencies=READ,
            responses=ok(list[DeliveryOut]) | DENIED | problems(404, 422))
async def device_deliveries(request: Request, device_id: str, limit: int = Query(50, ge=1, le=500)) -> Any:
    """The device's latest pushes, newest first: delivered, held by the budget (with the time it
    will go), or refused (with the service's reason)."""
    await deps.devices(request).get(device_id)  # 404 for an unknown device
    rows = await deps.ledger(request).device_deliveries(device_id, limit)
    out = []
    for d in rows:
        row = {"runId": d.run_id, **d.to_json_dict()}
        if d.updated_at is not None:
            row["updatedAt"] = d.updated_at.isoformat().replace("+00:00", "Z")
        out.append(row)
    return JSONResponse(out)


# ---- simulated phones: the push emulator's (``bgtasks up --push emulator``) -----------------


class PhoneState(BaseModel):
    """A simulated phone's state: what its owner does to it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    charging: bool | None = None
    battery: int | None = Field(None, ge=0, le=100, description="Percent.")
    network: Literal["wifi", "cellular", "none"] | None = None
    idle: bool | None = Field(None, description="Android: dozing; iOS: locked and unused.")
    storage_low: bool | None = Field(None, alias="storageLow")
    app_killed: bool | None = Field(None, alias="appKilled", description="Force-stopped / force-quit.")


class SimulatedWork(BaseModel):
    run_id: str = Field(alias="runId")
    task_name: str = Field(alias="taskName")
    status: Literal["running", "waiting"]
    waiting_for: str | None = Field(None, alias="waitingFor", description="The constraint or window it waits for.")
    expedited: bool
    stops: int


class SimulatedPhone(BaseModel):
    """A simulated phone of the push emulator: its state, its work and its recent log."""

    id: str
    platform: Literal["android", "ios"]
    labels: list[str]
    environment: str | None = None
    state: PhoneState
    uninstalled: bool
    work_ms: int = Field(alias="workMs")
    work: list[SimulatedWork]
    held_pushes: int = Field(alias="heldPushes", description="Pushes the push service holds for it.")
    finished_runs: int = Field(alias="finishedRuns")
    log: list[str]


async def _simulation(request: Request, method: str, path: str, body: Any = None) -> Any:
    from mobile_push.emulator.control import ControlClient
    from mobile_push.emulator.phones import FleetError

    try:
        return JSONResponse(await ControlClient(deps.settings(request).home / "emulator").arequest(method, path, body))
    except FleetError as exc:
        if exc.status == 404:
            return problem(404, "Not found", f"device is not a simulated phone: {exc.message}")
        if exc.status == 422:
            return field_problem(422, "Invalid input", exc.field, exc.message)
        return problem(409, "Conflict", exc.message)


@router.get("/devices/{device_id}/simulation", dependencies=READ,
            responses=ok(SimulatedPhone) | DENIED | problems(404, 409))
async def get_simulation(request: Request, device_id: str) -> Any:
    """A simulated phone (the push emulator's): its state, its work and what it did last."""
    return await _simulation(request, "GET", f"/phones/{device_id}")


@router.patch("/devices/{device_id}/simulation", dependencies=MANAGE_DEVICES,
              responses=ok(SimulatedPhone) | DENIED | problems(400, 404, 409, 413, 422))
async def set_simulation(request: Request, device_id: str, body: PhoneState = Body(...)) -> Any:
    """Change a simulated phone's state (only the fields given): plugging it in starts work that
    waits for a charger, unplugging stops it, and so on."""
    change = body.model_dump(by_alias=True, exclude_none=True)
    return await _simulation(request, "PATCH", f"/phones/{device_id}", change)
