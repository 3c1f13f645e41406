"""The worker's push service (mobile_push.service): senders that live across runs.

Real components: the Unix socket, APNsEmulator (HTTP/2 + TLS, ES256 provider tokens checked),
FCMEmulator (FCM v1 + Google's OAuth token endpoint), firebase-admin. Each "run" is what a
device-task run does: senders_for(), one send, aclose().
"""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bgtasks.settings import PushSettings
from mobile_push.payload import build_payload
from mobile_push.service import ENV_SOCKET, PushService, RemoteSender, senders_for
from mobile_push.types import OutcomeKind, Platform, PushMessage, PushTarget, Transport
from mobile_push.emulator import APNsEmulator, FCMEmulator

TOPIC = "com.example.bgtasks"
RUNS = 5


def message(transport: Transport, run: int) -> PushMessage:
    token = uuid.uuid4().hex * 2 if transport is Transport.APNS else "c" + uuid.uuid4().hex[:21] + ":APA91b" + "x" * 64
    platform = Platform.IOS if transport is Transport.APNS else Platform.ANDROID
    payload = build_payload(task_id="t", run_id=f"run-{run}", task_name="sync", handler="sync", constraints={},
                            data={"n": run}, report_token=f"rt-{run}", report_base_url="https://api.example.com",
                            device_id=f"dev-{run}")
    return PushMessage(PushTarget(f"dev-{run}", platform, transport, token, TOPIC), payload, collapse_key="sync")


@pytest.fixture
def fakes(tmp_path: Path) -> Any:
    with APNsEmulator(topics={TOPIC}) as apns, FCMEmulator(tls=True) as fcm:
        push = PushSettings(sender="auto", apns_key_file=apns.write_auth_key(tmp_path), apns_key_id=apns.key_id,
                            apns_team_id=apns.team_id, apns_base_url=apns.base_url, apns_ca_file=apns.ca_cert_path,
                            fcm_credentials_file=fcm.write_service_account_file(tmp_path / "sa.json"),
                            fcm_url=fcm.send_url, fcm_ca_file=fcm.ca_cert_path)
        yield apns, fcm, push


@pytest.fixture
async def service(fakes: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PushService]:
    svc = PushService(fakes[2], tmp_path / "run" / "push.sock")
    await svc.start()
    monkeypatch.setenv(ENV_SOCKET, str(svc.path))
    yield svc
    await svc.close()


async def run_once(push: PushSettings, run: int) -> list[OutcomeKind]:
    """One device-task run's use of the senders."""
    senders = await senders_for(push)
    try:
        kinds = []
        for transport in (Transport.APNS, Transport.FCM):
            kinds += [r.kind for r in await senders[transport].send([message(transport, run)])]
        return kinds
    finally:
        for sender in senders.values():
            await sender.aclose()


def apns_connections_and_tokens(apns: APNsEmulator) -> tuple[int, int]:
    recorded = apns.requests.snapshot()
    return len({q.connection_id for q in recorded}), len({q.headers["authorization"] for q in recorded})


async def test_runs_share_one_connection_one_provider_token_and_one_access_token(fakes: Any,
                                                                                 service: PushService) -> None:
    apns, fcm, push = fakes
    for run in range(RUNS):
        assert await run_once(push, run) == [OutcomeKind.DELIVERED] * 2
    senders = await senders_for(push)
    assert {type(s) for s in senders.values()} == {RemoteSender}
    assert apns_connections_and_tokens(apns) == (1, 1)
    assert len(fcm.token_requests.snapshot()) == 1 and len(fcm.requests.snapshot()) == RUNS
    assert fcm.h2_connections == 1  # every run's FCM sends on one HTTP/2 connection over TLS
    # The socket is the user's alone.
    assert stat.S_IMODE(service.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(service.path.parent.stat().st_mode) == 0o700


async def test_without_the_service_each_run_connects_and_signs_anew(fakes: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """What the service saves (and what this measure would see if it broke): each run on its
    own opens a connection and signs a provider token."""
    apns, _, push = fakes
    monkeypatch.delenv(ENV_SOCKET, raising=False)
    kinds = [await run_once(push, run) for run in range(RUNS)]
    assert kinds[0] == [OutcomeKind.DELIVERED] * 2
    # APNs counts a team's token changes across connections: every later run's new token, signed
    # within 20 minutes of the first, is refused (TooManyProviderTokenUpdates).
    assert kinds[1:] == [[OutcomeKind.TRANSIENT, OutcomeKind.DELIVERED]] * (RUNS - 1)
    refused = [q.reason for q in apns.requests.snapshot()[1:]]
    assert refused == ["TooManyProviderTokenUpdates"] * (RUNS - 1)
    assert apns_connections_and_tokens(apns) == (RUNS, RUNS)
    # (FCM's access token is cached by firebase-admin within one process; a run is a process
    # of its own, so each fetched one: the device-task test sees that across real runs.)


async def test_a_credentials_problem_is_named_to_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "AuthKey.p8"
    key.write_text("not a key")
    key.chmod(0o644)  # and readable by others: refused before it is read
    push = PushSettings(sender="auto", apns_key_file=key, apns_key_id="KEY1234567", apns_team_id="TEAM123456")
    svc = PushService(push, tmp_path / "run" / "push.sock")
    await svc.start()
    monkeypatch.setenv(ENV_SOCKET, str(svc.path))
    try:
        with pytest.raises(ValueError, match="BGTASKS_PUSH_APNS_KEY_FILE"):
            await senders_for(push)
    finally:
        await svc.close()
    assert not svc.path.exists()


async def test_an_idle_connection_is_kept_open_with_ping(fakes: Any, service: PushService) -> None:
    apns, fcm, push = fakes
    await run_once(push, 0)
    for sender in (await service.senders()).values():
        await sender.keepalive()  # type: ignore[attr-defined]
    await run_once(push, 1)  # the PINGs went out with the next frames, at the latest
    assert apns.pings >= 1 and apns_connections_and_tokens(apns) == (1, 1)
    assert fcm.pings >= 1 and fcm.h2_connections == 1


def test_messages_and_results_cross_the_socket_unchanged() -> None:
    from mobile_push.service import message_from, message_json, result_from, result_json
    from mobile_push.types import SendResult

    m = message(Transport.APNS, 7)
    m = PushMessage(PushTarget("dev-7", Platform.IOS, Transport.APNS, m.target.token, TOPIC, "sandbox"), m.payload,
                    collapse_key="c", ttl_s=90, high_priority=True, push_id="ID-7", analytics_label="nightly-sync")
    wire = json.loads(json.dumps(message_json(m)))
    assert message_from(wire) == m
    r = SendResult(m, OutcomeKind.TRANSIENT, "mid", 429, "TooManyRequests", "wait", 5.0, {"apnsEnvironment": "sandbox"},
                   min_backoff_s=60.0)
    assert result_from(json.loads(json.dumps(result_json(r))), m) == r
