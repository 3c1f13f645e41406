"""Tasks that target devices, end to end: the REST API, a real worker running the
device flow, silent pushes to the local FCM and APNs fakes (real HTTP/2 + TLS,
real firebase-admin), device reports through the API, and the run's result."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bgtasks.settings import Settings
from tests.fakes import FakeAPNs, FakeFCM
from tests.fixtures import ApiProcess, WorkerHandle, make_token, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.postgresql]

BUNDLE = "com.example.app"
DEADLINE_S = 180


def fcm_token() -> str:
    return secrets.token_urlsafe(16).replace("-", "a") + ":" + "APA91b" + secrets.token_urlsafe(100)[:134]


def apns_token() -> str:
    return secrets.token_hex(32)


@pytest.fixture(scope="module")
def apns_pair() -> Iterator[tuple[FakeAPNs, FakeAPNs]]:
    """APNs production and sandbox: two hosts, one team key."""
    with FakeAPNs(topics={BUNDLE}) as production:
        assert production.private_key is not None
        with FakeAPNs(production.team_id, production.key_id, production.private_key.public_key(),
                      topics={BUNDLE}) as sandbox:
            yield production, sandbox


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory,
          apns_pair: tuple[FakeAPNs, FakeAPNs]) -> Iterator[tuple[FakeFCM, FakeAPNs, dict[str, str]]]:
    keys = tmp_path_factory.mktemp("push-keys")
    apns, sandbox = apns_pair
    cas = keys / "cas.pem"
    cas.write_bytes(apns.ca_cert_path.read_bytes() + sandbox.ca_cert_path.read_bytes())
    with FakeFCM() as fcm:
        env = {
            "BGTASKS_PUSH_FCM_CREDENTIALS_FILE": str(fcm.write_service_account_file(keys / "service-account.json")),
            "BGTASKS_PUSH_FCM_URL": fcm.send_url,
            "BGTASKS_PUSH_APNS_KEY_FILE": str(apns.write_auth_key(keys)),
            "BGTASKS_PUSH_APNS_KEY_ID": apns.key_id,
            "BGTASKS_PUSH_APNS_TEAM_ID": apns.team_id,
            "BGTASKS_PUSH_APNS_BASE_URL": apns.base_url,
            "BGTASKS_PUSH_APNS_OTHER_BASE_URL": sandbox.base_url,
            "BGTASKS_PUSH_APNS_CA_FILE": str(cas),
            "BGTASKS_PUSH_INITIAL_BACKOFF_S": "0.05",
        }
        yield fcm, apns, env


@pytest.fixture(scope="module")
def push_worker(prefect_server: Any, settings: Settings, fakes: Any, api_process: ApiProcess) -> Iterator[WorkerHandle]:
    env = dict(fakes[2], BGTASKS_PUSH_PUBLIC_URL=api_process.base)
    w = start_worker(settings, limit=4, env=env)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def admin(api_process: ApiProcess, settings: Settings) -> Iterator[httpx.Client]:
    token = make_token(settings, "tasks:read", "tasks:write", "devices:write", name="push-admin")
    with httpx.Client(base_url=api_process.base, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def device_client(api_process: ApiProcess, settings: Settings, device_id: str) -> httpx.Client:
    token = make_token(settings, "devices:report", name=f"phone-{device_id}", device=device_id)
    return httpx.Client(base_url=api_process.base, timeout=60, headers={"Authorization": f"Bearer {token}"})


def report_success(api_process: ApiProcess, settings: Settings, device_id: str, payload: dict[str, str]) -> int:
    """The device reports its run done, with its own token and the run's report token (the status)."""
    with device_client(api_process, settings, device_id) as phone:
        return phone.post(payload["reportUrl"].removeprefix(api_process.base),
                          json={"reportToken": payload["reportToken"], "success": True}).status_code


def register(admin: httpx.Client, platform: str, token: str, **extra: Any) -> dict[str, Any]:
    body = {"id": f"{platform}-{secrets.token_hex(4)}", "platform": platform, "token": token, **extra}
    resp = admin.post("/devices", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def create(admin: httpx.Client, target: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {"name": f"wake-{secrets.token_hex(4)}", "handler": "sync-photos",
            "schedule": {"type": "one-time"}, "target": target, "timeoutMs": 120_000,
            "data": {"album": "holidays"}, **extra}
    resp = admin.post("/tasks", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def until(check: Any, what: str) -> Any:
    from tests.fixtures import wait_for

    async def probe() -> Any:
        return await asyncio.to_thread(check)

    return await wait_for(probe, DEADLINE_S, what)


async def pushed(admin: httpx.Client, task_id: str, fake: Any, payload_of: Any, token: str | None = None) -> Any:
    """The accepted push(es) of the task's run on ``fake`` (to ``token`` if given); fails at
    once, with the run's error, if the run ends first."""

    def check() -> Any:
        found = [r for r in fake.requests.snapshot() if r.ok and payload_of(r).get("taskId") == task_id
                 and (token is None or token in (getattr(r, "device_token", None), getattr(r, "target", None)))]
        if not found and (done := finished(admin, task_id)):
            raise AssertionError(f"the run ended before pushing: {done['result']}")
        return found

    return (await until(check, f"the push of task {task_id}"))[0]


def finished(admin: httpx.Client, task_id: str) -> Any:
    task = admin.get(f"/tasks/{task_id}").json()
    return task if task["status"] in ("completed", "failed") and task.get("result") else None


async def settled(admin: httpx.Client, task_id: str) -> dict[str, Any]:
    """The finished task, read again once its wake-devices task run is final in the API
    (task-run states arrive as events after the flow run's final state; attempts come from them)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from tests.fixtures import wait_for

    task = await until(lambda: finished(admin, task_id), "the run to finish")
    run_id = task["result"]["runId"]

    async def final() -> bool:
        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        wake = [r for r in runs if r.name.startswith("wake-devices")]
        return bool(wake) and all(r.state is not None and r.state.is_final() for r in wake)

    await wait_for(final, DEADLINE_S, "the wake-devices task run to be final")
    return admin.get(f"/tasks/{task_id}").json()


def pushes_to(fake: Any, token: str) -> list[Any]:
    return [r for r in fake.requests.snapshot() if (getattr(r, "device_token", None) or getattr(r, "target", None)) == token]


def fcm_payload(request: Any) -> dict[str, str]:
    return request.message["data"]


def apns_payload(request: Any) -> dict[str, str]:
    return request.payload["bgtasks"]


async def test_a_task_wakes_an_android_and_an_ios_device_and_collects_their_reports(
    fakes: Any, push_worker: WorkerHandle, admin: httpx.Client, api_process: ApiProcess, settings: Settings
) -> None:
    fcm, apns, _ = fakes
    android = register(admin, "android", fcm_token(), labels=["beta"])
    ios = register(admin, "ios", apns_token(), topic=BUNDLE)
    a_token = [d for d in admin.get("/devices").json() if d["id"] == android["id"]][0]
    assert a_token["state"] == "active"
    task = create(admin, {"deviceIds": [android["id"], ios["id"]]})

    fcm_req = await pushed(admin, task["id"], fcm, fcm_payload)
    apns_req = await pushed(admin, task["id"], apns, apns_payload)
    # FCM: data-only, normal priority, every value a string.
    msg = fcm_req.message
    assert "notification" not in msg and msg["android"]["priority"] == "normal"
    assert all(isinstance(v, str) for v in msg["data"].values())
    # APNs: a background push, priority 5, the bundle as topic, content-available and nothing visible.
    assert apns_req.headers["apns-push-type"] == "background" and apns_req.headers["apns-priority"] == "5"
    assert apns_req.headers["apns-topic"] == BUNDLE
    assert apns_req.payload["aps"] == {"content-available": 1}
    for payload in (fcm_payload(fcm_req), apns_payload(apns_req)):
        assert payload["handler"] == "sync-photos" and json.loads(payload["data"]) == {"album": "holidays"}
        assert json.loads(payload["constraints"]) == {}  # the task has none
    run_id = fcm_payload(fcm_req)["runId"]
    assert apns_payload(apns_req)["runId"] == run_id

    a_report = fcm_payload(fcm_req)
    i_report = apns_payload(apns_req)
    with device_client(api_process, settings, android["id"]) as phone, \
         device_client(api_process, settings, ios["id"]) as iphone:
        # A device cannot report another device's run, nor with a wrong token.
        foreign = phone.post(f"/devices/{ios['id']}/runs/{run_id}/report",
                             json={"reportToken": i_report["reportToken"], "success": True})
        assert foreign.status_code == 403 and "own runs" in foreign.json()["detail"]
        wrong = phone.post(f"/devices/{android['id']}/runs/{run_id}/report",
                           json={"reportToken": "not-the-token", "success": False})
        assert wrong.status_code == 403
        ok = phone.post(a_report["reportUrl"].removeprefix(api_process.base),
                        json={"reportToken": a_report["reportToken"], "success": True,
                              "data": {"photos": 12}, "durationMs": 850})
        assert ok.status_code == 201, ok.text
        reused = phone.post(a_report["reportUrl"].removeprefix(api_process.base),
                            json={"reportToken": a_report["reportToken"], "success": False})
        assert reused.status_code == 409
        ok = iphone.post(i_report["reportUrl"].removeprefix(api_process.base),
                         json={"reportToken": i_report["reportToken"], "success": True, "data": {"photos": 3}})
        assert ok.status_code == 201, ok.text

    done = await until(lambda: finished(admin, task["id"]), "the run to finish")
    assert done["status"] == "completed", done
    data = done["result"]["data"]
    reports = {row["deviceId"]: row["report"] for row in data["devices"]}
    assert reports[android["id"]]["data"] == {"photos": 12} and reports[android["id"]]["success"] is True
    assert reports[ios["id"]]["data"] == {"photos": 3}
    assert data["missing"] == [] and sorted(data["reported"]) == sorted([android["id"], ios["id"]])
    # One push each: the wrong and reused reports changed nothing.
    assert len(pushes_to(fcm, fcm_req.target)) == 1 and len(pushes_to(apns, apns_req.device_token)) == 1


async def test_dead_tokens_mark_devices_invalid_and_the_next_run_skips_them(
    fakes: Any, push_worker: WorkerHandle, admin: httpx.Client, api_process: ApiProcess, settings: Settings
) -> None:
    fcm, apns, _ = fakes
    label = f"group-{secrets.token_hex(3)}"
    dead_fcm, dead_apns, live_apns = fcm_token(), apns_token(), apns_token()
    fcm.unregister(dead_fcm)      # 404 UNREGISTERED
    apns.unregister(dead_apns)    # 410 Unregistered
    dead_android = register(admin, "android", dead_fcm, labels=[label])
    dead_ios = register(admin, "ios", dead_apns, topic=BUNDLE, labels=[label])
    alive = register(admin, "ios", live_apns, topic=BUNDLE, labels=[label])

    async def run_and_report() -> dict[str, Any]:
        task = create(admin, {"labels": [label]}, timeoutMs=60_000)
        req = await pushed(admin, task["id"], apns, apns_payload, live_apns)
        payload = apns_payload(req)
        assert report_success(api_process, settings, alive["id"], payload) == 201
        return await until(lambda: finished(admin, task["id"]), "the run to finish")

    first = await run_and_report()
    assert first["status"] == "failed"  # two pushes were refused for good
    assert "not delivered" in first["result"]["error"]
    states = {d["id"]: d for d in admin.get("/devices", params={"label": label}).json()}
    assert states[dead_android["id"]]["state"] == "invalid" and states[dead_ios["id"]]["state"] == "invalid"
    assert "UNREGISTERED" in states[dead_android["id"]]["invalidReason"].upper()
    assert states[alive["id"]]["state"] == "active"
    assert len(pushes_to(fcm, dead_fcm)) == 1 and len(pushes_to(apns, dead_apns)) == 1  # never retried

    second = await run_and_report()
    assert second["status"] == "completed", second
    skipped = {s["deviceId"] for s in second["result"]["data"]["skipped"]}
    assert skipped == {dead_android["id"], dead_ios["id"]}
    assert len(pushes_to(fcm, dead_fcm)) == 1 and len(pushes_to(apns, dead_apns)) == 1  # skipped, not pushed


async def test_a_retried_run_does_not_push_again_to_devices_that_accepted(
    fakes: Any, push_worker: WorkerHandle, admin: httpx.Client, api_process: ApiProcess, settings: Settings
) -> None:
    fcm, apns, _ = fakes
    quick, slow = fcm_token(), apns_token()
    android = register(admin, "android", quick)
    ios = register(admin, "ios", slow, topic=BUNDLE)
    # The first attempt waits 15 s for reports; only the Android one arrives, so it fails and is
    # retried; the iOS report is sent once the second attempt runs (generous: it must come within it).
    task = create(admin, {"deviceIds": [android["id"], ios["id"]]}, timeoutMs=15_000,
                  retryPolicy={"maxRetries": 1, "initialBackoffMs": 1000, "jitter": 0})
    a_req = await pushed(admin, task["id"], fcm, fcm_payload, quick)
    i_req = await pushed(admin, task["id"], apns, apns_payload, slow)
    p = fcm_payload(a_req)
    assert report_success(api_process, settings, android["id"], p) == 201

    async def second_attempt_running() -> bool:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[p["runId"]])))
        return any(r.name.startswith("wake-devices") and (r.run_count or 0) >= 2 for r in runs)

    from tests.fixtures import wait_for

    await wait_for(second_attempt_running, DEADLINE_S, "the retried attempt")
    assert report_success(api_process, settings, ios["id"], apns_payload(i_req)) == 201
    done = await settled(admin, task["id"])
    assert done["status"] == "completed", done
    assert done["result"]["attempts"] == 2
    assert len(pushes_to(fcm, quick)) == 1 and len(pushes_to(apns, slow)) == 1


async def test_payload_too_large_and_configuration_errors_fail_without_sending_or_retrying(
    fakes: Any, push_worker: WorkerHandle, admin: httpx.Client, api_process: ApiProcess, settings: Settings
) -> None:
    fcm, apns, _ = fakes
    big = register(admin, "android", fcm_token())
    before = len(fcm.requests)
    task = create(admin, {"deviceIds": [big["id"]]}, data={"blob": "x" * 5000},
                  retryPolicy={"maxRetries": 2, "initialBackoffMs": 100})
    done = await settled(admin, task["id"])
    assert done["status"] == "failed" and "4096" in done["result"]["error"]
    assert done["result"]["attempts"] == 1 and len(fcm.requests) == before  # nothing reached the network

    # A topic that is not the app's is that device's configuration: its push fails, the run
    # goes on for the device beside it (which reports), and no retry can help.
    other_app = register(admin, "ios", apns_token(), topic="com.other.app")  # not a topic of these credentials
    good_token = apns_token()
    good = register(admin, "ios", good_token, topic=BUNDLE)
    task = create(admin, {"deviceIds": [other_app["id"], good["id"]]},
                  retryPolicy={"maxRetries": 2, "initialBackoffMs": 100})
    payload = apns_payload(await pushed(admin, task["id"], apns, apns_payload, good_token))
    assert report_success(api_process, settings, good["id"], payload) == 201
    done = await settled(admin, task["id"])
    error = done["result"]["error"]
    assert done["status"] == "failed" and f"push to {other_app['id']} not delivered" in error, done
    assert "topic" in error.lower() and "no report" not in error  # the good device's report counted
    assert done["result"]["attempts"] == 1 and len(pushes_to(apns, good_token)) == 1
    assert admin.get(f"/devices/{other_app['id']}").json()["state"] == "active"  # not the device's fault


async def test_a_development_build_is_found_on_the_sandbox_and_pushed_there_from_then_on(
    fakes: Any, apns_pair: tuple[FakeAPNs, FakeAPNs], push_worker: WorkerHandle, admin: httpx.Client,
    api_process: ApiProcess, settings: Settings
) -> None:
    """A token production refuses (BadDeviceToken) is tried on the sandbox once; accepted there,
    the device's environment becomes sandbox and later runs push there directly."""
    production, sandbox = apns_pair
    token = apns_token()
    production.mark_bad(token)
    phone = register(admin, "ios", token, topic=BUNDLE)
    assert "environment" not in phone
    for run in range(2):
        task = create(admin, {"deviceIds": [phone["id"]]})
        payload = apns_payload(await pushed(admin, task["id"], sandbox, apns_payload, token))
        assert report_success(api_process, settings, phone["id"], payload) == 201
        assert (await settled(admin, task["id"]))["status"] == "completed"
        assert admin.get(f"/devices/{phone['id']}").json()["environment"] == "sandbox"
        assert len(pushes_to(production, token)) == 1  # the first run's try only
    assert len(pushes_to(sandbox, token)) == 2
    android = admin.post("/devices", json={"platform": "android", "token": fcm_token(), "environment": "sandbox"})
    assert android.status_code == 422 and "environment" in android.text


async def test_runs_push_through_the_workers_senders_one_connection_and_one_token(
    fakes: Any, push_worker: WorkerHandle, admin: httpx.Client, api_process: ApiProcess, settings: Settings
) -> None:
    """Two runs back to back: the second pushes on the first's APNs connection with its provider
    token, and fetches no new FCM access token (the senders live in the worker, not the run)."""
    fcm, apns, _ = fakes
    a_tok, i_tok = fcm_token(), apns_token()
    android = register(admin, "android", a_tok)
    ios = register(admin, "ios", i_tok, topic=BUNDLE)
    seen, fetches = [], []
    for _ in range(2):
        task = create(admin, {"deviceIds": [android["id"], ios["id"]]})
        a_req = await pushed(admin, task["id"], fcm, fcm_payload, a_tok)
        i_req = await pushed(admin, task["id"], apns, apns_payload, i_tok)
        for device, payload in ((android, fcm_payload(a_req)), (ios, apns_payload(i_req))):
            assert report_success(api_process, settings, device["id"], payload) == 201
        assert (await settled(admin, task["id"]))["status"] == "completed"
        seen.append(i_req)
        fetches.append(len(fcm.token_requests))
    assert seen[0].connection_id == seen[1].connection_id
    assert seen[0].headers["authorization"] == seen[1].headers["authorization"]
    assert fetches[0] == fetches[1] >= 1


async def test_transient_errors_are_retried_and_recorded_once_as_delivered(
    fakes: Any, push_worker: WorkerHandle, admin: httpx.Client, api_process: ApiProcess, settings: Settings
) -> None:
    fcm, apns, _ = fakes
    a_tok, i_tok = fcm_token(), apns_token()
    fcm.script(a_tok, ["UNAVAILABLE"])                                  # 503, then the queue is empty: 200
    apns.script(i_tok, [(429, "TooManyRequests", {"retry-after": "1"})])  # 429 asking to wait 1 s, then 200
    android = register(admin, "android", a_tok)
    ios = register(admin, "ios", i_tok, topic=BUNDLE)
    task = create(admin, {"deviceIds": [android["id"], ios["id"]]})
    a_req = await pushed(admin, task["id"], fcm, fcm_payload, a_tok)
    i_req = await pushed(admin, task["id"], apns, apns_payload, i_tok)
    for device, payload in ((android, fcm_payload(a_req)), (ios, apns_payload(i_req))):
        assert report_success(api_process, settings, device["id"], payload) == 201
    done = await settled(admin, task["id"])
    assert done["status"] == "completed", done
    rows = {row["deviceId"]: row["delivery"] for row in done["result"]["data"]["devices"]}
    assert rows[android["id"]]["outcome"] == "delivered" and rows[android["id"]]["attempts"] == 2
    assert rows[ios["id"]]["outcome"] == "delivered" and rows[ios["id"]]["attempts"] == 2
    fcm_sent, apns_sent = pushes_to(fcm, a_tok), pushes_to(apns, i_tok)
    assert [r.status for r in fcm_sent] == [503, 200] and [r.status for r in apns_sent] == [429, 200]
    assert apns_sent[1].time - apns_sent[0].time >= 1.0  # Retry-After honoured


@pytest.mark.parametrize("platform", ["android", "ios"])
def test_bgtasks_device_test_sends_one_push_and_prints_the_answer(
    fakes: Any, admin: httpx.Client, api_process: ApiProcess, platform: str
) -> None:
    import os
    import subprocess
    import sys

    fcm, apns, env = fakes
    token = fcm_token() if platform == "android" else apns_token()
    device = register(admin, platform, token, **({"topic": BUNDLE} if platform == "ios" else {}))
    fake = fcm if platform == "android" else apns
    before = len(pushes_to(fake, token))
    cli_env = {**os.environ, **env, "BGTASKS_PUSH_PUBLIC_URL": api_process.base}
    p = subprocess.run([str(Path(sys.executable).parent / "bgtasks"), "device", "test", device["id"], "-o", "json"],
                       env=cli_env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    answer = json.loads(p.stdout)
    assert answer["outcome"] == "delivered" and answer["attempts"] == 1 and answer["messageId"]
    [push] = pushes_to(fake, token)[before:]
    payload = fcm_payload(push) if platform == "android" else apns_payload(push)
    assert payload["runId"] == answer["runId"] and payload["handler"] == "test"
    shown = subprocess.run([str(Path(sys.executable).parent / "bgtasks"), "device", "test", device["id"]],
                           env=cli_env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "delivered after 1 attempt(s)" in shown.stdout
