"""A device's own token stays in its lane: its push token, its reports, nothing else.

Against ``bgtasks api`` and bgtasks' real database: a device cannot enrol itself into
label-targeted tasks, report for another device, outlive its device, or learn which
runs pushed to which devices.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bgtasks.settings import Settings
from tests.fixtures import ApiProcess, _in_store, make_token

pytestmark = [pytest.mark.integration, pytest.mark.postgresql]


@pytest.fixture(scope="module")
def admin(api_process: ApiProcess, settings: Settings) -> Iterator[httpx.Client]:
    token = make_token(settings, "tasks:read", "devices:write", name="lane-admin")
    with httpx.Client(base_url=api_process.base, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def _register(admin: httpx.Client, labels: list[str] | None = None) -> dict[str, Any]:
    body = {"id": f"phone-{uuid.uuid4().hex[:8]}", "platform": "ios", "token": secrets.token_hex(32),
            "topic": "com.example.app", "labels": labels or []}
    made = admin.post("/devices", json=body)
    assert made.status_code == 201, made.text
    return made.json()


def _issue(settings: Settings, run_id: str, device_id: str) -> str:
    """A report token for (run, device), as a run that pushed to the device issues it."""
    from mobile_push.reports import RunLedger

    async def issue(store: Any) -> str:
        return await RunLedger(store).issue_token(run_id, device_id, None)

    return _in_store(settings, issue)


def _client(api_process: ApiProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=api_process.base, timeout=60, headers={"Authorization": f"Bearer {token}"})


def test_a_device_token_changes_its_push_token_but_not_its_labels(admin: httpx.Client, api_process: ApiProcess,
                                                                  settings: Settings) -> None:
    device = _register(admin, ["beta"])
    other = _register(admin)
    with _client(api_process, make_token(settings, "devices:report", device=device["id"])) as own:
        enrol = own.put(f"/devices/{device['id']}", json={"labels": ["beta", "payments"]})
        assert enrol.status_code == 403 and "devices:write" in enrol.text
        both = own.put(f"/devices/{device['id']}", json={"labels": ["payments"], "token": secrets.token_hex(32)})
        assert both.status_code == 403
        assert admin.get(f"/devices/{device['id']}").json()["labels"] == ["beta"]
        new_token = secrets.token_hex(32)
        rotated = own.put(f"/devices/{device['id']}", json={"token": new_token})
        assert rotated.status_code == 200 and rotated.json()["token"].startswith(new_token[:6])
        # Another device's record is not its to touch.
        assert own.put(f"/devices/{other['id']}", json={"token": secrets.token_hex(32)}).status_code == 403


def test_a_device_token_reports_only_for_its_device(admin: httpx.Client, api_process: ApiProcess,
                                                    settings: Settings) -> None:
    mine, theirs = _register(admin), _register(admin)
    with _client(api_process, make_token(settings, "devices:report", device=mine["id"])) as own:
        answer = own.post(f"/devices/{theirs['id']}/runs/{uuid.uuid4()}/report",
                          json={"reportToken": "x", "success": True})
        assert answer.status_code == 403 and "only report its own runs" in answer.text, answer.text


def test_an_unbound_report_token_learns_nothing_from_the_answer(admin: httpx.Client, api_process: ApiProcess,
                                                                      settings: Settings) -> None:
    """No such run, a run that did not push to this device, a wrong report token: one answer."""
    device = _register(admin)
    run_id = str(uuid.uuid4())
    _issue(settings, run_id, device["id"])  # the run pushed to this device
    with _client(api_process, make_token(settings, "devices:report")) as reporter:
        answers = [reporter.post(f"/devices/{device['id']}/runs/{rid}/report", json={"reportToken": "guess",
                                                                                     "success": True})
                   for rid in (run_id, str(uuid.uuid4()))]
        other = _register(admin)
        answers.append(reporter.post(f"/devices/{other['id']}/runs/{run_id}/report",
                                     json={"reportToken": "guess", "success": True}))
    assert [a.status_code for a in answers] == [403, 403, 403]
    details = {re.sub(r"run \S+ to device \S+", "run R to device D", a.json()["detail"]) for a in answers}
    assert details == {"no push of run R to device D carried this reportToken"}, details


def test_deleting_a_device_revokes_its_tokens(admin: httpx.Client, api_process: ApiProcess,
                                              settings: Settings) -> None:
    device = _register(admin)
    token = make_token(settings, "devices:report", device=device["id"])
    with _client(api_process, token) as own:
        assert own.put(f"/devices/{device['id']}", json={"token": secrets.token_hex(32)}).status_code == 200
        assert admin.delete(f"/devices/{device['id']}").status_code == 204
        gone = own.put(f"/devices/{device['id']}", json={"token": secrets.token_hex(32)})
        assert gone.status_code == 401
        # Registering a device of the same id again does not bring the old token back.
        again = admin.post("/devices", json={"id": device["id"], "platform": "ios", "token": secrets.token_hex(32),
                                             "topic": "com.example.app"})
        assert again.status_code == 201
        assert own.put(f"/devices/{device['id']}", json={"token": secrets.token_hex(32)}).status_code == 401


def test_a_device_token_needs_its_device(settings: Settings) -> None:
    from bgtasks.auth import Scope, TokenStore

    async def create(store: Any) -> Any:
        return await TokenStore(store).create("orphan", frozenset({Scope.DEVICES_REPORT}), "never-registered")

    with pytest.raises(ValueError, match="no device 'never-registered' is registered"):
        _in_store(settings, create)


async def test_a_device_task_needs_an_https_public_url(manager: Any) -> None:
    """Devices send their report tokens to BGTASKS_PUSH_PUBLIC_URL: without one (this test
    session sets none) a device-targeted task is refused, naming the fix; nothing is stored."""
    from bgtasks.errors import InvalidTask

    assert manager.settings.push.public_url is None
    before = {t.name for t in await manager.list()}
    with pytest.raises(InvalidTask) as refused:
        await manager.create({"name": "wake-without-url", "handler": "sync", "schedule": {"type": "one-time"},
                              "target": {"deviceIds": ["phone-1"]}})
    [error] = refused.value.errors
    assert error["field"] == "target" and "BGTASKS_PUSH_PUBLIC_URL" in error["message"]
    assert {t.name for t in await manager.list()} == before


def test_a_device_reports_data_is_bounded(admin: httpx.Client, api_process: ApiProcess,
                                                 settings: Settings) -> None:
    device = _register(admin)
    run_id = str(uuid.uuid4())
    report_token = _issue(settings, run_id, device["id"])
    with _client(api_process, make_token(settings, "devices:report", device=device["id"])) as own:
        url = f"/devices/{device['id']}/runs/{run_id}/report"
        big = own.post(url, json={"reportToken": report_token, "success": True, "data": {"blob": "x" * 70_000}})
        assert big.status_code == 422 and big.json()["errors"][0]["field"] == "data", big.text
        assert "BGTASKS_API_MAX_REPORT_DATA_BYTES" in big.text
        # Nothing was stored: the report token still works, once, with data within the bound.
        ok = own.post(url, json={"reportToken": report_token, "success": True, "data": {"blob": "x" * 1000}})
        assert ok.status_code == 201, ok.text
