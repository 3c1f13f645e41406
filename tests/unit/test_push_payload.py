"""The silent push payload (pure): flat strings, the schema, the exact wire sizes, refusal before sending."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bgtasks.models import TaskConstraints
from mobile_push.payload import (
    CONSTRAINT_KEYS, MAX_PAYLOAD_BYTES, PAYLOAD_KEYS, PayloadTooLarge, apns_body, apns_body_bytes, build_payload,
    check_message, check_size, fcm_message, fcm_message_size, format_sent_at, report_url,
)
from mobile_push.senders.apns import ApnsSender
from mobile_push.types import OutcomeKind, Platform, PushMessage, PushTarget, Transport

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "push-payload.schema.json"
SENT = datetime(2025, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)


def _payload(**over: Any) -> dict[str, str]:
    args: dict[str, Any] = dict(
        task_id="task-1", run_id="run-1", task_name="sync-photos", handler="photo-sync",
        constraints={"requiresWifi": True, "requiresCharging": True}, data={"album": "Camera Roll", "n": 3},
        report_token="rt-secret", report_base_url="https://api.example.com", device_id="dev-42", sent_at=SENT,
    )
    args.update(over)
    return build_payload(**args)


def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def test_payload_is_a_flat_map_of_strings_with_every_key() -> None:
    p = _payload()
    assert tuple(p) == PAYLOAD_KEYS
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in p.items())
    assert p == {
        "bgtasks": "1", "taskId": "task-1", "runId": "run-1", "taskName": "sync-photos", "handler": "photo-sync",
        "constraints": '{"requiresWifi":true,"requiresCharging":true}',
        "data": '{"album":"Camera Roll","n":3}', "reportToken": "rt-secret",
        "reportUrl": "https://api.example.com/devices/dev-42/runs/run-1/report",
        "sentAt": "2025-01-02T03:04:05.678Z",
    }


def test_payload_validates_against_the_published_schema() -> None:
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for p in (_payload(), _payload(handler=None, constraints={}, data=None, task_id=""),
              _payload(data=["ü", {"x": 1.5}], constraints=TaskConstraints(requires_network=True))):
        validator.validate(p)
        # the JSON inside the strings: constraints has its own schema (contentSchema)
        jsonschema.Draft202012Validator(schema["properties"]["constraints"]["contentSchema"]).validate(
            json.loads(p["constraints"]))
        json.loads(p["data"])
    for example in schema["examples"]:
        validator.validate(example)
    assert set(schema["required"]) == set(PAYLOAD_KEYS)
    assert set(schema["properties"]["constraints"]["contentSchema"]["properties"]) == set(CONSTRAINT_KEYS)
    bad = dict(_payload(), sentAt="2025-01-02 03:04:05")
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(dict(_payload(), data=3))  # not a string


def test_constraints_from_the_model_and_dict_agree_and_drop_unset() -> None:
    model = TaskConstraints(requires_network=True, requires_device_idle=False)
    assert _payload(constraints=model)["constraints"] == '{"requiresNetwork":true,"requiresDeviceIdle":false}'
    assert _payload(constraints={"requiresNetwork": True, "requiresWifi": None})["constraints"] == \
        '{"requiresNetwork":true}'
    assert _payload(constraints=None)["constraints"] == "{}"


@pytest.mark.parametrize(("over", "field"), [
    ({"task_id": None}, "task_id"),
    ({"run_id": 7}, "run_id"),
    ({"task_name": "  "}, "task_name"),
    ({"report_token": ""}, "report_token"),
    ({"device_id": ""}, "device_id"),
    ({"handler": 3}, "handler"),
    ({"constraints": {"requiresGps": True}}, "constraints.requiresGps"),
    ({"constraints": {"requiresWifi": "yes"}}, "constraints.requiresWifi"),
    ({"constraints": ["requiresWifi"]}, "constraints"),
    ({"data": {"x": float("nan")}}, "data"),
    ({"data": {"x": object()}}, "data"),
    ({"report_base_url": "api.example.com"}, "report_base_url"),
    ({"report_base_url": "ftp://api.example.com"}, "report_base_url"),
    ({"report_base_url": "https://api.example.com/?a=1"}, "report_base_url"),
    ({"sent_at": datetime(2025, 1, 1)}, "sent_at"),
])
def test_bad_input_names_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError) as err:
        _payload(**over)
    assert str(err.value).startswith(field + ":")


def test_report_url_encodes_ids_and_keeps_a_prefix() -> None:
    assert report_url("https://h.example/api/v1/", "dev/1 x", "run?2") == \
        "https://h.example/api/v1/devices/dev%2F1%20x/runs/run%3F2/report"
    assert report_url("http://127.0.0.1:8787", "d", "r") == "http://127.0.0.1:8787/devices/d/runs/r/report"


def test_sent_at_is_utc_with_milliseconds_and_z() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert format_sent_at(datetime(2025, 1, 2, 5, 4, 5, 999_999, tzinfo=plus2)) == "2025-01-02T03:04:05.999Z"
    assert _payload(sent_at=None)["sentAt"].endswith("Z")


def test_apns_body_is_a_background_push_without_alert_sound_or_badge() -> None:
    p = _payload()
    body = apns_body(p)
    assert body == {"aps": {"content-available": 1}, "bgtasks": p}
    raw = apns_body_bytes(p)
    assert json.loads(raw) == body and b" " not in raw.replace(b"Camera Roll", b"")  # compact
    assert not {"alert", "sound", "badge"} & set(body["aps"])


def test_fcm_message_android_and_ios_shapes() -> None:
    p = _payload()
    assert fcm_message(p, platform=Platform.ANDROID, ttl_s=600, collapse_key="task-1") == {
        "data": p, "android": {"collapse_key": "task-1", "priority": "normal", "ttl": "600s"}}
    assert fcm_message(p, platform=Platform.ANDROID, high_priority=True, ttl_s=1.5)["android"] == {
        "priority": "high", "ttl": "1.500000000s"}
    ios = fcm_message(p, platform=Platform.IOS, collapse_key="c", expires_at_s=1_700_000_000)
    assert ios == {"data": p, "apns": {
        "headers": {"apns-push-type": "background", "apns-priority": "5", "apns-expiration": "1700000000",
                    "apns-collapse-id": "c"},
        "payload": {"aps": {"content-available": 1}}}}


def _sized(transport: Transport, target: int, **opts: Any) -> dict[str, str]:
    """A payload whose measured size for ``transport`` is exactly ``target`` bytes."""
    p = _payload(data="")
    measure = (lambda q: len(apns_body_bytes(q))) if transport is Transport.APNS else \
        (lambda q: fcm_message_size(q, **opts))
    p["data"] = json.dumps("x" * (target - measure(p)))
    p["data"] = json.dumps("x" * (target - measure(p) + len(p["data"]) - 2))
    assert measure(p) == target
    return p


@pytest.mark.parametrize("transport", list(Transport))
def test_size_limit_is_exact_at_4096_bytes(transport: Transport) -> None:
    opts: dict[str, Any] = {"platform": Platform.ANDROID, "ttl_s": 3600, "collapse_key": None, "high_priority": False}
    fits = _sized(transport, MAX_PAYLOAD_BYTES, **opts)
    assert check_size(fits, transport, **opts) == MAX_PAYLOAD_BYTES
    over = _sized(transport, MAX_PAYLOAD_BYTES + 1, **opts)
    with pytest.raises(PayloadTooLarge) as err:
        check_size(over, transport, **opts)
    e = err.value
    assert (e.size, e.limit, e.biggest_field, e.transport) == (4097, 4096, "data", transport)
    assert "'data'" in str(e) and "4097 bytes" in str(e) and "limit is 4096" in str(e)
    assert isinstance(e, ValueError)
    assert pickle.loads(pickle.dumps(e)).size == 4097


def test_size_counts_utf8_bytes_not_characters() -> None:
    p = dict(_payload(), data="")
    base = len(apns_body_bytes(p))
    p["data"] = "é" * 100  # 2 bytes each on the wire (ensure_ascii=False)
    assert len(apns_body_bytes(p)) == base + 200


def test_fcm_size_depends_on_the_platform_block() -> None:
    p = _payload()
    android = fcm_message_size(p, platform=Platform.ANDROID, collapse_key="k" * 40)
    ios = fcm_message_size(p, platform=Platform.IOS, collapse_key="k" * 40)
    assert android != ios
    msg = PushMessage(PushTarget("d", Platform.IOS, Transport.FCM, "tok"), p, collapse_key="k" * 40)
    assert check_message(msg) == ios


def test_non_string_values_are_refused() -> None:
    with pytest.raises(ValueError, match="payload.n: FCM data values must be strings"):
        check_size({"n": 1}, Transport.FCM)  # type: ignore[dict-item]


async def test_apns_sender_refuses_an_oversized_payload_before_any_request(tmp_path: Path) -> None:
    """No request reaches the transport (an httpx MockTransport that records every request)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "AuthKey_KEY1234567.p8"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    sender = ApnsSender(key_file, "KEY1234567", "TEAM123456", client=client)
    target = PushTarget("d", Platform.IOS, Transport.APNS, "ab" * 32, "com.example.app")
    big = PushMessage(target, _sized(Transport.APNS, MAX_PAYLOAD_BYTES + 1))
    ok = PushMessage(target, _payload())
    [refused, sent] = await sender.send([big, ok])
    assert (refused.kind, refused.reason, refused.status) == (OutcomeKind.CONFIG, "PayloadTooLarge", None)
    assert "'data'" in (refused.error or "")
    assert sent.kind is OutcomeKind.DELIVERED
    assert len(seen) == 1 and json.loads(seen[0].content)["bgtasks"] == ok.payload
    await sender.aclose()
    assert not client.is_closed  # handed in: not ours to close
    await client.aclose()


REPORT_FIELDS = ("reportToken", "state", "data", "error", "durationMs", "stopReason")


def _json_blocks(markdown: str) -> list[Any]:
    blocks = markdown.split("```json\n")[1:]
    return [json.loads(b.split("```", 1)[0]) for b in blocks]


@pytest.mark.parametrize("guide", ["android-workmanager.md", "ios-background.md"])
def test_device_guides_match_the_schema(guide: str) -> None:
    """The guides' example payload validates against the schema; their code reads every key and reports
    every field of the report body."""
    text = (SCHEMA_PATH.parent / guide).read_text()
    payload_example, report_example = _json_blocks(text)[:2]
    if "aps" in payload_example:  # APNs: the payload is the "bgtasks" dictionary
        assert payload_example["aps"] == {"content-available": 1}
        payload_example = payload_example["bgtasks"]
    validator = jsonschema.Draft202012Validator(_schema(), format_checker=jsonschema.FormatChecker())
    validator.validate(payload_example)
    assert set(payload_example) == set(PAYLOAD_KEYS)
    assert tuple(report_example) == REPORT_FIELDS
    code = "\n".join(part.split("```", 1)[0] for part in text.split("```kotlin\n")[1:] + text.split("```swift\n")[1:])
    for key in PAYLOAD_KEYS:
        assert f'"{key}"' in code or f"{key}:" in code or f".{key}" in code, f"{guide}: code never reads {key}"
    for field in REPORT_FIELDS:
        assert f'"{field}"' in code, f"{guide}: the report never sends {field}"
    for key in CONSTRAINT_KEYS:
        assert f'"{key}"' in code, f"{guide}: constraint {key} is not mapped"
