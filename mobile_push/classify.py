"""One classifier for both transports: what an answer means and what the caller should do.

Pure: functions of status codes, reasons, headers and exceptions (no I/O).

Every answer becomes a :class:`Verdict` of one :class:`~mobile_push.types.OutcomeKind`::

    DELIVERED       200 from FCM or APNs
    INVALID_TOKEN   the device's token is dead: mark the device invalid, never retry
                    FCM 404 UNREGISTERED; FCM 400 INVALID_ARGUMENT about the token
                    APNs 410 Unregistered/ExpiredToken; 400 BadDeviceToken,
                    DeviceTokenNotForTopic, MissingDeviceToken
    TRANSIENT       retry with capped backoff, honouring Retry-After
                    429, 500, 502, 503, 504, any transport error (connect, TLS,
                    timeout, GOAWAY); APNs 429 TooManyRequests, 500
                    InternalServerError, 503 ServiceUnavailable/Shutdown
    CONFIG          fail the run loudly; the sentence says how to fix it
                    FCM 401 THIRD_PARTY_AUTH_ERROR/UNAUTHENTICATED, 403
                    SENDER_ID_MISMATCH/PERMISSION_DENIED, 413, INVALID_ARGUMENT
                    about the payload; APNs 403 InvalidProviderToken,
                    MissingProviderToken, BadCertificate..., 400 MissingTopic,
                    TopicDisallowed, BadTopic, other 400s (a bug of ours), 413

FCM answers 400 INVALID_ARGUMENT both for a bad registration token and for a
bad message. It is a dead token only when FCM says so: a ``google.rpc.BadRequest``
field violation on ``message.token``/``message.fid`` only, or a message about the
registration token. Anything else, a bare "Request contains an invalid argument."
included, is our message (CONFIG: a good device is never dropped for a bug of
ours). For iOS devices reached through FCM, an ``INVALID_ARGUMENT`` carrying a
``google.firebase.fcm.v1.ApnsError`` detail is APNs' own answer relayed: it is
classified by its APNs reason (``BadDeviceToken``, ``DeviceTokenNotForTopic``,
payload reasons) as :func:`classify_apns` would.

A configuration error that belongs to one device (its token is from another
Firebase project, its topic is not the app's) is marked ``scope=device`` in the
verdict's ``extra``: that device's delivery fails, the run goes on for the others.

Error sentences never carry credentials: texts that come from elsewhere go
through :func:`scrub` (PEM blocks, bearer tokens, JWTs, OAuth access tokens).
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mobile_push.types import OutcomeKind, PushMessage, SendResult

__all__ = [
    "Verdict", "parse_retry_after", "scrub", "classify_fcm", "classify_fcm_answer", "classify_apns",
    "classify_fcm_exception",
    "classify_transport_error", "fcm_error_details", "FcmErrorDetails", "to_result",
]

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
APNS_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.ApnsError"
#: The least wait after FCM's quota error (doubled per attempt), when it sends no Retry-After.
QUOTA_MIN_BACKOFF_S = 60.0
#: The least wait after APNs' TooManyProviderTokenUpdates: the connection refuses the new
#: token for a while; sending again at once only repeats the refusal.
TOKEN_UPDATES_MIN_BACKOFF_S = 60.0
#: ``Verdict.extra`` of a configuration error that concerns one device only.
DEVICE_SCOPE = {"scope": "device"}

_CREDS_FCM = "BGTASKS_PUSH_FCM_CREDENTIALS_FILE"
_APNS_KEY = "BGTASKS_PUSH_APNS_KEY_FILE, BGTASKS_PUSH_APNS_KEY_ID and BGTASKS_PUSH_APNS_TEAM_ID"


@dataclass(frozen=True)
class Verdict:
    """What one answer means: the kind, a machine reason and a sentence for people."""

    kind: OutcomeKind
    reason: str | None = None
    error: str | None = None
    retry_after_s: float | None = None
    status: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    min_backoff_s: float | None = None  # the service's floor for the backoff (see SendResult)


def to_result(message: PushMessage, verdict: Verdict, *, message_id: str | None = None,
              extra: Mapping[str, str] | None = None) -> SendResult:
    """The ``SendResult`` of ``message`` for ``verdict``."""
    return SendResult(message=message, kind=verdict.kind, message_id=message_id, status=verdict.status,
                      reason=verdict.reason, error=verdict.error, retry_after_s=verdict.retry_after_s,
                      extra={**verdict.extra, **(extra or {})}, min_backoff_s=verdict.min_backoff_s)


# ------------------------------------------------------------------------ helpers

_SCRUBBERS = (
    (re.compile(r"-----BEGIN [A-Z ]+-----.*?(-----END [A-Z ]+-----|$)", re.S), "[redacted key]"),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "bearer [redacted]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted jwt]"),
    (re.compile(r"\bya29\.[A-Za-z0-9._-]+"), "[redacted access token]"),
    (re.compile(r'(?i)("?private_key"?\s*[:=]\s*)"[^"]*"?'), r'\1"[redacted]"'),
)


def scrub(text: str, limit: int = 500) -> str:
    """``text`` without anything that looks like a credential, cut to ``limit`` characters."""
    for pattern, repl in _SCRUBBERS:
        text = pattern.sub(repl, text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_retry_after(value: str | float | int | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP date (RFC 9110 10.2.3).

    Returns ``None`` when absent or unparseable (an unparseable header is ignored
    rather than trusted), ``0.0`` for a date in the past.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return max(0.0, float(value)) if value == value else None
    text = str(value).strip()
    if not text:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parsed = email.utils.parsedate_tz(text)
    if parsed is None:
        return None
    return max(0.0, float(email.utils.mktime_tz(parsed)) - now())


def _retry_hint(retry_after_s: float | None) -> str:
    return f" (Retry-After: {retry_after_s:g} s)" if retry_after_s is not None else ""


# ---------------------------------------------------------------------------- FCM


@dataclass(frozen=True)
class FcmErrorDetails:
    """The parts of Google's error body the classifier reads."""

    google_status: str | None = None
    error_code: str | None = None
    message: str | None = None
    field_violations: tuple[str, ...] = ()
    apns_status: int | None = None  # an ApnsError detail: APNs' answer, relayed for an iOS device
    apns_reason: str | None = None


def fcm_error_details(body: Any) -> FcmErrorDetails:
    """Read ``{"error": {"status", "message", "details": [FcmError, BadRequest...]}}`` (bytes, str or dict)."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return FcmErrorDetails(message=body[:200] or None)
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return FcmErrorDetails()
    code: str | None = None
    fields: list[str] = []
    apns_status: int | None = None
    apns_reason: str | None = None
    for d in err.get("details") or ():
        if not isinstance(d, dict):
            continue
        if d.get("@type") == FCM_ERROR_TYPE and isinstance(d.get("errorCode"), str):
            code = code or d["errorCode"]
        if d.get("@type") == APNS_ERROR_TYPE:
            apns_status = d["statusCode"] if isinstance(d.get("statusCode"), int) else None
            apns_reason = d["reason"] if isinstance(d.get("reason"), str) else None
        if d.get("@type") == BAD_REQUEST_TYPE:
            for v in d.get("fieldViolations") or ():
                if isinstance(v, dict) and isinstance(v.get("field"), str):
                    fields.append(v["field"])
    status = err.get("status") if isinstance(err.get("status"), str) else None
    message = err.get("message") if isinstance(err.get("message"), str) else None
    return FcmErrorDetails(status, code, message, tuple(fields), apns_status, apns_reason)


_TARGET_FIELDS = ("message.token", "message.fid")
_TOKEN_WORDS = re.compile(r"(?i)registration token|invalid token|not a valid fcm")


def _fcm_invalid_argument_is_token(message: str | None, field_violations: Sequence[str]) -> bool:
    """See the module docstring: does this INVALID_ARGUMENT say the token is invalid?"""
    if field_violations:
        return all(f.split("[", 1)[0] in _TARGET_FIELDS for f in field_violations)
    return bool(_TOKEN_WORDS.search(message or ""))


def classify_fcm(
    status: int | None,
    error_code: str | None = None,
    retry_after: str | float | None = None,
    *,
    message: str | None = None,
    field_violations: Sequence[str] = (),
    google_status: str | None = None,
    apns_status: int | None = None,
    apns_reason: str | None = None,
) -> Verdict:
    """Classify one FCM v1 answer.

    Args:
        status: the HTTP status; ``None`` for a transport error (no answer).
        error_code: ``FcmError.errorCode`` from the body's details (``UNREGISTERED``...).
        retry_after: the ``Retry-After`` header, if any.
        message: Google's ``error.message`` (used to tell token from payload errors).
        field_violations: ``google.rpc.BadRequest`` field paths.
        google_status: Google's ``error.status`` (``NOT_FOUND``...).
        apns_status, apns_reason: an ``ApnsError`` detail (APNs' answer for an iOS device).
    """
    wait = parse_retry_after(retry_after)
    code = (error_code or "").upper() or None
    said = f": {scrub(message, 200)}" if message else ""

    def v(kind: OutcomeKind, reason: str | None, error: str | None) -> Verdict:
        return Verdict(kind, reason, error, wait if kind is OutcomeKind.TRANSIENT else None, status)

    if status is None:
        return v(OutcomeKind.TRANSIENT, code or "TransportError", f"FCM could not be reached{said}")
    if 200 <= status < 300:
        return Verdict(OutcomeKind.DELIVERED, status=status)
    reason = code or google_status or f"HTTP {status}"
    if code == "UNREGISTERED" or (status == 410):
        return v(OutcomeKind.INVALID_TOKEN, reason,
                 "FCM: the registration token is no longer valid (app uninstalled, data cleared or token "
                 "rotated): the device is marked invalid until it registers again")
    if code in ("THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR"):
        return v(OutcomeKind.CONFIG, reason,
                 "FCM could not authenticate to APNs for this iOS app: upload a valid APNs auth key (.p8) "
                 "in the Firebase console (Project settings > Cloud Messaging > Apple app configuration)")
    if code == "SENDER_ID_MISMATCH":
        return replace(v(OutcomeKind.CONFIG, reason,
                         "FCM: this device's token was issued for another Firebase project (sender id) than the "
                         f"service account in {_CREDS_FCM}: use that project's service-account key, or have the "
                         "app register again with this project's google-services.json / GoogleService-Info.plist"),
                       extra=DEVICE_SCOPE)
    if apns_reason is not None and status == 400:
        relayed = classify_apns(apns_status or 400, apns_reason, retry_after)
        return replace(relayed, status=status, error=f"FCM relayed APNs' answer: {relayed.error}")
    if code == "QUOTA_EXCEEDED" or status == 429:
        # Firebase: back off exponentially from at least a minute after a quota error.
        return replace(v(OutcomeKind.TRANSIENT, reason, f"FCM sending quota exceeded{_retry_hint(wait)}"),
                       min_backoff_s=QUOTA_MIN_BACKOFF_S)
    if code in ("UNAVAILABLE", "INTERNAL") or status >= 500:
        return v(OutcomeKind.TRANSIENT, reason, f"FCM answered {status} {reason}{_retry_hint(wait)}")
    if code == "INVALID_ARGUMENT" or status == 400:
        if _fcm_invalid_argument_is_token(message, field_violations):
            return v(OutcomeKind.INVALID_TOKEN, reason,
                     f"FCM rejected the registration token as invalid{said}: the device is marked invalid")
        where = f" ({', '.join(field_violations)})" if field_violations else ""
        return v(OutcomeKind.CONFIG, reason,
                 f"FCM rejected the message itself{where}{said}: the task's push options or a bgtasks "
                 "payload bug (the device is not marked invalid)")
    if status == 401:
        return v(OutcomeKind.CONFIG, reason,
                 f"FCM refused the service account's credentials{said}: check that {_CREDS_FCM} is a current "
                 "key of a service account of this Firebase project (keys can be revoked in the Cloud console)")
    if status == 403:
        return v(OutcomeKind.CONFIG, reason,
                 f"FCM denied the request{said}: enable the 'Firebase Cloud Messaging API' in the Google Cloud "
                 "project and give the service account in "
                 f"{_CREDS_FCM} the 'Firebase Cloud Messaging API Admin' role")
    if status == 404:
        return v(OutcomeKind.CONFIG, reason,
                 f"FCM answered 404 without UNREGISTERED{said}: the send URL or project id is wrong "
                 "(check BGTASKS_PUSH_FCM_URL and the project_id of the service-account file)")
    if status == 413:
        return v(OutcomeKind.CONFIG, reason, "FCM: message too large (the 4096-byte check should have refused it)")
    return v(OutcomeKind.CONFIG, reason, f"FCM answered {status} {reason}{said}")


def classify_fcm_answer(status: int, body: Any, retry_after: str | float | None = None,
                        fallback_message: str | None = None) -> Verdict:
    """Classify one FCM v1 answer from its status and error body (:func:`fcm_error_details`)."""
    d = fcm_error_details(body)
    return classify_fcm(status, d.error_code, retry_after, message=d.message or fallback_message,
                        field_violations=d.field_violations, google_status=d.google_status,
                        apns_status=d.apns_status, apns_reason=d.apns_reason)


def _header(response: Any, name: str) -> str | None:
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get(name)
    except Exception:  # a foreign headers object
        return None
    return str(value) if value is not None else None


def _is_google_auth_error(exc: BaseException, name: str) -> bool:
    return any(c.__module__.startswith("google.auth") and c.__name__ == name for c in type(exc).__mro__)


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        nxt = getattr(cur, "cause", None)
        cur = nxt if isinstance(nxt, BaseException) else (cur.__cause__ or cur.__context__)


def classify_fcm_exception(exc: BaseException) -> Verdict:
    """Classify an exception of firebase-admin's messaging (``SendResponse.exception`` or raised).

    ``FirebaseError`` with an ``http_response``: the status, body and
    ``Retry-After`` of that response (:func:`classify_fcm`). Without one: a
    transport failure (``UnavailableError``/``DeadlineExceededError`` wrapping an
    httpx error: TRANSIENT) or a failure to get an access token (google-auth
    ``RefreshError``: CONFIG, the key was refused; google-auth ``TransportError``:
    TRANSIENT, the token endpoint was unreachable).
    """
    response = getattr(exc, "http_response", None)
    if response is not None and isinstance(getattr(response, "status_code", None), int):
        try:
            body: Any = response.content
        except Exception:
            body = b""
        return classify_fcm_answer(response.status_code, body, _header(response, "retry-after"), str(exc))
    for cause in _causes(exc):
        if _is_google_auth_error(cause, "RefreshError"):
            return Verdict(OutcomeKind.CONFIG, "RefreshError",
                           f"Google's token endpoint refused the service account ({scrub(str(cause), 200)}): "
                           f"{_CREDS_FCM} holds a revoked, deleted or malformed key; download a new key "
                           "from the Firebase console (Project settings > Service accounts)")
        if _is_google_auth_error(cause, "TransportError"):
            return Verdict(OutcomeKind.TRANSIENT, "TokenEndpointUnreachable",
                           f"Google's token endpoint could not be reached: {scrub(str(cause), 200)}")
    return classify_transport_error(exc, "FCM")


def classify_transport_error(exc: BaseException, service: str) -> Verdict:
    """A request that got no HTTP answer (connect, TLS, timeout, reset, GOAWAY): TRANSIENT."""
    inner = exc
    for cause in _causes(exc):
        inner = cause
        if type(cause).__module__.startswith(("httpx", "httpcore", "h2", "ssl", "socket")) or isinstance(
                cause, OSError):
            break
    detail = scrub(str(inner), 200) or type(inner).__name__
    return Verdict(OutcomeKind.TRANSIENT, type(inner).__name__, f"{service} could not be reached: {detail}")


# ---------------------------------------------------------------------------- APNs

_APNS_INVALID_TOKEN = {
    "Unregistered": "APNs: the device token is no longer active for the topic (app uninstalled or "
                    "notifications reset): the device is marked invalid until it registers again",
    "ExpiredToken": "APNs: the device token has expired: the device is marked invalid",
    "BadDeviceToken": "APNs: bad device token (refused by production and sandbox alike, or not a token; a "
                      "development build registers for sandbox: see the device's environment and "
                      "BGTASKS_PUSH_APNS_ENVIRONMENT): the device is marked invalid",
    "DeviceTokenNotForTopic": "APNs: the device token does not belong to this topic (bundle id): the device is "
                              "marked invalid",
    "MissingDeviceToken": "APNs: the device has no token: it is marked invalid",
}
_APNS_TRANSIENT = {
    "TooManyRequests": "APNs: too many requests to this device token",
    "InternalServerError": "APNs internal server error",
    "ServiceUnavailable": "APNs service unavailable",
    "Shutdown": "APNs server shutting down",
    "IdleTimeout": "APNs closed an idle connection",
    "TooManyProviderTokenUpdates": "APNs: the provider token was changed too often on this connection "
                                   "(no more than once every 20 minutes)",
}
_TOPIC_FIX = ("the device's topic must be the app's bundle id (as registered), and the APNs key must belong to "
              "the team that owns that app")
_APNS_CONFIG = {
    "InvalidProviderToken": f"APNs rejected the provider token: check that {_APNS_KEY} match (the key id "
                            "of the .p8 file, the team that created it) and the key has APNs enabled",
    "MissingProviderToken": "APNs: no provider token was sent (certificate auth is not supported): set "
                            f"{_APNS_KEY}",
    "ExpiredProviderToken": "APNs says the provider token is older than an hour although bgtasks signed a new "
                            "one: the host's clock is wrong, synchronise it (NTP)",
    "BadCertificate": f"APNs: bad certificate; bgtasks uses token auth: set {_APNS_KEY}",
    "BadCertificateEnvironment": "APNs: the credentials are for the other environment: check "
                                 "BGTASKS_PUSH_APNS_ENVIRONMENT (production / sandbox)",
    "Forbidden": f"APNs: forbidden (the key is revoked or lacks APNs): create a new key and set {_APNS_KEY}",
    "UnrelatedKeyIdInToken": "APNs: the key id does not belong to this team: check BGTASKS_PUSH_APNS_KEY_ID and "
                             "BGTASKS_PUSH_APNS_TEAM_ID",
    "BadEnvironmentKeyIdInToken": "APNs: the key is not enabled for this environment: check "
                                  "BGTASKS_PUSH_APNS_ENVIRONMENT or the key's configuration",
    "MissingTopic": f"APNs: no apns-topic: {_TOPIC_FIX}",
    "TopicDisallowed": f"APNs: pushing to this topic is not allowed: {_TOPIC_FIX}",
    "BadTopic": f"APNs: invalid apns-topic: {_TOPIC_FIX}",
    "PayloadTooLarge": "APNs: payload too large (the 4096-byte check should have refused it)",
    "PayloadEmpty": "APNs: empty payload (a bgtasks bug, please report it)",
}


#: Configuration errors of one device's registration (its topic), not of the credentials.
_APNS_DEVICE_CONFIG = frozenset({"MissingTopic", "TopicDisallowed", "BadTopic"})


def classify_apns(status: int | None, reason: str | None = None, retry_after: str | float | None = None) -> Verdict:
    """Classify one APNs answer (``status`` ``None`` for a transport error) by Apple's ``reason``.

    Unknown reasons fall back on the status: 5xx and 429 TRANSIENT, 410
    INVALID_TOKEN, anything else CONFIG (a request we built wrong).
    """
    wait = parse_retry_after(retry_after)

    def v(kind: OutcomeKind, error: str) -> Verdict:
        return Verdict(kind, reason or (f"HTTP {status}" if status else "TransportError"), error,
                       wait if kind is OutcomeKind.TRANSIENT else None, status)

    if status is None:
        return v(OutcomeKind.TRANSIENT, "APNs could not be reached")
    if status == 200:
        return Verdict(OutcomeKind.DELIVERED, status=200)
    if reason in _APNS_INVALID_TOKEN:
        return v(OutcomeKind.INVALID_TOKEN, _APNS_INVALID_TOKEN[reason])
    if reason in _APNS_TRANSIENT:
        verdict = v(OutcomeKind.TRANSIENT, _APNS_TRANSIENT[reason] + _retry_hint(wait))
        if reason == "TooManyProviderTokenUpdates":
            return replace(verdict, min_backoff_s=TOKEN_UPDATES_MIN_BACKOFF_S)
        return verdict
    if reason in _APNS_CONFIG:
        verdict = v(OutcomeKind.CONFIG, _APNS_CONFIG[reason])
        return replace(verdict, extra=DEVICE_SCOPE) if reason in _APNS_DEVICE_CONFIG else verdict
    if status == 410:
        return v(OutcomeKind.INVALID_TOKEN, f"APNs answered 410 {reason}: the device is marked invalid")
    if status == 429 or status >= 500:
        return v(OutcomeKind.TRANSIENT, f"APNs answered {status} {reason or ''}".rstrip() + _retry_hint(wait))
    return v(OutcomeKind.CONFIG, f"APNs refused the request: {status} {reason or ''} (a request bgtasks built "
                                 "wrong or a setting: please report it)".replace("  ", " "))
