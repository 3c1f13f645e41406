"""The one classifier of FCM and APNs answers (pure), on the services' real error bodies.

FCM bodies are Google's ``google.rpc.Status`` JSON as the v1 API sends them
(with the ``FcmError`` detail, and ``BadRequest`` field violations for bad
fields); exceptions are built by firebase-admin's own error mapping from httpx
and requests errors, as ``send_each_async`` / ``send`` would raise them.
"""

from __future__ import annotations

import email.utils
import json
from typing import Any

from google.auth import exceptions as google_auth_exceptions
import httpx
import pytest
import requests
from firebase_admin import _utils, exceptions, messaging

from mobile_push.classify import (
    Verdict, classify_apns, classify_fcm, classify_fcm_answer, classify_fcm_exception, classify_transport_error,
    parse_retry_after, scrub, to_result,
)
from mobile_push.types import OutcomeKind, Platform, PushMessage, PushTarget, Transport

D, INV, TR, CF = OutcomeKind.DELIVERED, OutcomeKind.INVALID_TOKEN, OutcomeKind.TRANSIENT, OutcomeKind.CONFIG
FCM_ERR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQ = "type.googleapis.com/google.rpc.BadRequest"
SEND_URL = "https://fcm.googleapis.com/v1/projects/bgtasks-test/messages:send"


def gerr(code: int, status: str, message: str, fcm: str | None = None,
           fields: list[str] | None = None) -> dict[str, Any]:
    details: list[dict[str, Any]] = []
    if fcm:
        details.append({"@type": FCM_ERR, "errorCode": fcm})
    if fields:
        details.append({"@type": BAD_REQ, "fieldViolations": [{"field": f, "description": message} for f in fields]})
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


def apns_err(reason: str, apns_status: int = 400) -> dict[str, Any]:
    """FCM's answer for an iOS device whose APNs push was refused: INVALID_ARGUMENT with the
    FcmError and ApnsError details."""
    body = gerr(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", "INVALID_ARGUMENT")
    body["error"]["details"].append({"@type": "type.googleapis.com/google.firebase.fcm.v1.ApnsError",
                                     "statusCode": apns_status, "reason": reason})
    return body


FCM_BODIES: list[tuple[str, int, dict[str, Any], OutcomeKind, str | None]] = [
    ("unregistered", 404, gerr(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"),
     INV, "UNREGISTERED"),
    ("bad token", 400, gerr(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token",
                              "INVALID_ARGUMENT"), INV, "INVALID_ARGUMENT"),
    # Not said to be the token: the message (a good device is never dropped for it).
    ("bare invalid argument", 400, gerr(400, "INVALID_ARGUMENT", "Request contains an invalid argument.",
                                          "INVALID_ARGUMENT"), CF, "INVALID_ARGUMENT"),
    # iOS through FCM: APNs' answer relayed in an ApnsError detail decides.
    ("apns bad device token via fcm", 400, apns_err("BadDeviceToken"), INV, "BadDeviceToken"),
    ("apns token not for topic via fcm", 400, apns_err("DeviceTokenNotForTopic"), INV, "DeviceTokenNotForTopic"),
    ("apns bad collapse id via fcm", 400, apns_err("BadCollapseId"), CF, "BadCollapseId"),
    ("apns payload too large via fcm", 400, apns_err("PayloadTooLarge", 413), CF, "PayloadTooLarge"),
    ("token field violation", 400, gerr(400, "INVALID_ARGUMENT", "Invalid registration token", "INVALID_ARGUMENT",
                                          ["message.token"]), INV, "INVALID_ARGUMENT"),
    ("data value not a string", 400, gerr(400, "INVALID_ARGUMENT",
                                            "Invalid value at 'message.data[0].value' (TYPE_STRING), 1",
                                            None, ["message.data[0].value"]), CF, "INVALID_ARGUMENT"),
    ("reserved data key", 400, gerr(400, "INVALID_ARGUMENT", "Invalid data message key: from", "INVALID_ARGUMENT",
                                      ["message.data[0].key"]), CF, "INVALID_ARGUMENT"),
    ("too big", 400, gerr(400, "INVALID_ARGUMENT", "Message is too big: 5000 bytes, the limit is 4096 bytes.",
                            "INVALID_ARGUMENT"), CF, "INVALID_ARGUMENT"),
    ("bad ttl", 400, gerr(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.ttl' "
                            "(type.googleapis.com/google.protobuf.Duration), \"1h\"", None), CF, "INVALID_ARGUMENT"),
    ("quota", 429, gerr(429, "RESOURCE_EXHAUSTED", "Quota exceeded for sending messages.", "QUOTA_EXCEEDED"),
     TR, "QUOTA_EXCEEDED"),
    ("unavailable", 503, gerr(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"),
     TR, "UNAVAILABLE"),
    ("internal", 500, gerr(500, "INTERNAL", "Internal error encountered.", "INTERNAL"), TR, "INTERNAL"),
    ("bad gateway, no body", 502, {}, TR, "HTTP 502"),
    ("sender id mismatch", 403, gerr(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"),
     CF, "SENDER_ID_MISMATCH"),
    ("apns auth", 401, gerr(401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service",
                              "THIRD_PARTY_AUTH_ERROR"), CF, "THIRD_PARTY_AUTH_ERROR"),
    ("bad access token", 401, gerr(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. "
                                     "Expected OAuth 2 access token, login cookie or other valid authentication "
                                     "credential."), CF, "UNAUTHENTICATED"),
    ("no permission", 403, gerr(403, "PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' denied on "
                                  "resource '//cloudresourcemanager.googleapis.com/projects/other' (or it may not "
                                  "exist)."), CF, "PERMISSION_DENIED"),
    ("wrong url", 404, gerr(404, "NOT_FOUND", "Method not found."), CF, "NOT_FOUND"),
]


@pytest.mark.parametrize(("name", "status", "body", "kind", "reason"), FCM_BODIES, ids=[b[0] for b in FCM_BODIES])
def test_fcm_bodies(name: str, status: int, body: dict[str, Any], kind: OutcomeKind, reason: str | None) -> None:
    v = classify_fcm_answer(status, json.dumps(body).encode())
    assert (v.kind, v.reason, v.status) == (kind, reason, status)
    assert v.error and v.error[0].isupper()


@pytest.mark.parametrize(("name", "status", "body", "kind", "reason"), FCM_BODIES, ids=[b[0] for b in FCM_BODIES])
def test_fcm_exceptions_as_the_sdk_builds_them(name: str, status: int, body: dict[str, Any], kind: OutcomeKind,
                                               reason: str | None) -> None:
    response = httpx.Response(status, json=body, headers={"Retry-After": "30"},
                              request=httpx.Request("POST", SEND_URL))
    with pytest.raises(httpx.HTTPStatusError) as raised:
        response.raise_for_status()
    exc = _utils.handle_platform_error_from_httpx(raised.value, messaging._MessagingService._build_fcm_error_httpx)
    assert isinstance(exc, exceptions.FirebaseError)
    v = classify_fcm_exception(exc)
    assert (v.kind, v.reason, v.status) == (kind, reason, status)
    assert v.retry_after_s == (30.0 if kind is TR else None)


def test_fcm_unregistered_from_the_requests_path() -> None:
    r = requests.Response()
    r.status_code = 404
    r._content = json.dumps(FCM_BODIES[0][2]).encode()
    exc = _utils.handle_platform_error_from_requests(requests.exceptions.HTTPError(response=r),
                                                     messaging._MessagingService._build_fcm_error_requests)
    assert isinstance(exc, messaging.UnregisteredError)
    assert classify_fcm_exception(exc).kind is INV


def test_fcm_config_errors_say_how_to_fix() -> None:
    mismatch = classify_fcm(403, "SENDER_ID_MISMATCH")
    assert "BGTASKS_PUSH_FCM_CREDENTIALS_FILE" in (mismatch.error or "")
    assert "APNs auth key" in (classify_fcm(401, "THIRD_PARTY_AUTH_ERROR").error or "")
    assert "Firebase Cloud Messaging API" in (classify_fcm(403, None, message="denied").error or "")
    assert "payload bug" in (classify_fcm(400, "INVALID_ARGUMENT", field_violations=["message.data"]).error or "")


def test_a_configuration_error_of_one_device_is_scoped_to_it() -> None:
    """Its token from another Firebase project, its topic not the app's: that device's push
    fails, not the run (mobile_push.dispatch); credentials errors stay the run's."""
    assert classify_fcm(403, "SENDER_ID_MISMATCH").extra == {"scope": "device"}
    for reason in ("MissingTopic", "TopicDisallowed", "BadTopic"):
        assert classify_apns(400, reason).extra == {"scope": "device"}
    assert classify_apns(403, "InvalidProviderToken").extra == {}
    assert classify_fcm(401, "THIRD_PARTY_AUTH_ERROR").extra == {}
    assert classify_fcm(400, "INVALID_ARGUMENT", message="Request contains an invalid argument.").extra == {}


@pytest.mark.parametrize(("exc", "kind", "reason"), [
    (httpx.ConnectError("[Errno 111] Connection refused"), TR, "ConnectError"),
    (httpx.ReadTimeout("timed out"), TR, "ReadTimeout"),
    (httpx.RemoteProtocolError("GOAWAY received"), TR, "RemoteProtocolError"),
])
def test_fcm_transport_errors_are_transient(exc: httpx.HTTPError, kind: OutcomeKind, reason: str) -> None:
    sdk_exc = _utils.handle_platform_error_from_httpx(exc, messaging._MessagingService._build_fcm_error_httpx)
    v = classify_fcm_exception(sdk_exc)
    assert (v.kind, v.reason, v.status) == (kind, reason, None)
    assert v.error and v.error.startswith("FCM could not be reached")


def test_fcm_token_endpoint_failures() -> None:
    refused = google_auth_exceptions.RefreshError(
        "invalid_grant: Invalid JWT Signature.",
        {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    v = classify_fcm_exception(exceptions.UnknownError("Unknown error while making remote service calls", refused))
    assert (v.kind, v.reason) == (CF, "RefreshError")
    assert "BGTASKS_PUSH_FCM_CREDENTIALS_FILE" in (v.error or "") and "invalid_grant" in (v.error or "")
    down = google_auth_exceptions.TransportError("Connection refused")
    assert classify_fcm_exception(exceptions.UnknownError("x", down)).kind is TR


APNS_TABLE: list[tuple[int, str | None, OutcomeKind]] = [
    (200, None, D),
    (410, "Unregistered", INV), (410, "ExpiredToken", INV), (400, "BadDeviceToken", INV),
    (400, "DeviceTokenNotForTopic", INV), (400, "MissingDeviceToken", INV),
    (429, "TooManyRequests", TR), (500, "InternalServerError", TR), (503, "ServiceUnavailable", TR),
    (503, "Shutdown", TR), (429, "TooManyProviderTokenUpdates", TR), (502, None, TR),
    (403, "InvalidProviderToken", CF), (403, "MissingProviderToken", CF), (403, "ExpiredProviderToken", CF),
    (403, "BadCertificate", CF), (403, "BadCertificateEnvironment", CF), (403, "Forbidden", CF),
    (403, "UnrelatedKeyIdInToken", CF), (403, "BadEnvironmentKeyIdInToken", CF),
    (400, "MissingTopic", CF), (400, "TopicDisallowed", CF), (400, "BadTopic", CF),
    (400, "BadCollapseId", CF), (400, "BadExpirationDate", CF), (400, "BadMessageId", CF), (400, "BadPriority", CF),
    (400, "InvalidPushType", CF), (400, "DuplicateHeaders", CF), (400, "PayloadEmpty", CF),
    (404, "BadPath", CF), (405, "MethodNotAllowed", CF), (413, "PayloadTooLarge", CF), (400, "BadRequest", CF),
]


@pytest.mark.parametrize(("status", "reason", "kind"), APNS_TABLE)
def test_apns_reasons(status: int, reason: str | None, kind: OutcomeKind) -> None:
    v = classify_apns(status, reason, "12")
    assert (v.kind, v.status) == (kind, status)
    assert v.retry_after_s == (12.0 if kind is TR else None)
    if kind is not D:
        assert v.reason == (reason or f"HTTP {status}") and v.error


def test_apns_config_errors_say_how_to_fix() -> None:
    assert "BGTASKS_PUSH_APNS_KEY_ID" in (classify_apns(403, "InvalidProviderToken").error or "")
    assert "bundle id" in (classify_apns(400, "MissingTopic").error or "")
    assert "bundle id" in (classify_apns(400, "TopicDisallowed").error or "")
    assert "clock" in (classify_apns(403, "ExpiredProviderToken").error or "")
    assert "BGTASKS_PUSH_APNS_ENVIRONMENT" in (classify_apns(400, "BadDeviceToken").error or "")
    assert classify_transport_error(httpx.ConnectError("refused"), "APNs").kind is TR
    assert classify_apns(None).kind is TR


def test_retry_after_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after(date, now=lambda: now) == 90.0
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now=lambda: now) == 0.0
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after(2.5) == 2.5
    assert parse_retry_after("-3") is None and parse_retry_after("soon") is None
    assert parse_retry_after("") is None and parse_retry_after(None) is None
    assert classify_fcm(429, "QUOTA_EXCEEDED", date).retry_after_s is not None


def test_scrub_removes_credentials() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----\n"
    text = (f"boom {pem} Authorization: Bearer ya29.a0AfH6SMB token eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJUIn0.sig "
            '{"private_key": "-----BEGIN RSA"}')
    out = scrub(text)
    for secret in ("MIGHAgEA", "ya29.a0AfH6SMB", "eyJhbGciOiJFUzI1NiJ9", "BEGIN RSA"):
        assert secret not in out
    assert scrub("x" * 1000, limit=20).endswith("…") and len(scrub("x" * 1000, limit=20)) == 20


def test_to_result_carries_the_verdict() -> None:
    msg = PushMessage(PushTarget("d", Platform.ANDROID, Transport.FCM, "tok"), {"bgtasks": "1"})
    r = to_result(msg, Verdict(TR, "QUOTA_EXCEEDED", "quota", 30.0, 429, {"a": "1"}), extra={"b": "2"})
    assert (r.kind, r.reason, r.error, r.retry_after_s, r.status, r.extra) == (
        TR, "QUOTA_EXCEEDED", "quota", 30.0, 429, {"a": "1", "b": "2"})
