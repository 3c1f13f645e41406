"""``/devices``: the registry of phones bgtasks wakes (:mod:`mobile_push.registry`), and the
reports devices send about their runs (:mod:`mobile_push.reports`)."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from bgtasks.api import deps
from bgtasks.api.deps import MANAGE_DEVICES, READ, bearer, requires
from bgtasks.api.errors import DENIED, AuthError, field_problem, ok, problems
from bgtasks.auth import ApiToken, Scope
from mobile_push.registry import Device, DeviceIn, DeviceUpdate
from mobile_push.reports import ReportIn
from mobile_push.types import Platform

router = APIRouter()


class DeviceReport(BaseModel):
    """A stored device report."""

    success: bool
    reported_at: str = Field(alias="reportedAt")
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
    """A device reports what it did for a run, with the run's reportToken from the push."""
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
