"""Self-tests of the push-service emulators (mobile_push.emulator) with the real clients.

APNs: httpx ``AsyncClient(http2=True)`` + a PyJWT ES256 provider token against
``APNsEmulator``. FCM: firebase-admin 7.7 (``messaging.send``, ``send_each_async``)
initialised from a service-account file whose ``token_uri`` is ``FCMEmulator``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import firebase_admin
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from firebase_admin import exceptions, messaging

from mobile_push.emulator import HANG, APNsEmulator, FCMEmulator

TOPIC = "com.example.bgtasks"
BACKGROUND = {"apns-topic": TOPIC, "apns-push-type": "background", "apns-priority": "5"}
SILENT = b'{"aps":{"content-available":1}}'


def _token() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex  # 64 hex digits, like a real device token


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# --------------------------------------------------------------------------- APNs


@pytest.fixture(scope="module")
def apns() -> Iterator[APNsEmulator]:
    with APNsEmulator(topics={TOPIC}) as fake:
        yield fake


@pytest.fixture
async def apns_client(apns: APNsEmulator) -> AsyncIterator[httpx.AsyncClient]:
    apns.reset()
    async with httpx.AsyncClient(http2=True, verify=apns.client_ssl_context(), base_url=apns.base_url) as client:
        yield client


def _auth(apns: APNsEmulator, **kw: object) -> dict[str, str]:
    return {"authorization": f"bearer {apns.make_provider_token(**kw)}"}  # type: ignore[arg-type]


async def test_apns_success_over_http2_echoes_or_makes_apns_id(apns: APNsEmulator, apns_client: httpx.AsyncClient) -> None:
    token, auth = _token(), _auth(apns)
    mine = str(uuid.uuid4())
    r = await apns_client.post(f"/3/device/{token}", headers={**auth, **BACKGROUND, "apns-id": mine}, content=SILENT)
    assert (r.http_version, r.status_code, r.content, r.headers["apns-id"]) == ("HTTP/2", 200, b"", mine)
    r = await apns_client.post(f"/3/device/{token}", headers={**auth, **BACKGROUND}, content=SILENT)
    assert r.status_code == 200 and r.headers["apns-id"] == r.headers["apns-id"].upper()
    uuid.UUID(r.headers["apns-id"])

    first, second = apns.requests.wait_for(2)
    assert first.device_token == token and first.payload == {"aps": {"content-available": 1}}
    assert first.headers["apns-push-type"] == "background" and first.headers[":method"] == "POST"
    assert (first.status, first.apns_id, second.apns_id) == (200, mine, r.headers["apns-id"])


async def test_apns_unregistered_is_410_with_timestamp(apns: APNsEmulator, apns_client: httpx.AsyncClient) -> None:
    token = _token()
    apns.unregister(token, timestamp_ms=1_700_000_000_000)
    r = await apns_client.post(f"/3/device/{token}", headers={**_auth(apns), **BACKGROUND}, content=SILENT)
    assert r.status_code == 410 and r.json() == {"reason": "Unregistered", "timestamp": 1_700_000_000_000}
    assert r.headers["apns-id"]


async def test_apns_provider_token_checks(apns: APNsEmulator, apns_client: httpx.AsyncClient) -> None:
    url = f"/3/device/{_token()}"

    async def reason(headers: dict[str, str]) -> tuple[int, str]:
        r = await apns_client.post(url, headers={**headers, **BACKGROUND}, content=SILENT)
        return r.status_code, r.json()["reason"]

    assert await reason({}) == (403, "MissingProviderToken")
    assert await reason(_auth(apns, iat=time.time() - 3601)) == (403, "ExpiredProviderToken")
    assert await reason(_auth(apns, key_id="OTHERKEY00")) == (403, "InvalidProviderToken")
    assert await reason(_auth(apns, team_id="OTHERTEAM0")) == (403, "InvalidProviderToken")
    forged = jwt.encode({"iss": apns.team_id, "iat": int(time.time())}, ec.generate_private_key(ec.SECP256R1()),
                        algorithm="ES256", headers={"kid": apns.key_id})
    assert await reason({"authorization": f"bearer {forged}"}) == (403, "InvalidProviderToken")


async def test_apns_forced_expiry_then_a_fresh_token_works(apns: APNsEmulator, apns_client: httpx.AsyncClient) -> None:
    url, old = f"/3/device/{_token()}", _auth(apns, iat=time.time() - 60)
    assert (await apns_client.post(url, headers={**old, **BACKGROUND}, content=SILENT)).status_code == 200
    apns.force_expired_provider_token()
    r = await apns_client.post(url, headers={**old, **BACKGROUND}, content=SILENT)
    assert (r.status_code, r.json()) == (403, {"reason": "ExpiredProviderToken"})
    # A new token on the same connection right after an expiry is not a "too frequent" update.
    assert (await apns_client.post(url, headers={**_auth(apns), **BACKGROUND}, content=SILENT)).status_code == 200

    apns.expire_provider_tokens()  # every token seen so far is stale until the client signs a new one
    r = await apns_client.post(url, headers={**old, **BACKGROUND}, content=SILENT)
    assert r.json() == {"reason": "ExpiredProviderToken"}
    fresh = _auth(apns, iat=time.time() + 1)
    assert (await apns_client.post(url, headers={**fresh, **BACKGROUND}, content=SILENT)).status_code == 200


async def test_apns_token_updated_too_often_on_one_connection(apns: APNsEmulator, apns_client: httpx.AsyncClient) -> None:
    url = f"/3/device/{_token()}"
    assert (await apns_client.post(url, headers={**_auth(apns), **BACKGROUND}, content=SILENT)).status_code == 200
    r = await apns_client.post(url, headers={**_auth(apns, iat=time.time() - 5), **BACKGROUND}, content=SILENT)
    assert (r.status_code, r.json()["reason"]) == (429, "TooManyProviderTokenUpdates")


async def test_apns_counts_a_teams_token_updates_across_connections(apns: APNsEmulator,
                                                                     apns_client: httpx.AsyncClient) -> None:
    url = f"/3/device/{_token()}"
    assert (await apns_client.post(url, headers={**_auth(apns), **BACKGROUND}, content=SILENT)).status_code == 200
    async with httpx.AsyncClient(http2=True, verify=apns.client_ssl_context(), base_url=apns.base_url) as other:
        r = await other.post(url, headers={**_auth(apns, iat=time.time() - 5), **BACKGROUND}, content=SILENT)
    assert (r.status_code, r.json()["reason"]) == (429, "TooManyProviderTokenUpdates")


async def test_apns_counts_background_pushes_beyond_ios_budget_as_throttled(
        apns: APNsEmulator, apns_client: httpx.AsyncClient) -> None:
    token, other, auth = _token(), _token(), _auth(apns)
    answers = [await apns_client.post(f"/3/device/{t}", headers={**auth, **BACKGROUND}, content=SILENT)
               for t in (token, token, token, token, other)]
    assert [r.status_code for r in answers] == [200] * 5  # APNs accepts; the phone drops
    assert apns.throttled(token) == 1 and apns.throttled(other) == 0 and apns.throttled() == 1
    assert [q.throttled for q in apns.requests.snapshot()] == [False, False, False, True, False]


async def test_apns_payload_and_header_validation(apns: APNsEmulator, apns_client: httpx.AsyncClient) -> None:
    auth, token = _auth(apns), _token()

    async def answer(content: bytes = SILENT, path: str = f"/3/device/{token}", method: str = "POST",
                     **headers: str) -> tuple[int, str | None]:
        hdrs = {**auth, **BACKGROUND, **{k.replace("_", "-"): v for k, v in headers.items()}}
        hdrs = {k: v for k, v in hdrs.items() if v}
        r = await apns_client.request(method, path, headers=hdrs, content=content)
        return r.status_code, (r.json()["reason"] if r.content else None)

    assert await answer(b'{"aps":{"content-available":1},"pad":"' + b"x" * 4096 + b'"}') == (413, "PayloadTooLarge")
    assert await answer(b"") == (400, "PayloadEmpty")
    assert await answer(b"{not json") == (400, APNsEmulator.MALFORMED_JSON_REASON)
    assert await answer(apns_topic="") == (400, "MissingTopic")
    assert await answer(apns_topic="com.other.app") == (400, "TopicDisallowed")
    assert await answer(apns_priority="7") == (400, "BadPriority")
    assert await answer(apns_priority="10") == (400, "BadPriority")  # 10 is an error for background pushes
    assert await answer(apns_push_type="wakeup") == (400, "InvalidPushType")
    assert await answer(apns_id="not-a-uuid") == (400, "BadMessageId")
    assert await answer(apns_expiration="tomorrow") == (400, "BadExpirationDate")
    assert await answer(apns_collapse_id="c" * 65) == (400, "BadCollapseId")
    assert await answer(path="/3/device/nothex!") == (400, "BadDeviceToken")
    assert await answer(path="/3/device/") == (400, "MissingDeviceToken")
    assert await answer(path="/4/device/" + token) == (404, "BadPath")
    assert await answer(method="PUT") == (405, "MethodNotAllowed")
    r = await apns_client.post(f"/3/device/{token}", headers=[*auth.items(), *BACKGROUND.items(),
                                                              ("apns-topic", TOPIC)], content=SILENT)
    assert r.json() == {"reason": "DuplicateHeaders"}
    assert await answer(apns_push_type="alert", apns_priority="10",
                        content=b'{"aps":{"alert":"hi"}}') == (200, None)


async def test_apns_scripted_failures_then_success(apns: APNsEmulator, apns_client: httpx.AsyncClient) -> None:
    token, bad, other_app, auth = _token(), _token(), _token(), _auth(apns)
    apns.script(token, [(503, "ServiceUnavailable", {}), (429, "TooManyRequests", {"retry-after": "1"}),
                        "InternalServerError"])
    apns.mark_bad(bad)
    apns.mark_not_for_topic(other_app)

    async def post(tok: str) -> httpx.Response:
        return await apns_client.post(f"/3/device/{tok}", headers={**auth, **BACKGROUND}, content=SILENT)

    answers = [await post(token) for _ in range(4)]
    assert [(r.status_code, r.content and r.json()["reason"]) for r in answers] == [
        (503, "ServiceUnavailable"), (429, "TooManyRequests"), (500, "InternalServerError"), (200, b"")]
    assert answers[1].headers["retry-after"] == "1"
    assert (await post(bad)).json() == {"reason": "BadDeviceToken"}
    assert (await post(other_app)).json() == {"reason": "DeviceTokenNotForTopic"}
    assert [q.status for q in apns.requests.snapshot()] == [503, 429, 500, 200, 400, 400]


async def test_apns_many_concurrent_streams_share_one_connection(
    apns: APNsEmulator, apns_client: httpx.AsyncClient
) -> None:
    auth = _auth(apns)
    tokens = [_token() for _ in range(300)]
    # APNs allows one stream until it has accepted a token on the connection: one request first.
    assert (await apns_client.post(f"/3/device/{tokens[0]}", headers={**auth, **BACKGROUND},
                                   content=SILENT)).status_code == 200
    rs = await asyncio.gather(*(apns_client.post(f"/3/device/{t}", headers={**auth, **BACKGROUND}, content=SILENT)
                                for t in tokens))
    assert {r.status_code for r in rs} == {200}
    recorded = apns.requests.snapshot()
    assert {q.device_token for q in recorded} == set(tokens) and apns.refused_streams == 0
    assert len({q.connection_id for q in recorded}) == 1 and len({q.stream_id for q in recorded}) == 301


async def test_apns_hang_and_goaway(apns: APNsEmulator, apns_client: httpx.AsyncClient) -> None:
    token, auth = _token(), _auth(apns)
    apns.script(token, [HANG])
    with pytest.raises(httpx.ReadTimeout):
        await apns_client.post(f"/3/device/{token}", headers={**auth, **BACKGROUND}, content=SILENT, timeout=0.2)
    assert (await apns_client.post(f"/3/device/{token}", headers={**auth, **BACKGROUND},
                                   content=SILENT)).status_code == 200
    first_conn = apns.requests.snapshot()[-1].connection_id
    apns.goaway("Shutdown")
    try:  # whether httpx sees the GOAWAY before reusing the connection is a race: a client must retry
        r = await apns_client.post(f"/3/device/{token}", headers={**auth, **BACKGROUND}, content=SILENT)
    except httpx.TransportError:
        r = await apns_client.post(f"/3/device/{token}", headers={**auth, **BACKGROUND}, content=SILENT)
    assert r.status_code == 200 and apns.requests.snapshot()[-1].connection_id != first_conn


async def test_apns_h2c_and_async_lifecycle(tmp_path: Path) -> None:
    async with APNsEmulator(tls=False) as fake:
        loop_thread = fake._thread
        assert loop_thread is not None and loop_thread.is_alive()
        key_file = fake.write_auth_key(tmp_path)
        assert key_file.name == f"AuthKey_{fake.key_id}.p8" and key_file.read_bytes() == fake.private_key_pem
        auth = _auth(fake)  # one token: a second within 20 minutes would be refused
        async with httpx.AsyncClient(http1=False, http2=True, base_url=fake.base_url) as client:
            r = await client.post(f"/3/device/{_token()}", headers={**auth, "apns-topic": "any.app",
                                                                     "apns-push-type": "background"}, content=b"{}")
            missing = await client.post(f"/3/device/{_token()}", headers={**auth, "apns-topic": "any.app"},
                                        content=b"{}")
        assert (r.http_version, r.status_code) == ("HTTP/2", 200)
        assert (missing.status_code, missing.json()) == (400, {"reason": "InvalidPushType"})  # apns-push-type required
        port = fake.port
    assert _port_closed(port) and not loop_thread.is_alive()


def test_apns_sync_lifecycle_cleans_up() -> None:
    before = set(threading.enumerate())
    fake = APNsEmulator().start()
    mine = set(threading.enumerate()) - before  # the fake's own threads, whatever else runs
    port, ca = fake.port, fake.ca_cert_path
    assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----") and fake.base_url == f"https://127.0.0.1:{port}"
    fake.stop()
    fake.stop()  # idempotent
    assert mine and not any(t.is_alive() for t in mine)
    assert _port_closed(port) and not ca.exists()


# ---------------------------------------------------------------------------- FCM


@pytest.fixture(scope="module")
def fcm() -> Iterator[FCMEmulator]:
    with FCMEmulator(project_id="bgtasks-fake") as fake:
        yield fake


@pytest.fixture(scope="module")
async def fcm_app(fcm: FCMEmulator) -> AsyncIterator[firebase_admin.App]:
    app = fcm.initialize_app(name=f"test-fakes-{uuid.uuid4().hex}")
    yield app
    await FCMEmulator.adelete_app(app)  # delete_app's own asyncio.run() cannot run inside this loop


@pytest.fixture
def fcm_clean(fcm: FCMEmulator, fcm_app: firebase_admin.App) -> FCMEmulator:
    fcm.reset()
    return fcm


def test_fcm_send_goes_through_oauth_and_the_hook(fcm_clean: FCMEmulator, fcm_app: firebase_admin.App) -> None:
    fcm = fcm_clean
    svc = messaging._get_messaging_service(fcm_app)
    assert svc._fcm_url == fcm.send_url  # the one private attribute the SDK is pointed through
    name = messaging.send(messaging.Message(fid="fid-1", data={"job": "sync"},
                                            android=messaging.AndroidConfig(priority="normal")), app=fcm_app)
    assert name.startswith("projects/bgtasks-fake/messages/0:")
    messaging.send(messaging.Message(token="legacy-token"), app=fcm_app)  # deprecated, still on the wire
    a, b = fcm.requests.wait_for(2)
    assert (a.target_kind, a.target, a.message["data"], a.message["android"]["priority"]) == (
        "fid", "fid-1", {"job": "sync"}, "normal")
    assert (b.target_kind, b.target) == ("token", "legacy-token")
    assert a.headers["authorization"].startswith("Bearer ya29.emulator-") and a.headers["x-goog-api-format-version"] == "2"
    assert messaging.send(messaging.Message(topic="news"), app=fcm_app, dry_run=True).endswith("/fake_message_id")


def test_fcm_token_endpoint_verified_the_service_account_assertion(fcm: FCMEmulator, fcm_app: firebase_admin.App) -> None:
    messaging.send(messaging.Message(fid="fid-x"), app=fcm_app)
    grant = next(t for t in fcm.token_requests.snapshot() if t.status == 200)
    assert grant.form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert grant.claims is not None and grant.claims["iss"] == fcm.client_email
    assert grant.claims["aud"] == "https://oauth2.googleapis.com/token"  # google-auth ignores token_uri here
    assert set(grant.response) == {"access_token", "expires_in", "token_type"}

    forged = jwt.encode({"iss": fcm.client_email, "aud": fcm.token_uri, "iat": int(time.time()),
                         "exp": int(time.time()) + 3600}, rsa.generate_private_key(65537, 2048), algorithm="RS256",
                        headers={"kid": fcm.private_key_id})
    r = httpx.post(fcm.token_uri, data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                        "assertion": forged})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_grant")


def test_fcm_unregistered_and_retried_503(fcm_clean: FCMEmulator, fcm_app: firebase_admin.App) -> None:
    fcm_clean.unregister("gone")
    with pytest.raises(messaging.UnregisteredError) as err:
        messaging.send(messaging.Message(fid="gone"), app=fcm_app)
    body = err.value.http_response.json()
    assert body["error"]["status"] == "NOT_FOUND" and body["error"]["details"] == [
        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]

    fcm_clean.script("flaky", ["UNAVAILABLE"])  # the SDK retries 500/503 itself (first retry immediately)
    assert messaging.send(messaging.Message(fid="flaky"), app=fcm_app).startswith("projects/bgtasks-fake/")
    assert [q.status for q in fcm_clean.requests.snapshot() if q.target == "flaky"] == [503, 200]


def test_fcm_error_mapping_and_validation(fcm_clean: FCMEmulator, fcm_app: firebase_admin.App) -> None:
    fcm_clean.script("busy", [(429, "QUOTA_EXCEEDED")])
    with pytest.raises(messaging.QuotaExceededError) as quota:
        messaging.send(messaging.Message(fid="busy"), app=fcm_app)
    assert quota.value.http_response.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    # With Retry-After the sync path (urllib3) sleeps that long and retries a 429 itself.
    fcm_clean.script("busy-later", [(429, "QUOTA_EXCEEDED", {"Retry-After": "0"})])
    messaging.send(messaging.Message(fid="busy-later"), app=fcm_app)
    assert [q.status for q in fcm_clean.requests.snapshot() if q.target == "busy-later"] == [429, 200]
    fcm_clean.script("other-sender", ["SENDER_ID_MISMATCH"])
    with pytest.raises(messaging.SenderIdMismatchError):
        messaging.send(messaging.Message(fid="other-sender"), app=fcm_app)
    # A 401 makes google-auth refresh the access token and resend, twice, before the error surfaces.
    grants = len(fcm_clean.token_requests)
    fcm_clean.script("apns-broken", ["THIRD_PARTY_AUTH_ERROR"] * 3)
    with pytest.raises(messaging.ThirdPartyAuthError):
        messaging.send(messaging.Message(fid="apns-broken"), app=fcm_app)
    assert [q.status for q in fcm_clean.requests.snapshot() if q.target == "apns-broken"] == [401, 401, 401]
    assert len(fcm_clean.token_requests) == grants + 2
    with pytest.raises(exceptions.InvalidArgumentError, match="too big"):  # no client-side size check
        messaging.send(messaging.Message(fid="big", data={"blob": "x" * 4096}), app=fcm_app)

    # What the SDK validates itself, sent raw: the service's own answers.
    headers = {"authorization": f"Bearer {fcm_clean.issue_access_token()}"}

    def post(message: object) -> httpx.Response:
        return httpx.post(fcm_clean.send_url, headers=headers, json={"message": message})

    r = post({"fid": "f", "data": {"n": 1}})
    err = r.json()["error"]
    assert (r.status_code, err["status"]) == (400, "INVALID_ARGUMENT")
    assert err["details"][0]["fieldViolations"][0]["field"] == "message.data[0].value"
    assert post({"fid": "f", "topic": "t"}).status_code == 400
    assert post({"data": {"a": "b"}}).json()["error"]["message"] == "Recipient of the message is not set."
    assert httpx.post(fcm_clean.send_url, json={"message": {"fid": "f"}}).status_code == 401


def test_fcm_revoked_access_token_is_refreshed_by_the_sdk(fcm_clean: FCMEmulator, fcm_app: firebase_admin.App) -> None:
    messaging.send(messaging.Message(fid="warm"), app=fcm_app)
    grants = len(fcm_clean.token_requests)
    fcm_clean.revoke_access_tokens()
    messaging.send(messaging.Message(fid="after-revoke"), app=fcm_app)
    assert [q.status for q in fcm_clean.requests.snapshot()][-2:] == [401, 200]
    assert len(fcm_clean.token_requests) == grants + 1


async def test_fcm_send_each_async(fcm_clean: FCMEmulator, fcm_app: firebase_admin.App) -> None:
    fcm_clean.unregister("fid-gone")
    fcm_clean.script("fid-flaky", [(503, "UNAVAILABLE")])
    fids = [f"fid-{i}" for i in range(20)] + ["fid-gone", "fid-flaky"]
    batch = await messaging.send_each_async([messaging.Message(fid=f, data={"i": f}) for f in fids], app=fcm_app)
    assert (batch.success_count, batch.failure_count) == (21, 1)
    gone = batch.responses[fids.index("fid-gone")]
    assert isinstance(gone.exception, messaging.UnregisteredError)
    assert batch.responses[fids.index("fid-flaky")].success
    recorded = fcm_clean.requests.snapshot()
    assert len(recorded) == 23 and [q.status for q in recorded if q.target == "fid-flaky"] == [503, 200]


def test_fcm_hook_attribute_still_exists_and_stop_cleans_up() -> None:
    """Fails when firebase-admin drops the private ``_fcm_url`` the fakes rely on."""
    before = set(threading.enumerate())
    with FCMEmulator() as fake:
        mine = set(threading.enumerate()) - before  # the fake's own threads, whatever else runs
        app = fake.initialize_app(name=f"test-fakes-hook-{uuid.uuid4().hex}")
        try:
            svc = messaging._get_messaging_service(app)
            assert svc._fcm_url == fake.send_url
            assert messaging._MessagingService.FCM_URL == "https://fcm.googleapis.com/v1/projects/{0}/messages:send"
            sa = json.loads(fake.write_service_account_file().read_text())
            assert sa["token_uri"] == fake.token_uri and sa["type"] == "service_account"
        finally:
            FCMEmulator.delete_app(app)
        port, tmp = fake.port, fake.write_service_account_file().parent
    assert mine and not any(t.is_alive() for t in mine)
    assert _port_closed(port) and not tmp.exists()
