"""The push senders against the local protocol-faithful fakes, and the retry loop on top of them.

Real components: ``APNsEmulator`` (HTTP/2 over TLS, ES256 provider tokens checked),
``FCMEmulator`` (FCM v1 + Google's OAuth token endpoint), firebase-admin 7.7,
httpx with h2, PyJWT. No Prefect server. Waits are never slept: the retry
loop gets an injected ``sleep`` that records what it was asked to wait.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from firebase_admin import _http_client, _retry, messaging
from firebase_admin import exceptions as firebase_exceptions

from bgtasks.settings import PushSettings
from mobile_push.delivery import send_with_retries
from mobile_push.payload import MAX_PAYLOAD_BYTES, apns_body, build_payload, fcm_message
from mobile_push.senders import RecordingSender, make_senders, missing_credentials_error, missing_settings
from mobile_push.senders.apns import ApnsSender
from mobile_push.senders.fcm import FcmSender, apns_expiration, build_fcm_message
from mobile_push.senders.memory import Scripted
from mobile_push.types import OutcomeKind, Platform, PushMessage, PushTarget, SendResult, Transport
from mobile_push.emulator import HANG, APNsEmulator, FCMEmulator

TOPIC = "com.example.bgtasks"
D, INV, TR, CF = OutcomeKind.DELIVERED, OutcomeKind.INVALID_TOKEN, OutcomeKind.TRANSIENT, OutcomeKind.CONFIG


def apns_token() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex  # 64 hex digits, like a real device token


def fcm_token() -> str:
    """An FCM registration token's shape: ``<fid>:APA91b...`` (not a bare FID)."""
    return "c" + uuid.uuid4().hex[:21] + ":APA91b" + uuid.uuid4().hex * 4


def fid() -> str:
    return "d" + uuid.uuid4().hex[:21]


def payload(run_id: str = "run-1", data: Any = None, device_id: str = "dev-1") -> dict[str, str]:
    return build_payload(task_id="task-1", run_id=run_id, task_name="sync-photos", handler="photo-sync",
                         constraints={"requiresNetwork": True, "requiresCharging": True},
                         data={"album": "Camera Roll"} if data is None else data, report_token="rt-" + run_id,
                         report_base_url="https://api.example.com", device_id=device_id)


def ios(token: str | None = None, topic: str | None = TOPIC, **kw: Any) -> PushMessage:
    t = PushTarget("dev-ios", Platform.IOS, Transport.APNS, token or apns_token(), topic)
    return PushMessage(t, payload(device_id="dev-ios"), **kw)


def android(token: str | None = None, **kw: Any) -> PushMessage:
    t = PushTarget("dev-android", Platform.ANDROID, Transport.FCM, token or fcm_token(), "com.example.app")
    return PushMessage(t, payload(device_id="dev-android"), **kw)


def ios_fcm(token: str | None = None, **kw: Any) -> PushMessage:
    t = PushTarget("dev-ios-fcm", Platform.IOS, Transport.FCM, token or fcm_token(), "1:123:ios:abc")
    return PushMessage(t, payload(device_id="dev-ios-fcm"), **kw)


class Sleeps:
    """An injected ``sleep``: records each wait, never sleeps."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def retried(sender: Any, messages: list[PushMessage], sleeps: Sleeps | None = None, *,
                  max_retry_after_s: float = 120.0, max_attempts: int = 5) -> list[tuple[SendResult, int]]:
    return await send_with_retries(sender, messages, max_attempts=max_attempts, initial_backoff_s=0.5,
                                   max_backoff_s=30.0, max_retry_after_s=max_retry_after_s,
                                   sleep=sleeps or Sleeps(), rand=lambda: 0.0)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def apns_fake() -> Iterator[APNsEmulator]:
    with APNsEmulator(topics={TOPIC}) as fake:
        yield fake


@pytest.fixture
def apns(apns_fake: APNsEmulator) -> APNsEmulator:
    apns_fake.reset()
    return apns_fake


@pytest.fixture(params=["h2", "httpx"])
async def apns_sender(apns: APNsEmulator, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[ApnsSender]:
    """Every APNs test runs on both HTTP/2 engines (one contract, two implementations)."""
    sender = ApnsSender(apns.write_auth_key(tmp_path), apns.key_id, apns.team_id, base_url=apns.base_url,
                        ca_file=apns.ca_cert_path, engine=request.param)
    yield sender
    await sender.aclose()


@pytest.fixture(scope="module")
def fcm_fakes() -> Iterator[dict[str, FCMEmulator]]:
    """FCM as the h2 engine meets it (HTTP/2 over TLS, as fcm.googleapis.com) and as the sdk
    engine's tests use it (plain HTTP/1.1: firebase-admin's httpx takes no CA bundle)."""
    with FCMEmulator(project_id="bgtasks-push-test", tls=True) as tls, FCMEmulator(project_id="bgtasks-push-test") as plain:
        yield {"h2": tls, "sdk": plain}


@pytest.fixture(params=["h2", "sdk"])
def fcm_engine(request: pytest.FixtureRequest) -> str:
    """Every FCM test runs on both engines (one contract, two implementations)."""
    return str(request.param)


@pytest.fixture
def fcm(fcm_fakes: dict[str, FCMEmulator], fcm_engine: str) -> FCMEmulator:
    fake = fcm_fakes[fcm_engine]
    fake.reset()
    return fake


def fcm_sender_for(fcm: FCMEmulator, credentials: Path | None = None, **options: Any) -> FcmSender:
    """A sender for ``fcm`` on the engine its fake serves (h2 over TLS, sdk over plain HTTP)."""
    return FcmSender(credentials or fcm.write_service_account_file(), fcm_url=fcm.send_url,
                     engine="h2" if fcm.tls else "sdk", ca_file=fcm.ca_cert_path if fcm.tls else None, **options)


@pytest.fixture
async def fcm_sender(fcm: FCMEmulator) -> AsyncIterator[FcmSender]:
    sender = fcm_sender_for(fcm)
    yield sender
    await sender.aclose()


# --------------------------------------------------------- one correct push each


async def test_android_silent_push_through_fcm(fcm: FCMEmulator, fcm_sender: FcmSender) -> None:
    by_token, by_fid = android(collapse_key="task-1", ttl_s=900), android(fid())
    results = await fcm_sender.send([by_token, by_fid])
    assert [r.kind for r in results] == [D, D]
    assert all(r.message_id and r.message_id.startswith("projects/bgtasks-push-test/messages/0:") for r in results)
    assert all(r.status == 200 and r.error is None for r in results)

    recorded = {q.target: q for q in fcm.requests.snapshot()}
    assert len(recorded) == 2
    first, second = recorded[by_token.target.token], recorded[by_fid.target.token]
    assert (first.target_kind, second.target_kind) == ("token", "fid")  # decided by shape
    assert first.status == 200 and first.headers["authorization"].startswith("Bearer ya29.emulator-")
    msg = first.message
    assert msg["data"] == by_token.payload and all(isinstance(v, str) for v in msg["data"].values())
    assert msg["android"] == {"collapse_key": "task-1", "priority": "normal", "ttl": "900s"}
    assert "notification" not in msg and "apns" not in msg
    # What the size check measures is what went on the wire (minus the target).
    wire = {k: v for k, v in msg.items() if k not in ("token", "fid")}
    assert wire == fcm_message(by_token.payload, platform=Platform.ANDROID, ttl_s=900, collapse_key="task-1")


async def test_android_high_priority_only_when_asked(fcm: FCMEmulator, fcm_sender: FcmSender) -> None:
    [r] = await fcm_sender.send([android(high_priority=True)])
    assert r.kind is D and fcm.requests.snapshot()[0].message["android"]["priority"] == "high"


async def test_ios_silent_push_through_fcm(fcm: FCMEmulator, fcm_sender: FcmSender) -> None:
    m = ios_fcm(collapse_key="task-1", ttl_s=600)
    before = time.time()
    [r] = await fcm_sender.send([m])
    assert r.kind is D
    [q] = fcm.requests.snapshot()
    apns_block = q.message["apns"]
    assert apns_block["payload"] == {"aps": {"content-available": 1}}  # no alert, sound or badge
    headers = apns_block["headers"]
    assert (headers["apns-push-type"], headers["apns-priority"], headers["apns-collapse-id"]) == (
        "background", "5", "task-1")
    assert int(before) + 600 <= int(headers["apns-expiration"]) <= int(time.time()) + 600
    assert "android" not in q.message and q.message["data"] == m.payload
    wire = {k: v for k, v in q.message.items() if k not in ("token", "fid")}
    assert wire == fcm_message(m.payload, platform=Platform.IOS, ttl_s=600, collapse_key="task-1",
                               expires_at_s=int(headers["apns-expiration"]))


@pytest.mark.parametrize(("headers", "reason"), [
    ({"apns-priority": "5"}, "InvalidPushType"),  # no apns-push-type
    ({"apns-push-type": "background", "apns-priority": "10"}, "BadPriority"),
    ({"apns-push-type": "background", "apns-collapse-id": "é" * 33}, "BadCollapseId"),
])
@pytest.mark.parametrize("fcm_engine", ["sdk"])  # firebase-admin's own sync send, to the plain fake
async def test_a_bad_apns_block_through_fcm_is_refused_as_apns_would_and_blames_no_device(
        fcm: FCMEmulator, fcm_sender: FcmSender, headers: dict[str, str], reason: str) -> None:
    """FCM relays APNs' answer for an iOS device (INVALID_ARGUMENT with an ApnsError detail):
    a message APNs refuses is the task's configuration, never a dead token."""
    from mobile_push.classify import classify_fcm_exception

    msg = messaging.Message(token=fcm_token(), data={"a": "b"}, apns=messaging.APNSConfig(
        headers=headers, payload=messaging.APNSPayload(aps=messaging.Aps(content_available=True))))
    with pytest.raises(firebase_exceptions.InvalidArgumentError) as raised:
        await asyncio.to_thread(messaging.send, msg, app=fcm_sender.app)
    verdict = classify_fcm_exception(raised.value)
    assert (verdict.kind, verdict.reason, verdict.status) == (CF, reason, 400)
    assert "FCM relayed APNs' answer" in (verdict.error or "")
    # The sender's own messages pass the same checks.
    [r] = await fcm_sender.send([ios_fcm(collapse_key="é" * 32)])
    assert r.kind is D


def test_fcm_message_builder_matches_the_size_model() -> None:
    """firebase-admin's encoder and ``payload.fcm_message`` agree for every option (pinned)."""
    for m in (android(), android(collapse_key="k", high_priority=True, ttl_s=0), ios_fcm(), ios_fcm(collapse_key="c")):
        encoded = messaging._MessagingService.encode_message(build_fcm_message(m, now_s=1_700_000_000))
        encoded.pop("token", None), encoded.pop("fid", None)
        assert encoded == fcm_message(m.payload, platform=m.target.platform, ttl_s=m.ttl_s,
                                      collapse_key=m.collapse_key, high_priority=m.high_priority,
                                      expires_at_s=apns_expiration(1_700_000_000, m.ttl_s))


async def test_ios_silent_push_through_apns(apns: APNsEmulator, apns_sender: ApnsSender) -> None:
    push_id = str(uuid.uuid4())
    m = ios(collapse_key="task-1", ttl_s=600, push_id=push_id)
    before = time.time()
    [r] = await apns_sender.send([m])
    assert (r.kind, r.status, r.message_id, r.error) == (D, 200, push_id, None)
    [q] = apns.requests.snapshot()
    assert (q.method, q.path, q.device_token) == ("POST", f"/3/device/{m.target.token}", m.target.token)
    h = q.headers
    assert (h["apns-push-type"], h["apns-priority"], h["apns-topic"], h["apns-collapse-id"], h["apns-id"]) == (
        "background", "5", TOPIC, "task-1", push_id)
    assert int(before) + 600 <= int(h["apns-expiration"]) <= int(time.time()) + 600
    assert q.payload == apns_body(m.payload) == {"aps": {"content-available": 1}, "bgtasks": m.payload}
    scheme, _, token = h["authorization"].partition(" ")
    claims = jwt.decode(token, apns.public_key, algorithms=["ES256"], options={"verify_iat": False})
    assert scheme == "bearer" and jwt.get_unverified_header(token)["kid"] == apns.key_id
    assert claims["iss"] == apns.team_id and abs(claims["iat"] - time.time()) < 600


async def test_apns_many_messages_share_one_connection_and_one_token(
    apns: APNsEmulator, apns_sender: ApnsSender
) -> None:
    big = [PushMessage(ios().target, payload(run_id=f"run-{i}", data="x" * 2000)) for i in range(300)]
    results = await apns_sender.send(big)  # 300 x 2 kB: well past the 64 kB initial flow-control window
    assert {r.kind for r in results} == {D}
    recorded = apns.requests.snapshot()
    assert len(recorded) == 300 and {q.payload["bgtasks"]["runId"] for q in recorded} == {
        f"run-{i}" for i in range(300)}
    assert len({q.connection_id for q in recorded}) == 1
    assert len({q.headers["authorization"] for q in recorded}) == 1 and apns_sender.tokens.issued == 1


@pytest.mark.parametrize("engine", ["h2", "httpx"])
async def test_apns_a_new_connection_sends_one_request_then_up_to_the_servers_limit(tmp_path: Path,
                                                                                   engine: str) -> None:
    """Cold: 60 messages on a connection that has just opened. APNs allows one stream until it
    has seen a valid token; the fake refuses a second one (and counts it)."""
    with APNsEmulator(topics={TOPIC}, max_concurrent_streams=3) as fake:
        sender = ApnsSender(fake.write_auth_key(tmp_path), fake.key_id, fake.team_id, base_url=fake.base_url,
                            ca_file=fake.ca_cert_path, engine=engine)  # type: ignore[arg-type]
        try:
            assert {r.kind for r in await sender.send([ios() for _ in range(60)])} == {D}
            assert fake.refused_streams == 0 and len(fake.requests.snapshot()) == 60
            if engine == "h2":  # each new connection starts over (httpx's pool opens its own)
                fake.goaway("Shutdown")
                results = await retried(sender, [ios() for _ in range(20)])  # transient at worst, then resent
                assert {r.kind for r, _ in results} == {D} and fake.refused_streams == 0
                assert len({q.connection_id for q in fake.requests.snapshot()}) == 2
        finally:
            await sender.aclose()


async def test_the_fake_refuses_a_second_stream_before_a_token_is_accepted(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a client that opens streams as soon as it connects (the
    sender before this rule) gets streams refused."""
    from mobile_push.senders import _h2

    monkeypatch.setattr(_h2._H2Protocol, "_capacity", lambda self: 2**31)
    real_request = _h2._H2Protocol.request

    async def no_wait(self: Any, headers: Any, body: bytes, timeout_s: float) -> Any:
        self._settings.set()  # as if SETTINGS were in: h2 then reports an unlimited stream count
        return await real_request(self, headers, body, timeout_s)

    monkeypatch.setattr(_h2._H2Protocol, "request", no_wait)
    with APNsEmulator(topics={TOPIC}) as fake:
        sender = ApnsSender(fake.write_auth_key(tmp_path), fake.key_id, fake.team_id, base_url=fake.base_url,
                            ca_file=fake.ca_cert_path)
        try:
            kinds = [r.kind for r in await sender.send([ios() for _ in range(20)])]
        finally:
            await sender.aclose()
    assert fake.refused_streams > 0 and TR in kinds


async def test_apns_sender_works_from_another_event_loop(apns: APNsEmulator, apns_sender: ApnsSender) -> None:
    """A sender used from a second loop (another thread) opens a connection there; the first loop's is closed."""
    assert [r.kind for r in await apns_sender.send([ios()])] == [D]

    def in_new_loop() -> list[OutcomeKind]:
        async def go() -> list[OutcomeKind]:
            return [r.kind for r in await apns_sender.send([ios(), ios()])]
        return asyncio.run(go())

    assert await asyncio.to_thread(in_new_loop) == [D, D]
    assert [r.kind for r in await apns_sender.send([ios()])] == [D]
    assert len({q.connection_id for q in apns.requests.snapshot()}) == 3


@pytest.mark.parametrize("engine", ["h2", "httpx"])
async def test_apns_a_hung_request_times_out_alone(apns: APNsEmulator, tmp_path: Path, engine: str) -> None:
    sender = ApnsSender(apns.write_auth_key(tmp_path), apns.key_id, apns.team_id, base_url=apns.base_url,
                        # generous: the others' TLS handshake and ES256 token must fit in it on a busy machine
                        ca_file=apns.ca_cert_path, engine=engine, timeout_s=5.0)  # type: ignore[arg-type]
    try:
        hung = ios()
        apns.script(hung.target.token, [HANG])
        results = await sender.send([hung] + [ios() for _ in range(5)])
        assert (results[0].kind, results[0].status) == (TR, None)
        assert "APNs could not be reached" in (results[0].error or "")
        assert [r.kind for r in results[1:]] == [D] * 5
        assert [r.kind for r in await sender.send([ios()])] == [D]  # the connection is still good
        if engine == "h2":  # httpcore drops the whole connection after a stream times out; ours resets the stream
            assert len({q.connection_id for q in apns.requests.snapshot()}) == 1
    finally:
        await sender.aclose()


async def test_apns_goaway_is_transient_then_a_new_connection(apns: APNsEmulator, apns_sender: ApnsSender) -> None:
    [ok] = await apns_sender.send([ios()])
    assert ok.kind is D
    first_conn = apns.requests.snapshot()[-1].connection_id
    apns.goaway("Shutdown")
    results = await retried(apns_sender, [ios() for _ in range(5)])
    assert [(r.kind) for r, _ in results] == [D] * 5  # a transport error at worst, then a new connection
    assert apns.requests.snapshot()[-1].connection_id != first_conn


# -------------------------------------------------------------- invalid tokens


async def test_fcm_dead_tokens_are_invalid(fcm: FCMEmulator, fcm_sender: FcmSender) -> None:
    gone, bad, ok = android(), android(), android()
    fcm.unregister(gone.target.token)
    fcm.mark_invalid(bad.target.token)
    results = await retried(fcm_sender, [gone, bad, ok])
    assert [(r.kind, r.status, r.reason, n) for r, n in results] == [
        (INV, 404, "UNREGISTERED", 1), (INV, 400, "INVALID_ARGUMENT", 1), (D, 200, None, 1)]
    assert len(fcm.requests) == 3  # never retried


async def test_fcm_bad_payload_is_config_not_a_dead_token(fcm: FCMEmulator, fcm_sender: FcmSender) -> None:
    m = PushMessage(android().target, {**payload(), "from": "x"})  # a reserved key the service refuses
    [r] = await fcm_sender.send([m])
    assert (r.kind, r.status) == (CF, 400) and "message.data" in (r.error or "")


async def test_apns_dead_tokens_are_invalid(apns: APNsEmulator, apns_sender: ApnsSender) -> None:
    gone, bad, other_app, not_hex = ios(), ios(), ios(), ios("not-a-hex-token")
    apns.unregister(gone.target.token, timestamp_ms=1_700_000_000_000)
    apns.mark_bad(bad.target.token)
    apns.mark_not_for_topic(other_app.target.token)
    results = await retried(apns_sender, [gone, bad, other_app, not_hex])
    assert [(r.kind, r.status, r.reason, n) for r, n in results] == [
        (INV, 410, "Unregistered", 1), (INV, 400, "BadDeviceToken", 1), (INV, 400, "DeviceTokenNotForTopic", 1),
        (INV, None, "BadDeviceToken", 1)]
    assert results[0][0].extra["unregisteredAtMs"] == "1700000000000"
    assert len(apns.requests) == 3  # the non-hex token never left the process


# ------------------------------------------------------------------ transient


async def test_fcm_503_then_success_takes_two_attempts(fcm: FCMEmulator, fcm_sender: FcmSender) -> None:
    m = android()
    fcm.script(m.target.token, [(503, "UNAVAILABLE")])
    sleeps = Sleeps()
    [(r, attempts)] = await retried(fcm_sender, [m], sleeps)
    assert (r.kind, attempts) == (D, 2)
    assert [q.status for q in fcm.requests.snapshot()] == [503, 200]  # the SDK did not retry by itself
    assert sleeps.waits == [0.5]


async def test_apns_503_then_success_takes_two_attempts(apns: APNsEmulator, apns_sender: ApnsSender) -> None:
    m = ios()
    apns.script(m.target.token, ["ServiceUnavailable"])
    sleeps = Sleeps()
    [(r, attempts)] = await retried(apns_sender, [m], sleeps)
    assert (r.kind, attempts) == (D, 2)
    assert [q.status for q in apns.requests.snapshot()] == [503, 200] and sleeps.waits == [0.5]


async def test_fcm_429_retry_after_is_honoured(fcm: FCMEmulator, fcm_sender: FcmSender) -> None:
    m = android()
    fcm.script(m.target.token, [(429, "QUOTA_EXCEEDED", {"Retry-After": "7"})])
    sleeps = Sleeps()
    [(r, attempts)] = await retried(fcm_sender, [m], sleeps)
    assert (r.kind, attempts) == (D, 2)
    assert len(sleeps.waits) == 1 and sleeps.waits[0] >= 7


async def test_apns_429_retry_after_is_honoured(apns: APNsEmulator, apns_sender: ApnsSender) -> None:
    m = ios()
    apns.script(m.target.token, [(429, "TooManyRequests", {"retry-after": "5"})])
    sleeps = Sleeps()
    [(r, attempts)] = await retried(apns_sender, [m], sleeps)
    assert (r.kind, attempts) == (D, 2)
    assert len(sleeps.waits) == 1 and sleeps.waits[0] >= 5


async def test_fcm_quota_errors_back_off_from_a_minute_doubling(fcm: FCMEmulator, fcm_sender: FcmSender) -> None:
    """Firebase asks for at least a minute after a quota error, growing exponentially."""
    m = android()
    fcm.script(m.target.token, ["QUOTA_EXCEEDED", "QUOTA_EXCEEDED"])  # 429 without Retry-After, twice
    sleeps = Sleeps()
    [(r, attempts)] = await retried(fcm_sender, [m], sleeps, max_retry_after_s=300)
    assert (r.kind, attempts) == (D, 3) and sleeps.waits == [60.0, 120.0]


async def test_apns_too_many_provider_token_updates_waits_instead_of_retrying_at_once(
        apns: APNsEmulator, apns_sender: ApnsSender) -> None:
    m = ios()
    apns.script(m.target.token, [(429, "TooManyProviderTokenUpdates", {})])
    sleeps = Sleeps()
    [(r, attempts)] = await retried(apns_sender, [m], sleeps)
    assert (r.kind, attempts) == (D, 2) and sleeps.waits == [60.0]


async def test_no_retry_waits_past_the_runs_timeout(fcm: FCMEmulator, fcm_sender: FcmSender) -> None:
    m = android()
    fcm.script(m.target.token, [(503, "UNAVAILABLE", {"Retry-After": "30"})])
    sleeps = Sleeps()
    now = 1000.0
    [(r, attempts)] = await send_with_retries(fcm_sender, [m], max_attempts=5, initial_backoff_s=0.5,
                                              max_backoff_s=30.0, max_retry_after_s=120.0, sleep=sleeps,
                                              rand=lambda: 0.0, deadline=now + 10, clock=lambda: now)
    assert (r.kind, attempts) == (TR, 1) and sleeps.waits == []
    assert "after the run's timeout" in (r.error or "")


async def test_a_retry_after_beyond_the_cap_is_not_waited(
    fcm: FCMEmulator, fcm_sender: FcmSender, apns: APNsEmulator, apns_sender: ApnsSender
) -> None:
    slow_fcm, slow_apns = android(), ios()
    fcm.script(slow_fcm.target.token, [(429, "QUOTA_EXCEEDED", {"Retry-After": "21600"})])
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 7200))
    apns.script(slow_apns.target.token, [(503, "ServiceUnavailable", {"retry-after": http_date})])
    sleeps = Sleeps()
    [(rf, nf)] = await retried(fcm_sender, [slow_fcm], sleeps, max_retry_after_s=120)
    [(ra, na)] = await retried(apns_sender, [slow_apns], sleeps, max_retry_after_s=120)
    assert sleeps.waits == [] and (nf, na) == (1, 1)
    assert (rf.kind, rf.retry_after_s) == (TR, 21600.0)
    assert ra.kind is TR and ra.retry_after_s is not None and ra.retry_after_s > 7000
    for r in (rf, ra):
        assert "BGTASKS_PUSH_MAX_RETRY_AFTER_S" in (r.error or "") and "not waiting" in (r.error or "")


@pytest.mark.parametrize("fcm_engine", ["sdk"])
async def test_sdk_sync_path_does_not_sleep_a_retry_after_either(fcm: FCMEmulator, fcm_sender: FcmSender) -> None:
    """The sync ``messaging.send`` of our app answers at once (the SDK's default would sleep and resend)."""
    target = fid()
    fcm.script(target, [(429, "QUOTA_EXCEEDED", {"Retry-After": "2"}), (503, "UNAVAILABLE")])
    with pytest.raises(messaging.QuotaExceededError):
        await asyncio.to_thread(messaging.send, messaging.Message(fid=target, data={"a": "b"}), app=fcm_sender.app)
    with pytest.raises(firebase_exceptions.UnavailableError):
        await asyncio.to_thread(messaging.send, messaging.Message(fid=target, data={"a": "b"}), app=fcm_sender.app)
    assert [q.status for q in fcm.requests.snapshot()] == [429, 503]


@pytest.mark.parametrize("fcm_engine", ["sdk"])
async def test_the_sdk_retry_hook_is_in_place(fcm_sender: FcmSender) -> None:
    """Fails when firebase-admin moves the private attributes the no-retry hook replaces."""
    await fcm_sender.send([])  # binds nothing; the hook is installed at construction and per loop
    service = messaging._get_messaging_service(fcm_sender.app)
    assert isinstance(service._async_client, _http_client.HttpxAsyncClient)
    assert service._async_client._retry_config.retries_left == 0
    assert isinstance(service._async_client._retry_config, _retry.HttpxRetry)
    assert service._fcm_url.endswith("/v1/projects/bgtasks-push-test/messages:send")


@pytest.mark.parametrize("engine", ["h2", "httpx"])
async def test_transport_errors_are_transient(fcm: FCMEmulator, tmp_path: Path, apns: APNsEmulator, engine: str) -> None:
    port = closed_port()
    f = FcmSender(fcm.write_service_account_file(), fcm_url=f"http://127.0.0.1:{port}/v1/projects/p/messages:send")
    a = ApnsSender(apns.write_auth_key(tmp_path), apns.key_id, apns.team_id, base_url=f"https://127.0.0.1:{port}",
                   engine=engine)  # type: ignore[arg-type]
    try:
        [rf] = await f.send([android()])
        [ra] = await a.send([ios()])
    finally:
        await f.aclose()
        await a.aclose()
    assert (rf.kind, rf.status) == (TR, None) and "could not be reached" in (rf.error or "")
    assert (ra.kind, ra.status) == (TR, None) and ra.reason in ("ConnectError", "ConnectionRefusedError")


# ---------------------------------------------------------- provider tokens


async def test_expired_provider_token_is_renewed_once_and_resent(apns: APNsEmulator, apns_sender: ApnsSender) -> None:
    await apns_sender.send([ios()])  # a token in use
    apns.requests.clear()
    apns.force_expired_provider_token(1)
    sleeps = Sleeps()
    [(r, attempts)] = await retried(apns_sender, [ios()], sleeps)
    assert (r.kind, attempts, sleeps.waits) == (D, 1, [])  # the resend is not a transient retry
    assert r.extra.get("providerTokenRenewed") == "1"
    first, second = apns.requests.snapshot()
    assert (first.reason, second.status) == ("ExpiredProviderToken", 200)
    assert first.headers["authorization"] != second.headers["authorization"]
    assert apns_sender.tokens.issued == 2  # exactly one new JWT


async def test_concurrent_expiry_answers_share_one_renewal(apns: APNsEmulator, apns_sender: ApnsSender) -> None:
    await apns_sender.send([ios()])
    apns.expire_provider_tokens()  # every request with the current token answers ExpiredProviderToken
    results = await apns_sender.send([ios() for _ in range(30)])
    assert {r.kind for r in results} == {D}
    assert apns_sender.tokens.issued == 2


async def test_a_second_expiry_answer_is_a_config_error(apns: APNsEmulator, apns_sender: ApnsSender) -> None:
    apns.force_expired_provider_token(2)
    [r] = await apns_sender.send([ios()])
    assert (r.kind, r.reason) == (CF, "ExpiredProviderToken") and "clock" in (r.error or "")
    assert len(apns.requests) == 2


@pytest.mark.parametrize("engine", ["h2", "httpx"])
async def test_provider_token_is_reused_then_renewed_after_50_minutes(tmp_path: Path, engine: str) -> None:
    start = time.time()
    now = [start]

    def clock() -> float:
        return now[0]

    with APNsEmulator(topics={TOPIC}, clock=clock) as fake:
        sender = ApnsSender(fake.write_auth_key(tmp_path), fake.key_id, fake.team_id, base_url=fake.base_url,
                            ca_file=fake.ca_cert_path, clock=clock, engine=engine)  # type: ignore[arg-type]
        try:
            for minutes in (0, 19, 35, 49):  # the fake answers 429 to a change within 20 min, 403 after 60
                now[0] = start + 60 * minutes
                assert [r.kind for r in await sender.send([ios()])] == [D]
            assert sender.tokens.issued == 1
            now[0] = start + 60 * 51
            assert [r.kind for r in await sender.send([ios()])] == [D]
            assert sender.tokens.issued == 2
            auths = [q.headers["authorization"] for q in fake.requests.snapshot()]
            assert len(set(auths)) == 2 and auths[:4] == [auths[0]] * 4
        finally:
            await sender.aclose()


# --------------------------------------------------------------- config errors


async def test_apns_config_errors_say_how_to_fix(apns: APNsEmulator, apns_sender: ApnsSender, tmp_path: Path) -> None:
    wrong_team = ApnsSender(apns.write_auth_key(tmp_path), apns.key_id, "OTHERTEAM0", base_url=apns.base_url,
                            ca_file=apns.ca_cert_path, engine=apns_sender.engine)  # type: ignore[arg-type]
    try:
        [r] = await wrong_team.send([ios()])
    finally:
        await wrong_team.aclose()
    assert (r.kind, r.status, r.reason) == (CF, 403, "InvalidProviderToken")
    assert "BGTASKS_PUSH_APNS_TEAM_ID" in (r.error or "")

    apns.requests.clear()
    sleeps = Sleeps()
    [(no_topic, n1), (other_topic, n2)] = await retried(apns_sender, [ios(topic=None), ios(topic="com.other.app")],
                                                        sleeps)
    assert (no_topic.kind, no_topic.reason, no_topic.status, n1) == (CF, "MissingTopic", None, 1)
    assert (other_topic.kind, other_topic.reason, other_topic.status, n2) == (CF, "TopicDisallowed", 400, 1)
    assert "bundle id" in (no_topic.error or "") and "bundle id" in (other_topic.error or "")
    assert len(apns.requests) == 1 and sleeps.waits == []  # the topic-less one never left the process


async def test_fcm_config_errors_say_how_to_fix(fcm: FCMEmulator, fcm_sender: FcmSender) -> None:
    mismatch, apns_auth = android(), ios_fcm()
    fcm.script(mismatch.target.token, ["SENDER_ID_MISMATCH"])
    fcm.script(apns_auth.target.token, ["THIRD_PARTY_AUTH_ERROR"] * 3)  # the SDK refreshes its token on 401
    results = await retried(fcm_sender, [mismatch, apns_auth])
    assert [(r.kind, r.status, r.reason, n) for r, n in results] == [
        (CF, 403, "SENDER_ID_MISMATCH", 1), (CF, 401, "THIRD_PARTY_AUTH_ERROR", 1)]
    assert "BGTASKS_PUSH_FCM_CREDENTIALS_FILE" in (results[0][0].error or "")
    assert "APNs auth key" in (results[1][0].error or "")


async def test_fcm_refused_service_account_is_config(fcm: FCMEmulator, fcm_sender: FcmSender) -> None:
    await fcm_sender.send([android()])  # an access token in hand
    fcm.revoke_access_tokens()  # 401 -> the SDK refreshes -> the token endpoint refuses the key
    fcm.script_token_endpoint([(400, "invalid_grant", "Invalid JWT Signature.")] * 3)
    [r] = await fcm_sender.send([android()])
    assert (r.kind, r.reason) == (CF, "RefreshError") and "BGTASKS_PUSH_FCM_CREDENTIALS_FILE" in (r.error or "")
    fcm.reset()
    [ok] = await fcm_sender.send([android()])  # a later refresh succeeds
    assert ok.kind is D


async def test_fcm_key_refused_before_sending_is_config(fcm: FCMEmulator, tmp_path: Path) -> None:
    """A new app's first access token is fetched off the loop; a refused key fails every message, unsent."""
    sender = fcm_sender_for(fcm, fcm.write_service_account_file(tmp_path / "refused.json"))
    fcm.script_token_endpoint([(400, "invalid_grant", "Invalid JWT Signature.")])
    try:
        results = await sender.send([android(), ios_fcm()])
        assert [(r.kind, r.reason) for r in results] == [(CF, "RefreshError")] * 2
        assert len(fcm.requests) == 0 and [t.status for t in fcm.token_requests.snapshot()] == [400]
        assert [r.kind for r in await sender.send([android()])] == [D]  # the next send gets a token
    finally:
        await sender.aclose()


async def test_fcm_sender_works_from_another_event_loop(fcm: FCMEmulator, fcm_sender: FcmSender) -> None:
    """One firebase app per process; its HTTP client is rebound to whichever loop sends."""
    def in_new_loop() -> tuple[list[OutcomeKind], bool]:
        async def go() -> tuple[list[OutcomeKind], bool]:
            other = fcm_sender_for(fcm, fcm_sender.credentials_file)
            try:
                return [r.kind for r in await other.send([android()])], other.app is fcm_sender.app
            finally:
                await other.aclose()
        return asyncio.run(go())

    assert await asyncio.to_thread(in_new_loop) == ([D], True)
    assert [r.kind for r in await fcm_sender.send([android()])] == [D]


# ---------------------------------------------------------------- size refusal


async def test_oversized_payload_is_refused_before_any_network_call(
    fcm: FCMEmulator, fcm_sender: FcmSender, apns: APNsEmulator, apns_sender: ApnsSender
) -> None:
    big = payload(data="x" * MAX_PAYLOAD_BYTES)
    to_fcm = [PushMessage(android().target, big), PushMessage(ios_fcm().target, big)]
    to_apns = PushMessage(ios().target, big)
    token_requests = len(fcm.token_requests)
    results = [r for r, _ in await retried(fcm_sender, to_fcm)] + [r for r, _ in await retried(apns_sender,
                                                                                                [to_apns])]
    for r in results:
        assert (r.kind, r.reason, r.status) == (CF, "PayloadTooLarge", None)
        assert "'data'" in (r.error or "") and "limit is 4096" in (r.error or "")
    assert len(fcm.requests) == 0 and len(apns.requests) == 0 and len(fcm.token_requests) == token_requests


# ------------------------------------------------------------------- secrets


async def test_secrets_never_reach_results_reprs_or_logs(
    fcm: FCMEmulator, fcm_sender: FcmSender, apns: APNsEmulator, apns_sender: ApnsSender, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert apns.private_key_pem is not None
    secrets = [apns.private_key_pem.decode(), fcm.private_key_pem.decode()]
    fragments = [line for pem in secrets for line in pem.splitlines() if "-----" not in line]
    caplog.set_level(logging.DEBUG)

    results: list[SendResult] = []
    gone = android()
    fcm.unregister(gone.target.token)
    results += await fcm_sender.send([android(), gone, android()])
    results += await apns_sender.send([ios(), ios(topic="com.other.app")])
    apns.force_expired_provider_token(1)
    results += await apns_sender.send([ios()])
    wrong = ApnsSender(apns.write_auth_key(tmp_path), apns.key_id, "OTHERTEAM0", base_url=apns.base_url,
                       ca_file=apns.ca_cert_path, engine=apns_sender.engine)  # type: ignore[arg-type]
    results += await wrong.send([ios()])
    fcm.revoke_access_tokens()
    fcm.script_token_endpoint([(400, "invalid_grant", "Invalid JWT Signature.")] * 3)
    results += await fcm_sender.send([android()])
    access_tokens = {q.headers["authorization"].split()[-1] for q in fcm.requests.snapshot()
                     if "authorization" in q.headers}
    fcm.reset()
    with pytest.raises(ValueError) as bad_key:
        ApnsSender(fcm.write_service_account_file(), "KEY1234567", "TEAM123456")  # not a .p8: content not echoed
    texts = [repr(r) for r in results] + [str(r.error) for r in results] + [
        repr(fcm_sender), repr(apns_sender), repr(wrong), repr(apns_sender.tokens), str(bad_key.value),
        caplog.text] + [r.getMessage() for r in caplog.records]
    await wrong.aclose()
    assert {r.kind for r in results} >= {D, INV, CF}
    for text in texts:
        for fragment in fragments:
            assert fragment not in text
        assert "PRIVATE KEY" not in text
    # Nor the bearer credentials derived from them: provider JWTs and OAuth access tokens (hpack's DEBUG
    # dumps of header blocks are filtered).
    bearers = {q.headers["authorization"].split()[-1] for q in apns.requests.snapshot()}
    bearers |= access_tokens
    bearers.add(apns_sender.tokens.current())
    assert access_tokens and len(bearers) >= 3 and any(r.name.startswith("hpack") for r in caplog.records)
    for text in texts:
        for bearer in bearers:
            assert bearer not in text


# -------------------------------------------------------------- retry loop (memory)


async def test_retries_travel_in_waves_and_a_long_wait_does_not_hold_the_rest() -> None:
    sender = RecordingSender(Transport.APNS)
    slow, quick, fine = ios(), ios(), ios()
    sender.script(slow.target.token, [Scripted(TR, retry_after_s=60)])
    sender.script(quick.target.token, [TR])
    release = asyncio.Event()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if seconds >= 60:
            await release.wait()  # held until the quick message's retry has gone out

    class Spy:
        transport = Transport.APNS

        async def send(self, messages: Any) -> list[SendResult]:
            out = await sender.send(messages)
            if quick in messages and len(sender.calls) > 1:
                release.set()
            return out

        async def aclose(self) -> None: ...

    results = await asyncio.wait_for(send_with_retries(
        Spy(), [slow, quick, fine], max_attempts=3, initial_backoff_s=0.5, max_backoff_s=30, max_retry_after_s=120,
        sleep=sleep, rand=lambda: 0.0), timeout=30)  # a safety net: serialised waves would deadlock here
    assert [(r.kind, n) for r, n in results] == [(D, 2), (D, 2), (D, 1)]
    assert sorted(waits) == [0.5, 60.0]
    assert [len(c) for c in sender.calls] == [3, 1, 1]
    assert sender.calls[1] == [quick] and sender.calls[2] == [slow]


async def test_backoff_is_capped_jittered_down_and_batched() -> None:
    sender = RecordingSender(Transport.FCM)
    msgs = [android() for _ in range(3)]
    for m in msgs:
        sender.script(m.target.token, [TR] * 10)
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    results = await send_with_retries(sender, msgs, max_attempts=6, initial_backoff_s=0.5, max_backoff_s=3.0,
                                      max_retry_after_s=60, sleep=sleep, rand=lambda: 1.0, jitter=0.5)
    assert [(r.kind, n) for r, n in results] == [(TR, 6)] * 3
    assert waits == [0.25, 0.5, 1.0, 1.5, 1.5]  # 0.5, 1, 2, 4->3, 3->3, each shortened by half
    assert [len(c) for c in sender.calls] == [3] * 6  # every retry resends the three together


async def test_only_transient_results_are_retried() -> None:
    sender = RecordingSender(Transport.FCM)
    dead, broken, retry_after_small = android(), android(), android()
    sender.invalidate(dead.target.token)
    sender.script(broken.target.token, [CF])
    sender.script(retry_after_small.target.token, [Scripted(TR, retry_after_s=0.1)])
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    results = await send_with_retries(sender, [dead, broken, retry_after_small], max_attempts=3,
                                      initial_backoff_s=2, max_backoff_s=10, max_retry_after_s=60, sleep=sleep,
                                      rand=lambda: 0.0)
    assert [(r.kind, n) for r, n in results] == [(INV, 1), (CF, 1), (D, 2)]
    assert waits == [2.0]  # a Retry-After shorter than the backoff: the backoff


async def test_a_sender_bug_surfaces_as_itself() -> None:
    class Broken:
        transport = Transport.FCM

        async def send(self, messages: Any) -> list[SendResult]:
            raise KeyError("bug")

        async def aclose(self) -> None: ...

    with pytest.raises(KeyError):  # not an ExceptionGroup
        await retried(Broken(), [android()])
    with pytest.raises(ValueError, match="max_attempts"):
        await retried(RecordingSender(Transport.FCM), [android()], max_attempts=0)
    assert await retried(RecordingSender(Transport.FCM), []) == []


async def test_memory_sender_refuses_big_payloads_and_wrong_transport() -> None:
    sender = RecordingSender("apns")
    [r] = await sender.send([PushMessage(ios().target, payload(data="x" * 5000))])
    assert (r.kind, r.reason) == (CF, "PayloadTooLarge")
    with pytest.raises(ValueError, match="this sender is apns"):
        await sender.send([android()])
    await sender.aclose()
    with pytest.raises(RuntimeError):
        await sender.send([ios()])


# ------------------------------------------------------------------- factory


@pytest.mark.parametrize("engine", ["h2", "httpx"])
async def test_a_token_refused_by_one_apns_environment_is_tried_on_the_other(
        apns: APNsEmulator, tmp_path: Path, engine: str) -> None:
    """BadDeviceToken is usually a development build's (sandbox) token sent to production or
    the reverse: the other environment is tried once; only a token both refuse is invalid. A
    device registered for an environment is pushed there directly."""
    assert apns.private_key is not None
    with APNsEmulator(apns.team_id, apns.key_id, apns.private_key.public_key(), topics={TOPIC}) as sandbox:
        cas = tmp_path / "cas.pem"  # the two fakes' CAs, as one bundle
        cas.write_bytes(apns.ca_cert_path.read_bytes() + sandbox.ca_cert_path.read_bytes())
        sender = ApnsSender(apns.write_auth_key(tmp_path), apns.key_id, apns.team_id, base_url=apns.base_url,
                            other_base_url=sandbox.base_url, ca_file=cas, engine=engine)  # type: ignore[arg-type]
        try:
            dev_build, dead, pinned = ios(), ios(), ios()
            pinned = PushMessage(PushTarget("dev-pinned", Platform.IOS, Transport.APNS, pinned.target.token, TOPIC,
                                            "sandbox"), pinned.payload)
            apns.mark_bad(dev_build.target.token)
            apns.mark_bad(dead.target.token)
            sandbox.mark_bad(dead.target.token)
            moved, gone, direct = await sender.send([dev_build, dead, pinned])
        finally:
            await sender.aclose()
        assert (moved.kind, moved.extra.get("apnsEnvironment")) == (D, "sandbox")
        assert (gone.kind, gone.reason) == (INV, "BadDeviceToken") and "apnsEnvironment" not in gone.extra
        assert direct.kind is D and "apnsEnvironment" not in direct.extra
        production = [q.device_token for q in apns.requests.snapshot()]
        assert sorted(production) == sorted([dev_build.target.token, dead.target.token])  # not the pinned one
        assert sorted(q.device_token for q in sandbox.requests.snapshot()) == sorted(
            [dev_build.target.token, dead.target.token, pinned.target.token])


async def test_the_apns_environment_picks_apples_host(apns: APNsEmulator, tmp_path: Path) -> None:
    """BGTASKS_PUSH_APNS_ENVIRONMENT: production is api.push.apple.com, sandbox (development
    builds) api.sandbox.push.apple.com; BGTASKS_PUSH_APNS_BASE_URL overrides both."""
    key = apns.write_auth_key(tmp_path)
    hosts = {}
    for environment in ("production", "sandbox"):
        push = PushSettings(sender="auto", apns_key_file=key, apns_key_id=apns.key_id, apns_team_id=apns.team_id,
                            apns_environment=environment)
        sender = make_senders(push)[Transport.APNS]
        hosts[environment] = sender.base_url  # type: ignore[attr-defined]
        await sender.aclose()
    assert hosts == {"production": "https://api.push.apple.com", "sandbox": "https://api.sandbox.push.apple.com"}
    with pytest.raises(ValueError, match="BGTASKS_PUSH_APNS_ENVIRONMENT"):
        ApnsSender(key, apns.key_id, apns.team_id, environment="development")  # type: ignore[arg-type]


async def test_make_senders_from_settings(apns: APNsEmulator, fcm: FCMEmulator, tmp_path: Path) -> None:
    memory = make_senders(PushSettings(sender="memory"))
    assert {t: type(s) for t, s in memory.items()} == {Transport.FCM: RecordingSender,
                                                        Transport.APNS: RecordingSender}

    only_apns = PushSettings(sender="auto", apns_key_file=apns.write_auth_key(tmp_path), apns_key_id=apns.key_id,
                             apns_team_id=apns.team_id, apns_base_url=apns.base_url,
                             apns_ca_file=apns.ca_cert_path, apns_environment="sandbox")
    senders = make_senders(only_apns)
    assert set(senders) == {Transport.APNS} and isinstance(senders[Transport.APNS], ApnsSender)
    [r] = await senders[Transport.APNS].send([ios()])
    assert r.kind is D
    await senders[Transport.APNS].aclose()
    assert missing_settings(Transport.FCM, only_apns) == ["BGTASKS_PUSH_FCM_CREDENTIALS_FILE"]
    message = missing_credentials_error(Transport.FCM, only_apns)
    assert message.startswith("FCM is not configured: set BGTASKS_PUSH_FCM_CREDENTIALS_FILE")
    partial = PushSettings(sender="auto", apns_key_id="KEY1234567")
    assert missing_settings("apns", partial) == ["BGTASKS_PUSH_APNS_KEY_FILE", "BGTASKS_PUSH_APNS_TEAM_ID"]
    assert "BGTASKS_PUSH_APNS_TEAM_ID" in missing_credentials_error("apns", partial)

    both = PushSettings(sender="auto", fcm_credentials_file=fcm.write_service_account_file(), fcm_url=fcm.send_url,
                        apns_key_file=only_apns.apns_key_file, apns_key_id="KEY1234567", apns_team_id="TEAM123456")
    senders = make_senders(both)
    assert set(senders) == {Transport.FCM, Transport.APNS}
    for s in senders.values():
        await s.aclose()
    with pytest.raises(ValueError, match="BGTASKS_PUSH_APNS_KEY_FILE"):
        make_senders(PushSettings(apns_key_file=tmp_path / "missing.p8", apns_key_id="K", apns_team_id="T"))
