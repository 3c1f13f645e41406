"""Simulated phones (mobile_push.emulator.phones) behind the push emulator, with a real worker,
Prefect server and REST API: targeted tasks run end to end with no hand-posted report. The
phones register through the REST API, receive only what the emulator accepted for their
tokens, and report with their own tokens, as the device guides do."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bgtasks.settings import Settings
from mobile_push.emulator.phones import IOS_TOPIC
from tests.fixtures import ApiProcess, WorkerHandle, make_token, start_worker, wait_for

pytestmark = pytest.mark.integration
BGTASKS = str(Path(os.environ.get("VIRTUAL_ENV", ".venv")) / "bin" / "bgtasks")


@pytest.fixture(scope="module")
def service(settings: Settings, api_process: ApiProcess) -> Iterator[Any]:
    """The emulator where `bgtasks up --push emulator` keeps it: the CLI and the API find it."""
    from mobile_push.emulator.control import EmulatorService
    from mobile_push.emulator.credentials import StoreCredentials

    svc = EmulatorService(settings.home / "emulator", api_process.base, StoreCredentials(settings.store_url)).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def worker(prefect_server: Any, settings: Settings, service: Any, api_process: ApiProcess) -> Iterator[WorkerHandle]:
    env = dict(service.emulator.settings_env(), BGTASKS_PUSH_PUBLIC_URL=api_process.base,
               BGTASKS_PUSH_INITIAL_BACKOFF_S="0.05")
    w = start_worker(settings, limit=4, env=env)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def admin(api_process: ApiProcess, settings: Settings) -> Iterator[httpx.Client]:
    token = make_token(settings, "tasks:read", "tasks:write", "devices:write", name="phones-admin")
    with httpx.Client(base_url=api_process.base, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def cli(*args: str) -> Any:
    proc = subprocess.run([BGTASKS, *args, "-o", "json"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


def simulate(platform: str, count: int, label: str) -> list[str]:
    return [p["id"] for p in cli("device", "simulate", "--platform", platform, "--count", str(count),
                                 "--label", label)]


def create(admin: httpx.Client, label: str, **extra: Any) -> dict[str, Any]:
    body = {"name": f"sim-{label}", "handler": "sync", "schedule": {"type": "one-time"},
            "target": {"labels": [label]}, "timeoutMs": 120_000, "retryPolicy": {"maxRetries": 0},
            "data": {"album": label}, **extra}
    resp = admin.post("/tasks", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def phone(admin: httpx.Client, device_id: str) -> dict[str, Any]:
    resp = admin.get(f"/devices/{device_id}/simulation")
    assert resp.status_code == 200, resp.text
    return resp.json()


async def until_phone(admin: httpx.Client, device_id: str, check: Any, what: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        p = phone(admin, device_id)
        return p if check(p) else None

    return await wait_for(probe, 120, f"{device_id}: {what}")


async def finished(admin: httpx.Client, task_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        task = admin.get(f"/tasks/{task_id}").json()
        return task if task.get("result") is not None else None

    return await wait_for(done, 240, f"task {task_id} to finish")


def reports(settings: Settings, run_id: str) -> dict[str, dict[str, Any]]:
    from mobile_push.reports import RunLedger
    from tests.fixtures import _in_store

    found = _in_store(settings, lambda store: RunLedger(store).reports(run_id))
    return {device: r.to_json_dict() for device, r in found.items()}


def set_state(admin: httpx.Client, device_id: str, **change: Any) -> dict[str, Any]:
    resp = admin.patch(f"/devices/{device_id}/simulation", json=change)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_the_readme_walk_through_one_phone_waits_for_its_charger_then_both_reports_close_the_run(
    service: Any, worker: WorkerHandle, admin: httpx.Client, settings: Settings
) -> None:
    plugged, unplugged = simulate("android", 2, "walk")
    assert cli("device", "set", plugged, "--charging")["state"]["charging"] is True
    task = create(admin, "walk", constraints={"requiresCharging": True})
    waiting = await until_phone(admin, unplugged, lambda p: p["work"], "the run to arrive")
    assert waiting["work"][0]["waitingFor"] == "requiresCharging" and waiting["work"][0]["status"] == "waiting"
    assert admin.get(f"/tasks/{task['id']}").json().get("result") is None  # the run waits for the second phone
    set_state(admin, unplugged, charging=True)  # plug it in
    done = await finished(admin, task["id"])
    assert done["status"] == "completed", done
    got = reports(settings, done["result"]["runId"])
    assert {d: r["state"] for d, r in got.items()} == {plugged: "succeeded", unplugged: "succeeded"}
    assert got[unplugged]["data"] == {"device": unplugged, "handler": "sync", "input": {"album": "walk"}}
    # What `bgtasks device ls` and the deliveries show for them.
    listed = {d["id"]: d for d in cli("device", "ls", "--label", "walk")}
    assert set(listed) == {plugged, unplugged} and all(d["state"] == "active" for d in listed.values())
    deliveries = admin.get(f"/devices/{unplugged}/deliveries").json()
    assert deliveries[0]["runId"] == done["result"]["runId"] and deliveries[0]["outcome"] == "delivered"


async def test_a_mixed_fleet_runs_end_to_end_offline_dead_and_throttled_phones_are_named(
    service: Any, worker: WorkerHandle, admin: httpx.Client, settings: Settings
) -> None:
    """Android and iOS; one Android offline, one iOS uninstalled (a dead token), one iOS whose
    background-push budget is spent: the others report, the run fails naming the missing ones,
    the dead token's device is marked invalid."""
    droid_ok, droid_offline = simulate("android", 2, "mixed")
    ios_ok, ios_dead, ios_throttled = simulate("ios", 3, "mixed")
    set_state(admin, droid_offline, network="none")
    cli("device", "set", ios_dead, "--uninstall")
    service.fleet.call(_spend_budget(service.fleet, ios_throttled))
    task = create(admin, "mixed", timeoutMs=30_000, handler="quick")  # iOS: the push's own 30 s
    done = await finished(admin, task["id"])
    assert done["status"] == "failed", done
    error = done["result"]["error"]
    assert "no final report from 2 device(s)" in error and droid_offline in error and ios_throttled in error
    got = reports(settings, done["result"]["runId"])
    assert {d: r["state"] for d, r in got.items()} == {droid_ok: "succeeded", ios_ok: "succeeded"}
    dead = admin.get(f"/devices/{ios_dead}").json()
    assert dead["state"] == "invalid", dead
    throttled = phone(admin, ios_throttled)
    assert any("throttled by iOS" in line for line in throttled["log"]) and throttled["work"] == []
    offline = phone(admin, droid_offline)
    assert offline["heldPushes"] == 1 and offline["work"] == []  # FCM holds it until the phone is online
    set_state(admin, droid_offline, network="wifi")  # back online within the push's TTL: it works, late

    async def late() -> dict[str, Any] | None:
        r = reports(settings, done["result"]["runId"]).get(droid_offline)
        return r if r is not None and r["state"] != "started" else None  # past its progress report

    assert (await wait_for(late, 120, "the late report"))["state"] == "succeeded"
    assert admin.get(f"/tasks/{task['id']}").json()["status"] == "failed"  # shown, but the run had ended


async def _spend_budget(fleet: Any, device_id: str) -> None:
    fleet.phones[device_id].push_budget_per_hour = 0


async def test_a_constraint_lost_mid_work_stops_it_and_the_retried_work_reports_with_the_same_token(
    service: Any, worker: WorkerHandle, admin: httpx.Client, settings: Settings
) -> None:
    """Android: unplugged mid-work, WorkManager stops the worker (stopped, its stop reason) and runs
    it again once plugged. iOS: the BGProcessingTask starts only idle and charging; the phone in
    use again fires the expiration handler (stopped, "expired"), and the next window finishes it."""
    [droid] = simulate("android", 1, "stops")
    [iphone] = simulate("ios", 1, "stops")
    set_state(admin, droid, charging=True)
    # The first try works for ten minutes (it is stopped long before), the retried one at once.
    task = create(admin, "stops", constraints={"requiresCharging": True}, data={"workMs": [600_000, 0]})
    await until_phone(admin, droid, lambda p: p["work"] and p["work"][0]["status"] == "running", "work to run")
    waiting = await until_phone(admin, iphone, lambda p: p["work"], "the push")
    assert waiting["work"][0]["waitingFor"] == "requiresCharging", waiting
    set_state(admin, iphone, charging=True)
    waiting = phone(admin, iphone)  # the constraint holds; iOS starts processing tasks only when idle
    assert waiting["work"][0]["waitingFor"].startswith("BGProcessingTask"), waiting
    set_state(admin, iphone, idle=True)
    await until_phone(admin, iphone, lambda p: p["work"] and p["work"][0]["status"] == "running", "the window")
    run_id = waiting["work"][0]["runId"]

    set_state(admin, droid, charging=False)
    set_state(admin, iphone, idle=False)
    await until_phone(admin, droid, lambda p: p["work"] and p["work"][0]["stops"] == 1, "the stop")
    await until_phone(admin, iphone, lambda p: p["work"] and p["work"][0]["stops"] == 1, "the expiration")

    async def both_stopped() -> dict[str, Any] | None:
        got = reports(settings, run_id)
        return got if {r["state"] for r in got.values()} == {"stopped"} and len(got) == 2 else None

    stopped = await wait_for(both_stopped, 120, "both stop reports")
    assert stopped[droid]["stopReason"] == "STOP_REASON_CONSTRAINT_CHARGING"
    assert stopped[iphone]["stopReason"] == "expired"
    assert admin.get(f"/tasks/{task['id']}").json().get("result") is None  # a stop is not a failure

    set_state(admin, droid, charging=True)
    set_state(admin, iphone, idle=True)
    done = await finished(admin, task["id"])
    assert done["status"] == "completed", done
    got = reports(settings, run_id)
    assert {d: (r["state"], r["stops"]) for d, r in got.items()} == {droid: ("succeeded", 1), iphone: ("succeeded", 1)}


async def test_a_rotated_token_keeps_the_phone_receiving(
    service: Any, worker: WorkerHandle, admin: httpx.Client, settings: Settings
) -> None:
    [droid] = simulate("android", 1, "rotate")
    old = admin.get(f"/devices/{droid}").json()["token"]
    cli("device", "set", droid, "--rotate-token")
    new = admin.get(f"/devices/{droid}").json()
    assert new["token"] != old and new["state"] == "active"
    task = create(admin, "rotate")
    done = await finished(admin, task["id"])
    assert done["status"] == "completed", done
    assert reports(settings, done["result"]["runId"])[droid]["state"] == "succeeded"


def test_bad_state_changes_name_the_field_and_change_nothing(service: Any, admin: httpx.Client) -> None:
    [droid] = simulate("android", 1, "bad")
    before = phone(admin, droid)
    for body, field in (({"battery": 140}, "battery"), ({"network": "5g"}, "network"), ({"charging": "maybe"}, "charging"),
                        ({"charging": True, "flying": True}, "flying")):
        resp = admin.patch(f"/devices/{droid}/simulation", json=body)
        assert resp.status_code == 422 and field in resp.text, (body, resp.text)
    assert phone(admin, droid)["state"] == before["state"]
    missing = admin.get("/devices/no-such-phone/simulation")
    assert missing.status_code == 404, missing.text


# ---- the platforms' delivery rules, pushed by bgtasks' own senders --------------------------


async def push(service: Any, settings: Settings, device_id: str, n: int, *, high: bool = False,
               constraints: dict[str, bool] | None = None, run_ids: list[str] | None = None) -> list[str]:
    """``n`` pushes (or one per ``run_ids``), one after the other, to a simulated phone through the
    emulator, as a run would send them (through the worker's push service: a second APNs provider
    token within 20 minutes is refused), but with no report token: the phone's reports are
    refused (403), its log shows what it did."""
    import uuid

    from bgtasks.settings import PushSettings
    from mobile_push.payload import build_payload
    from mobile_push.service import senders_for, worker_socket
    from mobile_push.types import OutcomeKind, Platform, PushMessage, PushTarget, Transport

    p = service.fleet.phones[device_id]
    android = p.platform == "android"
    target = PushTarget(device_id, Platform.ANDROID if android else Platform.IOS,
                        Transport.FCM if android else Transport.APNS, p.token, None if android else IOS_TOPIC)
    env = service.emulator.settings_env()
    push_settings = PushSettings(**{k.removeprefix("BGTASKS_PUSH_").lower(): v for k, v in env.items()})
    socket = worker_socket(settings.home)
    assert socket is not None, "the worker serves its senders"
    senders = await senders_for(push_settings, socket)
    runs = run_ids or [str(uuid.uuid4()) for _ in range(n)]
    try:
        for run in runs:
            payload = build_payload(task_id="t", run_id=run, task_name="rules", handler="quick",
                                    constraints=constraints or {}, data={"workMs": 0}, report_token="rt-none",
                                    report_base_url=service.api_url, device_id=device_id)
            [result] = await senders[target.transport].send([PushMessage(target, payload, high_priority=high)])
            assert result.kind == OutcomeKind.DELIVERED, result
    finally:
        for sender in senders.values():
            await sender.aclose()
    return runs


async def test_android_delivery_follows_fcm_and_workmanager(
    service: Any, worker: WorkerHandle, admin: httpx.Client, settings: Settings
) -> None:
    """Doze holds normal-priority messages, not high-priority ones; a high-priority message whose
    constraints are network-only starts expedited work; a run pushed twice runs once (KEEP, and
    the finished-runs list beyond it); over 100 pending messages for an offline phone are all
    dropped and onDeletedMessages fires when it is back."""
    [dozing, offline] = simulate("android", 2, "rules-android")
    set_state(admin, dozing, idle=True)
    [normal] = await push(service, settings, dozing, 1)
    [urgent] = await push(service, settings, dozing, 1, high=True, constraints={"requiresNetwork": True})
    p = await until_phone(admin, dozing, lambda p: p["finishedRuns"] == 1, "the high-priority run")
    assert p["heldPushes"] == 1 and any("expedited work" in line and urgent[:8] in line for line in p["log"])
    await push(service, settings, dozing, 1, high=True, run_ids=[urgent])  # delivered again: a duplicate
    p = await until_phone(admin, dozing, lambda p: any("KEEP" in line for line in p["log"]), "the duplicate")
    assert p["finishedRuns"] == 1 and p["heldPushes"] == 1
    set_state(admin, dozing, idle=False)  # out of Doze: the held message arrives and runs
    p = await until_phone(admin, dozing, lambda p: p["finishedRuns"] == 2, "the normal run")
    assert any(f"onMessageReceived: run {normal[:8]}" in line for line in p["log"])

    set_state(admin, offline, network="none")
    await push(service, settings, offline, 101)
    p = await until_phone(admin, offline, lambda p: any("dropped them all" in line for line in p["log"]), "the drop")
    assert p["heldPushes"] == 0
    set_state(admin, offline, network="wifi")
    p = phone(admin, offline)
    assert any("onDeletedMessages" in line for line in p["log"]) and p["work"] == [] and p["finishedRuns"] == 0


async def test_ios_delivery_follows_apns_and_the_push_budget(
    service: Any, worker: WorkerHandle, admin: httpx.Client, settings: Settings
) -> None:
    """APNs keeps only the last background push for an offline phone; iOS lets a few background
    pushes an hour through and throttles the rest."""
    [iphone] = simulate("ios", 1, "rules-ios")
    set_state(admin, iphone, network="none")
    runs = await push(service, settings, iphone, 3)
    p = await until_phone(admin, iphone, lambda p: sum("stored by APNs" in x for x in p["log"]) == 3, "the pushes")
    assert p["heldPushes"] == 1
    set_state(admin, iphone, network="wifi")
    p = await until_phone(admin, iphone, lambda p: p["finishedRuns"] == 1, "the last push's run")
    assert any(f"didReceiveRemoteNotification: run {runs[-1][:8]}" in line for line in p["log"])
    assert not any(f"didReceiveRemoteNotification: run {runs[0][:8]}" in line for line in p["log"])
    more = await push(service, settings, iphone, 3)  # the budget: 3 an hour, one used
    p = await until_phone(admin, iphone, lambda p: any("throttled by iOS" in x for x in p["log"]), "the throttle")
    p = await until_phone(admin, iphone, lambda p: p["finishedRuns"] == 3, "the budget's runs")
    assert sum("throttled by iOS" in line for line in p["log"]) == 1
    assert any("throttled by iOS" in line and more[-1][:8] in line for line in p["log"])
