"""The emulator of the FCM HTTP v1 API and Google's OAuth2 token endpoint.

Imitates ``https://fcm.googleapis.com/v1/projects/{project}/messages:send`` and
``https://oauth2.googleapis.com/token`` on 127.0.0.1, in its own event-loop thread: with
``tls=True`` (or ``tls_files``) over TLS with ALPN, HTTP/2 for the clients that offer it and
HTTP/1.1 for the others (google-auth's token request), as Google's front ends do; plain
HTTP/1.1 with ``tls=False``.

Real behaviours covered:

* ``POST /token``: the OAuth2 JWT-bearer grant that google-auth's
  ``service_account.Credentials`` sends (form ``grant_type=urn:ietf:params:
  oauth:grant-type:jwt-bearer&assertion=<RS256 JWT>``). The assertion must be
  signed by the generated service-account key (header ``kid`` = its
  ``private_key_id``), ``iss`` = the client email, ``aud`` = Google's token URI
  (google-auth always puts ``https://oauth2.googleapis.com/token`` there, not
  the file's ``token_uri``; the emulator's own URI is accepted too), ``iat``/``exp``
  at most one hour apart and current. Answers ``{"access_token", "expires_in":
  3600, "token_type": "Bearer"}`` or Google's ``{"error": "invalid_grant",
  "error_description": ...}`` (400) / ``unsupported_grant_type``.
* ``POST /v1/projects/{project}/messages:send`` requires ``Authorization:
  Bearer <issued, unexpired token>``: otherwise 401 UNAUTHENTICATED in
  Google's format (the SDK refreshes its token and retries on 401). Another
  project: 403 PERMISSION_DENIED. Body validation as the service does it:
  only ``message`` and ``validate_only`` at top level; ``message`` with exactly
  one of ``token``/``fid``/``topic``/``condition`` (firebase-admin 7.7 puts
  ``fid`` on the wire for ``Message(fid=...)`` and ``token`` for the deprecated
  ``Message(token=...)``); ``data`` a map of string to string, no reserved keys
  (``from``, ``message_type``, ``google.*``, ``gcm.*``...); ``android.priority``
  normal/high and ``android.ttl`` like ``"3.5s"``; payload (the message minus
  its target) at most 4096 bytes, 2048 for topic/condition messages. Success:
  ``{"name": "projects/{project}/messages/0:<ms>%<hex>"}``; with
  ``validate_only``: ``.../messages/fake_message_id``.
* The ``apns`` block of a message for an iOS device: headers a map of strings
  (else 400 INVALID_ARGUMENT with a field violation); what APNs would refuse
  (``apns-push-type`` missing or not Apple's, ``apns-priority`` not 1/5/10 or
  10 with a background push, ``apns-collapse-id`` over 64 bytes, a non-numeric
  ``apns-expiration``) is answered as FCM relays APNs' answer: 400
  INVALID_ARGUMENT with an ``ApnsError`` detail (``statusCode``, ``reason``).
* Errors are Google's JSON ``{"error": {"code", "message", "status",
  "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
  "errorCode": ...}]}}`` with ``Content-Type: application/json; charset=UTF-8``.

Scriptable per target (token, fid, topic or condition string): a queue of
answers before success (``script``), unregistered targets (404 UNREGISTERED),
invalid targets (400 INVALID_ARGUMENT), ``HANG``; the token endpoint can be
scripted too (``script_token_endpoint``) and issued access tokens revoked.

Not covered: the batch endpoint (removed by Google), topic management / IID,
Android/Webpush sub-message validation beyond the fields listed.

Pointing firebase-admin 7.7 at the emulator (both the sync ``send``/``send_each``
path and ``send_each_async`` read this one attribute at call time)::

    app = firebase_admin.initialize_app(credentials.Certificate(fcm.write_service_account_file()), name=...)
    messaging._get_messaging_service(app)._fcm_url = fcm.send_url
    # or: app = fcm.initialize_app(name=...)  which does both
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h11
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ._server import HANG, H2BodySender, LoopThreadServer, Recorder, TrackedProtocol
from .tls import TlsFiles, make_tls_files

if TYPE_CHECKING:
    import firebase_admin

__all__ = ["HANG", "FCMEmulator", "FCMRequest", "FCMResponse", "TokenRequest", "FCM_ERRORS", "google_error"]

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
_GOOGLE_TOKEN_AUDIENCES = {GOOGLE_TOKEN_URI, "https://www.googleapis.com/oauth2/v4/token",
                           "https://accounts.google.com/o/oauth2/token"}
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
MAX_MESSAGE_BYTES = 4096
MAX_TOPIC_MESSAGE_BYTES = 2048

#: FCM error code -> (HTTP status, Google status, the service's message).
FCM_ERRORS: dict[str, tuple[int, str, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT",
                         "The registration token is not a valid FCM registration token"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for sending messages."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
    "APNS_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
}
_STATUS_BY_HTTP = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                   409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
                   504: "DEADLINE_EXCEEDED"}
_MESSAGE_FIELDS = {"name", "data", "notification", "android", "webpush", "apns", "fcm_options", "fcmOptions",
                   "token", "fid", "topic", "condition"}
_TARGETS = ("token", "fid", "topic", "condition")
_RESERVED_DATA_KEYS = {"from", "message_type", "notification", "collapse_key", "priority", "time_to_live",
                       "delay_while_idle", "restricted_package_name", "dry_run", "registration_ids", "to"}
_TOPIC = re.compile(r"^[a-zA-Z0-9\-_.~%]{1,900}$")
_ANALYTICS_LABEL = re.compile(r"^[a-zA-Z0-9\-_.~%]{1,50}$")
_DURATION = re.compile(r"^\d+(\.\d{1,9})?s$")
_AUTH_HELP = ("Expected OAuth 2 access token, login cookie or other valid authentication credential. "
              "See https://developers.google.com/identity/sign-in/web/devconsole-project.")
_JSON_CT = "application/json; charset=UTF-8"


def google_error(code: int, message: str, status: str | None = None, fcm_error_code: str | None = None,
                 details: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Google's JSON error body, with an ``FcmError`` detail when ``fcm_error_code`` is given."""
    det: list[Mapping[str, Any]] = []
    if fcm_error_code:
        det.append({"@type": FCM_ERROR_TYPE, "errorCode": fcm_error_code})
    det.extend(details)
    err: dict[str, Any] = {"code": code, "message": message, "status": status or _STATUS_BY_HTTP.get(code, "UNKNOWN")}
    if det:
        err["details"] = det
    return {"error": err}


@dataclass(frozen=True)
class FCMResponse:
    """One answer of the emulator: HTTP status, JSON body and extra headers."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def error(cls, fcm_error_code: str, headers: Mapping[str, str] | None = None, *, status: int | None = None,
              message: str | None = None) -> FCMResponse:
        """An FCM error as the service sends it, e.g. ``FCMResponse.error("UNREGISTERED")``."""
        default_status, google_status, default_message = FCM_ERRORS.get(
            fcm_error_code, (status or 500, _STATUS_BY_HTTP.get(status or 500, "UNKNOWN"), fcm_error_code)
        )
        code = status or default_status
        if status and status != default_status:
            google_status = _STATUS_BY_HTTP.get(status, google_status)
        return cls(code, google_error(code, message or default_message, google_status, fcm_error_code),
                   dict(headers or {}))

    @classmethod
    def of(cls, spec: FCMResponse | tuple[Any, ...] | str) -> FCMResponse:
        """Accept ``FCMResponse``, an FCM error code, or ``(status, error_code[, headers])``."""
        if isinstance(spec, FCMResponse):
            return spec
        if isinstance(spec, str):
            return cls.error(spec)
        status, code, *rest = spec
        headers = dict(rest[0]) if rest else {}
        if int(status) == 200:
            return cls(200, {}, headers)
        return cls.error(code, headers, status=int(status))


@dataclass
class FCMRequest:
    """A ``messages:send`` request as the emulator saw it, with the answer it gave."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any
    project: str | None = None
    target_kind: str | None = None  # "token", "fid", "topic" or "condition"
    target: str | None = None
    validate_only: bool = False
    status: int = 0
    response: Mapping[str, Any] = field(default_factory=dict)
    time: float = 0.0

    @property
    def message(self) -> dict[str, Any]:
        msg = self.json.get("message") if isinstance(self.json, dict) else None
        return msg if isinstance(msg, dict) else {}

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def error_code(self) -> str | None:
        """The ``FcmError.errorCode`` of the answer, if any."""
        for d in self.response.get("error", {}).get("details", []):
            if d.get("@type") == FCM_ERROR_TYPE:
                code = d.get("errorCode")
                return code if isinstance(code, str) else None
        return None


@dataclass
class TokenRequest:
    """A ``/token`` request and the answer."""

    form: dict[str, str]
    claims: dict[str, Any] | None
    status: int
    response: Mapping[str, Any]
    time: float = 0.0


class _Invalid(Exception):
    def __init__(self, response: FCMResponse) -> None:
        self.response = response


APNS_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.ApnsError"
#: Apple's push types (what APNs accepts in apns-push-type).
_APNS_PUSH_TYPES = {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm",
                    "liveactivity", "pushtotalk", "widgets"}


def _apns_refused(reason: str, status: int = 400) -> _Invalid:
    """APNs refused what FCM relayed for an iOS device: FCM's 400 INVALID_ARGUMENT with an
    ``ApnsError`` detail carrying Apple's status and reason."""
    return _Invalid(FCMResponse(400, google_error(400, "Request contains an invalid argument.", "INVALID_ARGUMENT",
                                                  "INVALID_ARGUMENT", [{"@type": APNS_ERROR_TYPE,
                                                                        "statusCode": status, "reason": reason}])))


def _bad_request(message: str, field_path: str | None = None, fcm_code: str | None = "INVALID_ARGUMENT") -> _Invalid:
    details = [{"@type": BAD_REQUEST_TYPE, "fieldViolations": [{"field": field_path, "description": message}]}] \
        if field_path else []
    return _Invalid(FCMResponse(400, google_error(400, message, "INVALID_ARGUMENT", fcm_code, details)))


class FCMEmulator(LoopThreadServer):
    """The emulator of FCM HTTP v1 ``messages:send`` + OAuth2 ``/token``. See the module docstring.

    Args:
        project_id: the Firebase project the service account belongs to.
        clock: seconds since the epoch, for access-token expiry (an issued
            token lives 3600 s of this clock) and message ids; advance it to
            expire tokens without waiting. Assertions are checked against the
            real clock, as google-auth signs them with it.
        max_message_bytes / max_topic_message_bytes: payload limits.
    """

    def __init__(self, project_id: str = "bgtasks-test", *, clock: Callable[[], float] = time.time,
                 max_message_bytes: int = MAX_MESSAGE_BYTES,
                 max_topic_message_bytes: int = MAX_TOPIC_MESSAGE_BYTES, tls: bool = False,
                 private_key_pem: bytes | None = None, private_key_id: str | None = None,
                 tls_files: TlsFiles | None = None, port: int = 0) -> None:
        super().__init__(port)
        self.tls = tls or tls_files is not None
        self._own_tls = tls_files  # given: kept (bgtasks emulator's), else made per start and removed
        self.scheme = "https" if self.tls else "http"
        self.connections_made = 0  # every connection accepted (TLS handshakes, with tls=True)
        self.h2_connections = 0  # ... of which HTTP/2 (the sends of the h2 engine and the SDK's httpx)
        self.pings = 0  # HTTP/2 PINGs received (keep-alive)
        self._tls_files: TlsFiles | None = tls_files
        self.project_id = project_id
        self.clock = clock
        self.max_message_bytes = max_message_bytes
        self.max_topic_message_bytes = max_topic_message_bytes
        self.client_email = f"firebase-adminsdk-emulator@{project_id}.iam.gserviceaccount.com"
        self.private_key_id = private_key_id or secrets.token_hex(20)
        if private_key_pem is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            private_key_pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        loaded = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise TypeError("a service account's key is an RSA key")
        self.private_key = loaded
        self.private_key_pem = private_key_pem
        self._public_key = self.private_key.public_key()

        self.requests: Recorder[FCMRequest] = Recorder()
        self.token_requests: Recorder[TokenRequest] = Recorder()
        self._lock = threading.Lock()
        self._access_tokens: dict[str, float] = {}  # token -> expiry (clock seconds)
        self._assertions: dict[str, dict[str, Any]] = {}
        self._scripts: dict[str, deque[Any]] = {}
        self._token_script: deque[Any] = deque()
        self._unregistered: set[str] = set()
        self._invalid: set[str] = set()
        self._counter = 0
        self._tmpdir: Path | None = None

    # -- URLs and credentials ----------------------------------------------------
    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @property
    def send_url(self) -> str:
        """The URL to put in ``_MessagingService._fcm_url``."""
        return f"{self.base_url}/v1/projects/{self.project_id}/messages:send"

    def service_account_info(self) -> dict[str, str]:
        """A service-account key dict like the one the Firebase console downloads, ``token_uri`` = the emulator."""
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": self.private_key_pem.decode(),
            "client_email": self.client_email,
            "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
                                    + urllib.parse.quote(self.client_email),
            "universe_domain": "googleapis.com",
        }

    def write_service_account_file(self, path: Path | str | None = None) -> Path:
        """Write ``service_account_info()`` as JSON (default: a temp file removed by ``stop()``)."""
        if path is None:
            if self._tmpdir is None:
                self._tmpdir = Path(tempfile.mkdtemp(prefix="bgtasks-fcm-"))
            path = self._tmpdir / "service-account.json"
        path = Path(path)
        path.write_text(json.dumps(self.service_account_info(), indent=2))
        path.chmod(0o600)
        return path

    def attach(self, app: firebase_admin.App) -> None:
        """Point an initialised firebase-admin app's messaging at the emulator (sync and async paths).

        Sets ``messaging._get_messaging_service(app)._fcm_url`` (read at call time by
        ``send``, ``send_each`` and ``send_each_async``), and mounts on the emulator's
        base URL the same ``requests`` adapter the SDK mounts for
        ``https://fcm.googleapis.com`` (pool of 100, the SDK's retry config), so
        ``send_each`` pools connections as in production instead of warning
        "Connection pool is full".
        """
        import requests.adapters
        from firebase_admin import _http_client, messaging

        service = messaging._get_messaging_service(app)
        if not isinstance(getattr(service, "_fcm_url", None), str):  # guard the private hook
            raise RuntimeError("firebase_admin.messaging._MessagingService has no _fcm_url any more")
        service._fcm_url = self.send_url
        service._client.session.mount(self.base_url + "/", requests.adapters.HTTPAdapter(
            pool_connections=100, pool_maxsize=100, max_retries=_http_client.DEFAULT_RETRY_CONFIG))

    def initialize_app(self, name: str, options: Mapping[str, Any] | None = None) -> firebase_admin.App:
        """``firebase_admin.initialize_app`` with a service-account file for the emulator, then ``attach``."""
        import firebase_admin
        from firebase_admin import credentials

        app = firebase_admin.initialize_app(
            credentials.Certificate(str(self.write_service_account_file())), dict(options or {}), name=name
        )
        self.attach(app)
        return app

    @staticmethod
    def delete_app(app: firebase_admin.App) -> None:
        """``firebase_admin.delete_app`` from synchronous code (no running event loop)."""
        import firebase_admin

        firebase_admin.delete_app(app)

    @staticmethod
    async def adelete_app(app: firebase_admin.App) -> None:
        """Delete an app from async code.

        ``delete_app`` closes the messaging service's httpx client with
        ``asyncio.run()``, which fails inside a running loop and would close
        connections owned by this loop from another one: close the client here
        first, then run ``delete_app`` in a worker thread (its ``aclose`` is then
        a no-op).
        """
        import firebase_admin
        from firebase_admin import messaging

        await messaging._get_messaging_service(app)._async_client.aclose()
        await asyncio.to_thread(firebase_admin.delete_app, app)

    def _before_start(self) -> None:
        if self.tls and self._own_tls is None:
            if self._tmpdir is None:
                self._tmpdir = Path(tempfile.mkdtemp(prefix="bgtasks-fcm-"))
            self._tls_files = make_tls_files(self._tmpdir, "bgtasks FCM emulator CA")

    def _ssl_context(self) -> ssl.SSLContext | None:
        # As fcm.googleapis.com: HTTP/2 by ALPN, HTTP/1.1 for clients without it (google-auth's
        # token request through requests).
        return self._tls_files.server_context(["h2", "http/1.1"]) if self._tls_files else None

    @property
    def ca_cert_path(self) -> Path:
        """PEM of the CA that issued the server certificate (tls=True, while running)."""
        if self._tls_files is None:
            raise RuntimeError("no CA: the emulator is stopped or runs with tls=False")
        return self._tls_files.ca_cert

    def _after_stop(self) -> None:
        self._tls_files = self._own_tls
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    # -- scripting -------------------------------------------------------------
    def script(self, target: str, responses: Iterable[FCMResponse | tuple[Any, ...] | str | Any]) -> None:
        """Queue answers for a token/fid/topic/condition, returned one per request before normal handling.

        Entries: an FCM error code (``"UNAVAILABLE"``), ``(status, error_code[, headers])``
        such as ``(429, "QUOTA_EXCEEDED", {"Retry-After": "1"})``, ``(200, None)`` for
        success, an ``FCMResponse``, or ``HANG`` (never answer).
        """
        items = [r if r is HANG else FCMResponse.of(r) for r in responses]
        with self._lock:
            self._scripts.setdefault(target, deque()).extend(items)

    def unregister(self, target: str) -> None:
        """From now on ``target`` answers 404 UNREGISTERED."""
        with self._lock:
            self._unregistered.add(target)

    def mark_invalid(self, target: str) -> None:
        """From now on ``target`` answers 400 INVALID_ARGUMENT (not a valid registration token)."""
        with self._lock:
            self._invalid.add(target)

    def script_token_endpoint(self, responses: Iterable[tuple[int, str, str] | FCMResponse]) -> None:
        """Queue ``/token`` answers: ``(status, error, error_description)`` or an ``FCMResponse``."""
        items = [r if isinstance(r, FCMResponse) else
                 FCMResponse(r[0], {"error": r[1], "error_description": r[2]}) for r in responses]
        with self._lock:
            self._token_script.extend(items)

    def issue_access_token(self) -> str:
        """A valid access token without the OAuth dance, for raw HTTP requests in tests."""
        token = "ya29.emulator-" + secrets.token_urlsafe(24)
        now = self.clock()
        with self._lock:
            if len(self._access_tokens) > 10_000:
                self._access_tokens = {t: e for t, e in self._access_tokens.items() if e > now}
            self._access_tokens[token] = now + 3600
        return token

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far stops working (401 until the client refreshes)."""
        with self._lock:
            self._access_tokens.clear()

    def reset(self) -> None:
        """Forget scripts, target sets and recorded requests (issued access tokens stay valid)."""
        with self._lock:
            self._scripts.clear()
            self._token_script.clear()
            self._unregistered.clear()
            self._invalid.clear()
        self.requests.clear()
        self.token_requests.clear()

    # -- server ----------------------------------------------------------------
    def _make_protocol(self) -> TrackedProtocol:
        return _FCMProtocol(self)

    def _answer_bytes(self, method: str, path: str, headers: dict[str, str],
                      body: bytes) -> tuple[FCMResponse, bytes] | None:
        """The answer to one complete request and its body (None: HANG, never answer)."""
        try:
            resp = self._handle(method, path, headers, body)
        except Exception as exc:  # a bug in the emulator: answer 500 rather than hang the client
            resp = FCMResponse(500, google_error(500, f"emulator error: {exc!r}", "INTERNAL"))
        if resp is HANG:
            return None
        return resp, (json.dumps(resp.body).encode() if resp.body or resp.status != 200 else b"{}")

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> FCMResponse | Any:
        if path == "/token":
            return self._handle_token(method, headers, body)
        req = FCMRequest(method, path, headers, body, None, time=self.clock())
        try:
            resp = self._handle_send(req)
        except _Invalid as inv:
            resp = inv.response
        if resp is not HANG:
            req.status, req.response = resp.status, resp.body
        self.requests.append(req)
        return resp

    def _handle_token(self, method: str, headers: dict[str, str], body: bytes) -> FCMResponse:
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
        claims: dict[str, Any] | None = None

        def err(error: str, description: str, status: int = 400) -> FCMResponse:
            return FCMResponse(status, {"error": error, "error_description": description})

        with self._lock:
            scripted = self._token_script.popleft() if self._token_script else None
        if method != "POST":
            resp = err("invalid_request", "Only POST is supported", 405)
        elif scripted is not None:
            resp = scripted
        elif form.get("grant_type") != JWT_BEARER:
            resp = err("unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type', '')}")
        elif not form.get("assertion"):
            resp = err("invalid_request", "Missing required parameter: assertion")
        else:
            assertion = form["assertion"]
            try:
                if jwt.get_unverified_header(assertion).get("kid") != self.private_key_id:
                    raise jwt.InvalidSignatureError("kid")
                claims = jwt.decode(
                    assertion, self._public_key, algorithms=["RS256"],
                    audience=sorted(_GOOGLE_TOKEN_AUDIENCES | {self.token_uri}),
                    options={"verify_exp": False, "verify_iat": False, "require": ["iss", "aud", "iat", "exp"]},
                )
            except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError):
                resp = err("invalid_grant", "Invalid JWT: Failed audience check.")
            except jwt.InvalidTokenError:
                resp = err("invalid_grant", "Invalid JWT Signature.")
            else:
                now = time.time()  # google-auth signs assertions with the real clock, whatever self.clock says
                iat, exp = claims["iat"], claims["exp"]
                if claims["iss"] != self.client_email:
                    resp = err("invalid_grant", "Invalid grant: account not found")
                elif not (isinstance(iat, int) and isinstance(exp, int)) or exp - iat > 3600 or exp <= now \
                        or iat > now + 300:
                    resp = err("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in "
                                                "a reasonable timeframe. Check your iat and exp values in the JWT "
                                                "claim.")
                else:
                    resp = FCMResponse(200, {"access_token": self.issue_access_token(), "expires_in": 3599,
                                             "token_type": "Bearer"})
        self.token_requests.append(TokenRequest(form, claims, resp.status, resp.body, self.clock()))
        return resp

    def _handle_send(self, req: FCMRequest) -> FCMResponse | Any:
        prefix, suffix = "/v1/projects/", "/messages:send"
        if not (req.path.startswith(prefix) and req.path.endswith(suffix)):
            return FCMResponse(404, google_error(404, f"Method not found: {req.path}", "NOT_FOUND"))
        req.project = req.path[len(prefix):-len(suffix)]
        if req.method != "POST":
            return FCMResponse(405, google_error(405, "Method not allowed.", "INVALID_ARGUMENT"))

        auth = req.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if not auth:
            return FCMResponse(401, google_error(
                401, f"Request is missing required authentication credential. {_AUTH_HELP}", "UNAUTHENTICATED",
                details=[{"@type": ERROR_INFO_TYPE, "reason": "CREDENTIALS_MISSING", "domain": "googleapis.com",
                          "metadata": {"service": "fcm.googleapis.com",
                                       "method": "google.firebase.fcm.v1.FcmService.SendMessage"}}]))
        with self._lock:
            expiry = self._access_tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or expiry <= self.clock():
            return FCMResponse(401, google_error(
                401, f"Request had invalid authentication credentials. {_AUTH_HELP}", "UNAUTHENTICATED",
                details=[{"@type": ERROR_INFO_TYPE, "reason": "ACCESS_TOKEN_TYPE_UNSUPPORTED",
                          "domain": "googleapis.com",
                          "metadata": {"service": "fcm.googleapis.com",
                                       "method": "google.firebase.fcm.v1.FcmService.SendMessage"}}]))
        if req.project != self.project_id:
            return FCMResponse(403, google_error(
                403, f"Permission 'cloudmessaging.messages.create' denied on resource "
                     f"'//cloudresourcemanager.googleapis.com/projects/{req.project}' (or it may not exist).",
                "PERMISSION_DENIED"))

        self._validate(req)
        assert req.target is not None
        with self._lock:
            queue = self._scripts.get(req.target)
            if queue:
                scripted = queue.popleft()
                if scripted is HANG or scripted.status != 200:
                    return scripted
            elif req.target in self._invalid:
                return FCMResponse.error("INVALID_ARGUMENT")
            elif req.target in self._unregistered:
                return FCMResponse.error("UNREGISTERED")
            self._counter += 1
            counter = self._counter
        if req.validate_only:
            name = f"projects/{self.project_id}/messages/fake_message_id"
        else:
            name = f"projects/{self.project_id}/messages/0:{int(self.clock() * 1000)}%{counter:016x}"
        return FCMResponse(200, {"name": name})

    def _validate(self, req: FCMRequest) -> None:
        """Raise ``_Invalid`` with the service's answer for a malformed body."""
        try:
            req.json = json.loads(req.body)
        except ValueError as exc:
            raise _bad_request(f"Invalid JSON payload received. {exc}", None, None) from None
        body = req.json
        if not isinstance(body, dict):
            raise _bad_request("Invalid JSON payload received. Expected an object.", None, None)
        for key in body:
            if key not in ("message", "validate_only", "validateOnly"):
                raise _bad_request(f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.',
                                   key, None)
        req.validate_only = bool(body.get("validate_only") or body.get("validateOnly"))
        msg = body.get("message")
        if not isinstance(msg, dict):
            raise _bad_request("Request contains an invalid argument.", "message")
        for key in msg:
            if key not in _MESSAGE_FIELDS:
                raise _bad_request(f'Invalid JSON payload received. Unknown name "{key}" at \'message\': '
                                   "Cannot find field.", f"message.{key}", None)
        targets = [t for t in _TARGETS if msg.get(t) is not None]
        if not targets:
            raise _bad_request("Recipient of the message is not set.")
        if len(targets) > 1:
            raise _bad_request(f"Invalid value at 'message' (oneof), oneof field 'target' is already set. "
                               f"Cannot set '{targets[1]}'", "message", None)
        kind = targets[0]
        value = msg[kind]
        if not isinstance(value, str):
            raise _bad_request(f"Invalid value at 'message.{kind}' (TYPE_STRING), {json.dumps(value)}",
                               f"message.{kind}", None)
        req.target_kind, req.target = kind, value
        if kind in ("token", "fid") and not value.strip():
            raise _bad_request(FCM_ERRORS["INVALID_ARGUMENT"][2])
        if kind == "topic" and not _TOPIC.match(value):
            raise _bad_request("Invalid topic name.", "message.topic")

        options = msg.get("fcm_options", msg.get("fcmOptions"))
        if options is not None:
            label = options.get("analytics_label", options.get("analyticsLabel")) if isinstance(options, dict) else 0
            if label is not None and not (isinstance(label, str) and _ANALYTICS_LABEL.match(label)):
                raise _bad_request("Invalid value at 'message.fcm_options.analytics_label'",
                                   "message.fcm_options.analytics_label")

        data = msg.get("data")
        if data is not None:
            if not isinstance(data, dict):
                raise _bad_request(f"Invalid value at 'message.data' (type.googleapis.com/google.protobuf.Struct"
                                   f"), {json.dumps(data)}", "message.data", None)
            for i, (k, v) in enumerate(data.items()):
                if not isinstance(v, str):
                    desc = f"Invalid value at 'message.data[{i}].value' (TYPE_STRING), {json.dumps(v)}"
                    raise _bad_request(desc, f"message.data[{i}].value", None)
                if k in _RESERVED_DATA_KEYS or k.startswith(("google.", "gcm.")) or k == "google":
                    raise _bad_request(f"Invalid data message key: {k}", f"message.data[{i}].key")
        android = msg.get("android")
        if android is not None:
            if not isinstance(android, dict):
                raise _bad_request("Invalid value at 'message.android'.", "message.android", None)
            prio = android.get("priority")
            if prio is not None and str(prio).upper() not in ("NORMAL", "HIGH"):
                raise _bad_request(f"Invalid value at 'message.android.priority' "
                                   f"(type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), "
                                   f"{json.dumps(prio)}", "message.android.priority", None)
            ttl = android.get("ttl")
            if ttl is not None and not (isinstance(ttl, str) and _DURATION.match(ttl)):
                raise _bad_request(f"Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf"
                                   f".Duration), {json.dumps(ttl)}", "message.android.ttl", None)

        apns = msg.get("apns")
        if apns is not None:
            self._validate_apns(apns)

        payload = {k: v for k, v in msg.items() if k not in _TARGETS}
        size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
        limit = self.max_topic_message_bytes if kind in ("topic", "condition") else self.max_message_bytes
        if size > limit:
            raise _bad_request(f"Message is too big: {size} bytes, the limit is {limit} bytes.")


    @staticmethod
    def _validate_apns(apns: Any) -> None:
        """The ``apns`` block of a message to an iOS device: FCM checks its shape, APNs the
        headers it is given (answered as FCM relays them: an ``ApnsError`` detail)."""
        if not isinstance(apns, dict):
            raise _bad_request("Invalid value at 'message.apns'.", "message.apns", None)
        headers = apns.get("headers") or {}
        if not isinstance(headers, dict):
            raise _bad_request("Invalid value at 'message.apns.headers'.", "message.apns.headers", None)
        for i, (k, v) in enumerate(headers.items()):
            if not isinstance(v, str):
                raise _bad_request(f"Invalid value at 'message.apns.headers[{i}].value' (TYPE_STRING), "
                                   f"{json.dumps(v)}", f"message.apns.headers[{i}].value", None)
        push_type = headers.get("apns-push-type")
        if push_type is None or push_type not in _APNS_PUSH_TYPES:
            raise _apns_refused("InvalidPushType")
        priority = headers.get("apns-priority")
        if priority is not None and (priority not in ("1", "5", "10") or
                                     (priority == "10" and push_type == "background")):
            raise _apns_refused("BadPriority")
        collapse = headers.get("apns-collapse-id")
        if collapse is not None and len(collapse.encode()) > 64:
            raise _apns_refused("BadCollapseId")
        expiration = headers.get("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            raise _apns_refused("BadExpirationDate")


class _H11Protocol(TrackedProtocol):
    """One HTTP/1.1 keep-alive connection, parsed with h11."""

    server: FCMEmulator

    def __init__(self, server: FCMEmulator) -> None:
        super().__init__(server)
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
        self.request: h11.Request | None = None
        self.body = bytearray()

    def data_received(self, data: bytes) -> None:
        self.h11.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        self.h11.receive_data(b"")
        self._process()
        return None

    def _process(self) -> None:
        assert self.transport is not None
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                self._fail(400)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.request, self.body = event, bytearray()
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                if not self._answer():
                    return
            elif isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return

    def _answer(self) -> bool:
        """Answer the complete request; False when the connection should not read on."""
        assert self.request is not None and self.transport is not None
        req = self.request
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in req.headers}
        target = req.target.decode("latin-1")
        path = urllib.parse.urlsplit(target).path
        answer = self.server._answer_bytes(req.method.decode("latin-1"), path, headers, bytes(self.body))
        if answer is None:
            return False  # HANG: h11 stays PAUSED; the client times out or closes
        resp, body = answer
        out_headers = [("content-type", _JSON_CT), ("content-length", str(len(body)))]
        out_headers.extend((k, str(v)) for k, v in resp.headers.items())
        try:
            data = self.h11.send(h11.Response(status_code=resp.status, headers=out_headers))
            data += self.h11.send(h11.Data(data=body))
            data += self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            self.transport.close()
            return False
        self.transport.write(data)
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        self.transport.close()
        return False

    def _fail(self, status: int) -> None:
        assert self.transport is not None
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                self.transport.write(self.h11.send(h11.Response(status_code=status, headers=[
                    ("content-length", "0"), ("connection", "close")])))
                self.transport.write(self.h11.send(h11.EndOfMessage()))
            except h11.LocalProtocolError:
                pass
        self.transport.close()


class _FCMProtocol(TrackedProtocol):
    """One connection: HTTP/2 when TLS negotiated ``h2`` (as httpx and firebase-admin's async path
    do against fcm.googleapis.com), else HTTP/1.1 (plain HTTP, or a client without ALPN)."""

    server: FCMEmulator

    def __init__(self, server: FCMEmulator) -> None:
        super().__init__(server)
        self.inner: _H11Protocol | _H2Handler | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.server.connections_made += 1
        ssl_obj = transport.get_extra_info("ssl_object")
        if ssl_obj is not None and ssl_obj.selected_alpn_protocol() == "h2":
            self.inner = _H2Handler(self, transport)
        else:
            self.inner = _H11Protocol(self.server)
            self.inner.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.inner is not None
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if isinstance(self.inner, _H11Protocol):
            return self.inner.eof_received()
        return None


class _H2Handler(H2BodySender):
    """The HTTP/2 side of a connection: streams collected, answered by ``FCMEmulator._answer_bytes``."""

    def __init__(self, proto: _FCMProtocol, transport: Any) -> None:
        import h2.config
        import h2.connection

        self.server = proto.server
        self.transport = transport
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.pending: dict[int, bytes] = {}
        self.server.h2_connections += 1
        self.h2.initiate_connection()
        transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        import h2.events
        import h2.exceptions

        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.transport.write(self.h2.data_to_send())
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.streams[ev.stream_id] = ({k.lower(): v for k, v in ev.headers}, bytearray())
            elif isinstance(ev, h2.events.DataReceived):
                if ev.stream_id in self.streams:
                    self.streams[ev.stream_id][1].extend(ev.data)
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in self.streams:
                self._respond(ev.stream_id, *self.streams.pop(ev.stream_id))
            elif isinstance(ev, h2.events.StreamReset):
                self.streams.pop(ev.stream_id, None)
                self.pending.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.WindowUpdated):
                self.flush_pending()
            elif isinstance(ev, h2.events.PingReceived):  # h2 queues the PING ACK itself
                self.server.pings += 1
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.transport.write(self.h2.data_to_send())
                self.transport.close()
                return
        self.transport.write(self.h2.data_to_send())

    def _respond(self, stream_id: int, headers: dict[str, str], body: bytearray) -> None:
        import h2.exceptions

        path = urllib.parse.urlsplit(headers.get(":path", "")).path
        answer = self.server._answer_bytes(headers.get(":method", ""), path, headers, bytes(body))
        if answer is None:
            return  # HANG
        resp, out = answer
        out_headers = [(":status", str(resp.status)), ("content-type", _JSON_CT), ("content-length", str(len(out)))]
        out_headers.extend((k.lower(), str(v)) for k, v in resp.headers.items())
        try:
            self.h2.send_headers(stream_id, out_headers)
            self.send_body(stream_id, out)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass  # the client reset the stream meanwhile
