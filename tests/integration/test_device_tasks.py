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
from mobile_push.emulator import APNsEmulator, FCMEmulator
from tests.fixtures import ApiProcess, WorkerHandle, make_token, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.postgresql]

BUNDLE = "com.example.app"
DEADLINE_S = 180


def fcm_token() -> str:
    return secrets.token_urlsafe(16).replace("-", "a") + ":" + "APA91b" + secrets.token_urlsafe(100)[:134]


def apns_token() -> str:
    return secrets.token_hex(32)


@pytest.fixture(scope="module")
def apns_pair() -> Iterator[tuple[APNsEmulator, APNsEmulator]]:
    """APNs production and sandbox: two hosts, one team key."""
    with APNsEmulator(topics={BUNDLE}) as production:
        assert production.private_key is not None
        with APNsEmulator(production.team_id, production.key_id, production.private_key.public_key(),
                      topics={BUNDLE}) as sandbox:
            yield production, sandbox


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory,
          apns_pair: tuple[APNsEmulator, APNsEmulator]) -> Iterator[tuple[FCMEmulator, APNsEmulator, dict[str, str]]]:
    keys = tmp_path_factory.mktemp("push-keys")
    apns, sandbox = apns_pair
    cas = keys / "cas.pem"
    cas.write_bytes(apns.ca_cert_path.read_bytes() + sandbox.ca_cert_path.read_bytes())
    with FCMEmulator(tls=True) as fcm:
        env = {
            "BGTASKS_PUSH_FCM_CREDENTIALS_FILE": str(fcm.write_service_account_file(keys / "service-account.json")),
            "BGTASKS_PUSH_FCM_URL": fcm.send_url,
            "BGTASKS_PUSH_FCM_CA_FILE": str(fcm.ca_cert_path),
            "BGTASKS_PUSH_APNS_KEY_FILE": str(apns.write_auth_key(keys)),
            "BGTASKS_PUSH_APNS_KEY_ID": apns.key_id,
            "BGTASKS_PUSH_APNS_TEAM_ID": apns.team_id,
            "BGTASKS_PUSH_APNS_BASE_URL": apns.base_url,
            "BGTASKS_PUSH_APNS_OTHER_BASE_URL": sandbox.base_url,
            "BGTASKS_PUSH_APNS_CA_FILE": str(cas),
            "BGTASKS_PUSH_INITIAL_BACKOFF_S": "0.05",
        }
        yield fcm, apns, env


class FeedbackReceiver:
    """The app backend's end of the dead-token webhook: a real HTTP server on a free port that
    records each POST (headers and body)."""

    SECRET = "feedback-" + secrets.token_hex(16)

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        calls = self.calls = []  # type: list[tuple[dict[str, str], bytes]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/bgtasks/feedback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict[str, Any]]:
        """The verified calls' bodies (a call whose signature does not verify fails the test)."""
        import time

        from mobile_push.feedback import SIGNATURE_HEADER, verify

        out = []
        for headers, body in list(self.calls):
            assert verify(self.SECRET, body, headers[SIGNATURE_HEADER.lower()], time.time()), headers
            out.append(json.loads(body))
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def feedback() -> Iterator[FeedbackReceiver]:
    receiver = FeedbackReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def push_worker(prefect_server: Any, settings: Settings, fakes: Any, api_process: ApiProcess,
                feedback: FeedbackReceiver) -> Iterator[WorkerHandle]:
    env = dict(fakes[2], BGTASKS_PUSH_PUBLIC_URL=api_process.base, BGTASKS_PUSH_FEEDBACK_URL=feedback.url,
               BGTASKS_PUSH_FEEDBACK_SECRET=FeedbackReceiver.SECRET)
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
    assert msg["fcm_options"] == {"analytics_label": task["name"]}  # Firebase's reports split by task
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


async def test_a_stop_keeps_the_report_token_for_the_retried_work_and_a_device_still_stopped_at_the_deadline_fails_the_run(
    fakes: Any, push_worker: WorkerHandle, admin: httpx.Client, api_process: ApiProcess, settings: Settings
) -> None:
    """docs/device-protocol.md: started and stopped are progress (the token stays valid), succeeded
    and failed are final (once). One phone is stopped by WorkManager and succeeds when it runs the
    work again; the other is stopped and never resumes: the run fails at its deadline saying so."""
    fcm, _, _ = fakes
    tokens = [fcm_token(), fcm_token()]
    resumed, stuck = [register(admin, "android", t) for t in tokens]
    task = create(admin, {"deviceIds": [resumed["id"], stuck["id"]]}, timeoutMs=20_000,
                  retryPolicy={"maxRetries": 0})
    payloads = {d["id"]: fcm_payload(await pushed(admin, task["id"], fcm, fcm_payload, t))
                for d, t in zip((resumed, stuck), tokens)}

    def send(phone: httpx.Client, device_id: str, **body: Any) -> httpx.Response:
        p = payloads[device_id]
        return phone.post(p["reportUrl"].removeprefix(api_process.base), json={"reportToken": p["reportToken"], **body})

    with device_client(api_process, settings, resumed["id"]) as phone, \
         device_client(api_process, settings, stuck["id"]) as other:
        # Bad reports name the field and change nothing.
        for body, field in (({"state": "stopped"}, "stopReason"), ({"state": "started", "data": {"x": 1}}, "data"),
                            ({"state": "succeeded", "success": False}, "success"), ({}, "success"),
                            ({"state": "paused"}, "state")):
            bad = send(phone, resumed["id"], **body)
            assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == field, (body, bad.text)
        first = send(phone, resumed["id"], state="started")
        assert first.status_code == 201 and first.json()["state"] == "started" and "success" not in first.json()
        stop = send(phone, resumed["id"], state="stopped", stopReason="STOP_REASON_CONSTRAINT_CHARGING", durationMs=40)
        assert stop.status_code == 201 and stop.json()["stops"] == 1
        assert send(phone, resumed["id"], state="started").status_code == 201  # WorkManager runs it again
        done = send(phone, resumed["id"], state="succeeded", data={"photos": 7})
        assert done.status_code == 201 and done.json()["success"] is True, done.text
        for late in ({"state": "stopped", "stopReason": "STOP_REASON_USER"}, {"state": "started"}, {"success": True}):
            assert send(phone, resumed["id"], **late).status_code == 409  # nothing after the final report

        assert send(other, stuck["id"], state="started").status_code == 201
        assert send(other, stuck["id"], state="stopped", stopReason="STOP_REASON_QUOTA").status_code == 201

    done_task = await settled(admin, task["id"])
    assert done_task["status"] == "failed", done_task
    result = done_task["result"]
    assert f"device {stuck['id']} was stopped by the system (STOP_REASON_QUOTA)" in result["error"]
    assert resumed["id"] not in result["error"]
    assert f"no final report from 1 device(s): {stuck['id']}" in result["error"]
    from mobile_push.reports import RunLedger
    from tests.fixtures import _in_store

    reports = _in_store(settings, lambda store: RunLedger(store).reports(result["runId"]))
    good = reports[resumed["id"]].to_json_dict()
    assert (good["state"], good["success"], good["data"], good["stops"]) == ("succeeded", True, {"photos": 7}, 1)
    assert "startedAt" in good
    last = reports[stuck["id"]].to_json_dict()
    assert (last["state"], last["stopReason"], last["stops"]) == ("stopped", "STOP_REASON_QUOTA", 1)
    assert "success" not in last


async def test_dead_tokens_mark_devices_invalid_and_the_next_run_skips_them(
    fakes: Any, push_worker: WorkerHandle, admin: httpx.Client, api_process: ApiProcess, settings: Settings,
    feedback: FeedbackReceiver,
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
    # The app's backend was told, once per device, with a signature it can check.
    told = {e["deviceId"]: e for e in feedback.events() if e["deviceId"] in (dead_android["id"], dead_ios["id"])}
    assert set(told) == {dead_android["id"], dead_ios["id"]}
    assert told[dead_android["id"]]["reason"] == "UNREGISTERED" and told[dead_ios["id"]]["reason"] == "Unregistered"
    assert "unregisteredAt" in told[dead_ios["id"]] and "unregisteredAt" not in told[dead_android["id"]]
    assert all(e["event"] == "device.invalid" and e["runId"] == first["result"]["runId"] for e in told.values())
    assert not any(dead in json.dumps(told) for dead in (dead_fcm, dead_apns))  # no token in the call

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
    fakes: Any, apns_pair: tuple[APNsEmulator, APNsEmulator], push_worker: WorkerHandle, admin: httpx.Client,
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


async def accepted_at(settings: Settings, device_id: str, when: Any) -> None:
    """Record that a push to the device was accepted at ``when`` (an earlier run's, as far as the
    push budget can tell): the budget's clock is the deliveries' time, so the test sets it."""
    from bgtasks.store import open_store
    from bgtasks.store.schema import deliveries

    store = await open_store(settings.store_url)
    try:
        async with store.session() as s:
            await s.execute(deliveries.insert().values(
                idempotency_key=f"run:earlier-{secrets.token_hex(4)}:device:{device_id}", run_id="earlier",
                device_id=device_id, transport="apns", outcome="delivered", attempts=1, created_at=when,
                updated_at=when))
    finally:
        await store.close()


def push_stats(admin: httpx.Client) -> dict[str, Any]:
    resp = admin.get("/push/stats")
    assert resp.status_code == 200, resp.text
    return resp.json()["transports"].get("apns", {"holds": 0, "accepted": 0})


async def test_a_push_beyond_the_budget_is_held_visibly_and_sent_when_the_hour_allows_it(
    fakes: Any, push_worker: WorkerHandle, admin: httpx.Client, api_process: ApiProcess, settings: Settings
) -> None:
    from datetime import UTC, datetime, timedelta

    _, apns, _ = fakes
    tok = apns_token()
    ios = register(admin, "ios", tok, topic=BUNDLE)
    earlier = (datetime.now(UTC) - timedelta(hours=1) + timedelta(seconds=8)).replace(microsecond=0)
    await accepted_at(settings, ios["id"], earlier)  # the budget of 1 frees up 8 s from now
    before = push_stats(admin)
    task = create(admin, {"deviceIds": [ios["id"]], "pushesPerHour": 1})

    def held() -> Any:
        rows = admin.get(f"/devices/{ios['id']}/deliveries").json()
        return next((r for r in rows if r["outcome"] == "held"), None)

    row = await until(held, "the push to be held by the budget")
    until_at = datetime.fromisoformat(row["heldUntil"])
    assert until_at == earlier + timedelta(hours=1)
    assert row["reason"] == "PushBudget" and "push budget (1 an hour" in row["error"]
    req = await pushed(admin, task["id"], apns, apns_payload, tok)
    assert req.time >= until_at.timestamp()  # sent when the hour allowed it, not before
    assert report_success(api_process, settings, ios["id"], apns_payload(req)) == 201
    done = await settled(admin, task["id"])
    assert done["status"] == "completed", done
    after = push_stats(admin)
    assert after["holds"] - before["holds"] == 1 and after["accepted"] - before["accepted"] == 1
    metrics = admin.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert f'bgtasks_push_holds{{transport="apns"}} {after["holds"]}' in metrics.text.splitlines()


async def test_the_budget_keeps_a_device_within_what_ios_accepts_and_a_push_held_past_the_timeout_fails_the_run(
    fakes: Any, push_worker: WorkerHandle, admin: httpx.Client, api_process: ApiProcess, settings: Settings
) -> None:
    """Three runs an hour reach an iPhone (the default budget); the fourth is held, and as its
    hour frees up long after the run's timeout, the run fails saying so. The fake APNs counts what
    iOS would throttle: nothing, until a task without a budget pushes a fifth time."""
    from datetime import UTC, datetime, timedelta

    _, apns, _ = fakes
    tok = apns_token()
    ios = register(admin, "ios", tok, topic=BUNDLE)
    for _ in range(3):
        task = create(admin, {"deviceIds": [ios["id"]]})
        req = await pushed(admin, task["id"], apns, apns_payload, tok)
        assert report_success(api_process, settings, ios["id"], apns_payload(req)) == 201
        assert (await settled(admin, task["id"]))["status"] == "completed"
    fourth = create(admin, {"deviceIds": [ios["id"]]}, timeoutMs=30_000)
    done = await settled(admin, fourth["id"])
    assert done["status"] == "failed"
    assert "held by the push budget (3 an hour" in done["result"]["error"]
    assert "after the run's timeout" in done["result"]["error"]
    [row] = [r for r in admin.get(f"/devices/{ios['id']}/deliveries").json() if r["runId"] == done["result"]["runId"]]
    assert row["outcome"] == "held" and row["attempts"] == 0
    assert datetime.fromisoformat(row["heldUntil"]) > datetime.now(UTC) + timedelta(minutes=5)
    assert len(pushes_to(apns, tok)) == 3 and apns.throttled(tok) == 0  # nothing sent to be dropped

    unbudgeted = create(admin, {"deviceIds": [ios["id"]], "pushesPerHour": 0})
    await pushed(admin, unbudgeted["id"], apns, apns_payload, tok)
    assert apns.throttled(tok) == 1  # what the budget spared the device: iOS would drop this one


def test_a_schedule_beyond_the_push_budget_is_created_with_a_warning(admin: httpx.Client) -> None:
    every_10_min = {"type": "periodic", "interval": 600_000,
                    "startTime": "2099-01-01T00:00:00Z"}  # far ahead: nothing runs
    warned = create(admin, {"platform": "ios"}, schedule=every_10_min)
    assert warned["warnings"] == [w for w in warned["warnings"] if "6 runs an hour" in w and "ios 3" in w]
    assert len(warned["warnings"]) == 1
    fits = create(admin, {"platform": "ios", "pushesPerHour": 6}, schedule=every_10_min)
    assert "warnings" not in fits
    assert "warnings" not in admin.get(f"/tasks/{warned['id']}").json()  # only in the creation's answer
    for task in (warned, fits):
        assert admin.delete(f"/tasks/{task['id']}").status_code == 204


def test_a_fifth_fcm_collapse_key_for_a_device_is_refused(admin: httpx.Client) -> None:
    android = register(admin, "android", fcm_token())
    later = {"type": "one-time", "startTime": "2099-01-01T00:00:00Z"}
    target = {"deviceIds": [android["id"]]}
    made = [create(admin, dict(target, collapseKey=f"key-{i}"), schedule=later) for i in range(4)]
    fifth = admin.post("/tasks", json={"name": f"wake-{secrets.token_hex(4)}", "schedule": later,
                                       "target": dict(target, collapseKey="key-4")})
    assert fifth.status_code == 422, fifth.text
    [error] = fifth.json()["errors"]
    assert error["field"] == "target.collapseKey" and android["id"] in error["message"]
    assert all(f"'key-{i}'" in error["message"] for i in range(4))
    made.append(create(admin, dict(target, collapseKey="key-0"), schedule=later))  # a key in use: fine
    assert admin.post(f"/tasks/{made[1]['id']}/cancel").status_code == 200        # a cancelled task's key is free
    made.append(create(admin, dict(target, collapseKey="key-4"), schedule=later))
    for task in made:
        assert admin.delete(f"/tasks/{task['id']}").status_code == 204
