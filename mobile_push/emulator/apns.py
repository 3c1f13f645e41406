"""The emulator of Apple's APNs provider API (token-based authentication).

Imitates ``api.push.apple.com`` / ``api.sandbox.push.apple.com``: HTTP/2 over
TLS with ALPN ``h2`` (or h2c prior knowledge with ``tls=False``), built on the
``h2`` package, on 127.0.0.1 with a free port, in its own event loop thread.

Real behaviours covered (Apple, "Sending notification requests to APNs" and
"Handling notification responses from APNs"):

* ``POST /3/device/<hex token>`` only: other methods 405 ``MethodNotAllowed``,
  other paths 404 ``BadPath``, ``/3/device/`` 400 ``MissingDeviceToken``, a
  token that is not hex 400 ``BadDeviceToken``.
* Provider token ``authorization: bearer <JWT>``: ES256 only, header ``kid`` =
  the key id, claim ``iss`` = the team id, claim ``iat``; missing 403
  ``MissingProviderToken``; unverifiable/wrong kid/wrong iss/``iat`` more than
  10 min in the future 403 ``InvalidProviderToken``; ``iat`` older than 60 min
  403 ``ExpiredProviderToken``. Changing the team's token less than 20 min
  after the previous one, on any connection (a new connection signing a new
  token counts), 429 ``TooManyProviderTokenUpdates`` (not counted when the
  previous token had been rejected or force-expired). Each emulator is one host:
  production and sandbox count apart.
  Verification is cached per token string (the expensive part is done once).
* Headers: ``apns-topic`` required (400 ``MissingTopic``) and, if ``topics`` is
  given, one of them (400 ``TopicDisallowed``); ``apns-push-type`` present and
  one of Apple's types (400 ``InvalidPushType``); ``apns-priority`` 1, 5 or 10 (400
  ``BadPriority``; 10 with ``apns-push-type: background`` is also
  ``BadPriority``, Apple documents it as an error); ``apns-expiration`` an
  integer (400 ``BadExpirationDate``); ``apns-collapse-id`` at most 64 bytes
  (400 ``BadCollapseId``); ``apns-id`` a UUID (400 ``BadMessageId``); a
  repeated ``apns-*``/authorization header 400 ``DuplicateHeaders``.
* Payload: empty 400 ``PayloadEmpty``; more than 4096 bytes (5120 for
  ``voip``) 413 ``PayloadTooLarge``; not a JSON object 400 ``BadRequest``
  (Apple documents no reason for this case; don't rely on the string).
* Responses: 200 with no body and an ``apns-id`` header (the request's, else
  a fresh upper-case UUID); errors have body ``{"reason": "..."}`` and the
  ``apns-id`` header; 410 ``{"reason": "Unregistered", "timestamp": <ms>}``.
* ``goaway(reason)`` sends GOAWAY with ``{"reason": ...}`` as debug data, as
  APNs does when it closes a connection (e.g. ``Shutdown``).
* One stream until a token is proven: the server's MAX_CONCURRENT_STREAMS is
  only in its SETTINGS frame, and until the connection has answered a request
  whose provider token it accepted, a second open stream is refused
  (RST_STREAM ``REFUSED_STREAM``, counted in ``refused_streams``). A stream
  sent before the client could have read that answer (in the same read) counts.

* iOS's budget for background pushes: a device accepts a few an hour and drops
  the rest. APNs still answers 200; the emulator counts a background push to a
  token that already had ``background_per_hour`` (default 3) in the trailing
  hour as throttled (``APNsRequest.throttled``, ``throttled(token)``), so tests
  can see that a sender stays within the budget.

Not covered: certificate-based auth, ``apns-unique-id`` (development only),
the broadcast/channels API, Apple's 429 for too many requests to one device
(script them).

Scripted failures are checked after authentication and validation pass, in
this order: forced ``ExpiredProviderToken``, the per-token script queue,
bad tokens, tokens not for the topic, unregistered tokens, then success.

Usage::

    with APNsEmulator(topics={"com.example.app"}) as apns:
        ctx = apns.client_ssl_context()
        async with httpx.AsyncClient(http2=True, verify=ctx, base_url=apns.base_url) as c:
            r = await c.post(f"/3/device/{token}", headers={
                "authorization": f"bearer {apns.make_provider_token()}",
                "apns-topic": "com.example.app", "apns-push-type": "background",
                "apns-priority": "5"}, content=b'{"aps":{"content-available":1}}')
"""

from __future__ import annotations

import json
import re
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ._server import HANG, H2BodySender, LoopThreadServer, Recorder, TrackedProtocol
from .tls import TlsFiles, make_tls_files

__all__ = ["HANG", "APNsRequest", "APNsResponse", "APNsEmulator", "PUSH_TYPES"]

PUSH_TYPES = frozenset(
    {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity",
     "pushtokens", "widgets", "controls"}
)
MAX_PAYLOAD = 4096
MAX_VOIP_PAYLOAD = 5120
TOKEN_MAX_AGE_S = 3600
TOKEN_MIN_UPDATE_INTERVAL_S = 1200
FUTURE_IAT_SKEW_S = 600

_HEX = re.compile(r"^[0-9a-fA-F]+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_ONCE_HEADERS = frozenset(
    {"authorization", "apns-topic", "apns-push-type", "apns-priority", "apns-expiration", "apns-collapse-id",
     "apns-id"}
)
_STATUS_FOR_REASON = {
    "BadCollapseId": 400, "BadDeviceToken": 400, "BadExpirationDate": 400, "BadMessageId": 400,
    "BadPriority": 400, "BadTopic": 400, "DeviceTokenNotForTopic": 400, "DuplicateHeaders": 400,
    "IdleTimeout": 400, "InvalidPushType": 400, "MissingDeviceToken": 400, "MissingTopic": 400,
    "PayloadEmpty": 400, "TopicDisallowed": 400, "BadCertificate": 403, "BadCertificateEnvironment": 403,
    "ExpiredProviderToken": 403, "Forbidden": 403, "InvalidProviderToken": 403, "MissingProviderToken": 403,
    "UnrelatedKeyIdInToken": 403, "BadEnvironmentKeyIdInToken": 403, "BadPath": 404,
    "MethodNotAllowed": 405, "ExpiredToken": 410, "Unregistered": 410, "PayloadTooLarge": 413,
    "TooManyProviderTokenUpdates": 429, "TooManyRequests": 429, "InternalServerError": 500,
    "ServiceUnavailable": 503, "Shutdown": 503,
}


@dataclass(frozen=True)
class APNsResponse:
    """One scripted answer. ``reason=None`` with status 200 means success."""

    status: int
    reason: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timestamp_ms: int | None = None  # for 410; defaults to "now"

    @classmethod
    def of(cls, spec: APNsResponse | tuple[Any, ...] | str) -> APNsResponse:
        """Accept ``APNsResponse``, ``(status, reason[, headers])`` or a reason string."""
        if isinstance(spec, APNsResponse):
            return spec
        if isinstance(spec, str):
            return cls(_STATUS_FOR_REASON.get(spec, 400), spec)
        status, reason, *rest = spec
        return cls(int(status), reason, dict(rest[0]) if rest else {})


@dataclass
class APNsRequest:
    """A request as the emulator saw it, with the answer it gave."""

    connection_id: int
    stream_id: int
    method: str
    path: str
    device_token: str | None
    headers: dict[str, str]  # lower-cased names; the last value if repeated
    body: bytes
    payload: Any  # the parsed JSON body, or None
    status: int = 0
    reason: str | None = None
    apns_id: str | None = None
    time: float = 0.0
    throttled: bool = False  # accepted, but beyond the device's background budget: iOS drops it

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class _JwtCheck:
    reason: str | None  # None: signature, kid and iss are good
    iat: int = 0


class _Stream:
    __slots__ = ("headers", "dup", "body")

    def __init__(self, headers: dict[str, str], dup: bool) -> None:
        self.headers = headers
        self.dup = dup
        self.body = bytearray()


class APNsEmulator(LoopThreadServer):
    """The APNs provider API emulator (HTTP/2, token auth). See the module docstring.

    Args:
        team_id: expected ``iss`` claim of provider tokens.
        key_id: expected ``kid`` header of provider tokens.
        public_key: the EC P-256 public key (object or PEM) that signs tokens;
            when omitted a key pair is generated and ``private_key_pem`` is set.
        topics: allowed ``apns-topic`` values (``None``: any non-empty topic).
        tls: serve TLS with ALPN h2 (default) or h2c with prior knowledge.
        clock: seconds since the epoch, for ``iat`` checks, the 20-minute
            update rule and 410 timestamps. To test a client's token refresh
            without waiting, give the client the same clock (its new tokens'
            ``iat`` must come from it too), or sign old tokens with
            ``make_provider_token(iat=...)``.
        max_concurrent_streams: SETTINGS_MAX_CONCURRENT_STREAMS advertised.
        enforce_token_update_interval: answer 429 TooManyProviderTokenUpdates
            when the team's token changes within 20 minutes (on any connection).
        background_per_hour: background pushes a device takes per hour before
            the ones beyond count as throttled (None: no count).
    """

    MALFORMED_JSON_REASON = "BadRequest"

    def __init__(
        self,
        team_id: str = "TEAM123456",
        key_id: str = "KEY1234567",
        public_key: ec.EllipticCurvePublicKey | bytes | str | None = None,
        *,
        topics: Collection[str] | None = None,
        tls: bool = True,
        clock: Callable[[], float] = time.time,
        max_concurrent_streams: int = 1000,
        enforce_token_update_interval: bool = True,
        background_per_hour: int | None = 3,
        tls_files: TlsFiles | None = None,
        port: int = 0,
    ) -> None:
        super().__init__(port)
        self._own_tls = tls_files  # given: kept (bgtasks emulator's), else made per start and removed
        self.team_id = team_id
        self.key_id = key_id
        self.private_key: ec.EllipticCurvePrivateKey | None = None
        self.private_key_pem: bytes | None = None
        if public_key is None:
            self.private_key = ec.generate_private_key(ec.SECP256R1())
            self.private_key_pem = self.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            public_key = self.private_key.public_key()
        elif isinstance(public_key, (bytes, str)):
            loaded = serialization.load_pem_public_key(
                public_key.encode() if isinstance(public_key, str) else public_key
            )
            if not isinstance(loaded, ec.EllipticCurvePublicKey):
                raise TypeError("APNs keys are EC P-256 keys")
            public_key = loaded
        self.public_key: ec.EllipticCurvePublicKey = public_key
        self.topics = frozenset(topics) if topics is not None else None
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.clock = clock
        self.max_concurrent_streams = max_concurrent_streams
        self.enforce_token_update_interval = enforce_token_update_interval
        self.background_per_hour = background_per_hour
        #: The team's provider token in use and since when (clock seconds).
        self._team_jwt: tuple[str, float] | None = None
        #: Accepted background pushes per device token (clock seconds), for the throttle count.
        self._background: dict[str, deque[float]] = {}
        self._throttled: dict[str, int] = {}

        self.requests: Recorder[APNsRequest] = Recorder()
        #: Streams refused because the connection had not yet answered an authenticated request.
        self.refused_streams = 0
        #: HTTP/2 PINGs received (a client keeping its connection open).
        self.pings = 0
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Any]] = {}
        self._unregistered: dict[str, int | None] = {}
        self._bad_tokens: set[str] = set()
        self._not_for_topic: set[str] = set()
        self._force_expired = 0
        self._expired_jwts: set[str] = set()
        self._jwt_cache: dict[str, _JwtCheck] = {}
        self._next_conn_id = 0
        self._tmpdir: Path | None = None
        self._tls_files: TlsFiles | None = tls_files

    # -- TLS -----------------------------------------------------------------
    def _before_start(self) -> None:
        if self.tls and self._own_tls is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="bgtasks-apns-"))
            self._tls_files = make_tls_files(self._tmpdir, "bgtasks APNs emulator CA")

    def _after_stop(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        self._tmpdir = None
        self._tls_files = self._own_tls

    def _ssl_context(self) -> ssl.SSLContext | None:
        return self._tls_files.server_context(["h2"]) if self._tls_files else None

    @property
    def ca_cert_path(self) -> Path:
        """PEM of the self-signed CA that issued the server certificate (TLS mode, while running)."""
        if self._tls_files is None:
            raise RuntimeError("no CA: the emulator is stopped or runs with tls=False")
        return self._tls_files.ca_cert

    def client_ssl_context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` trusting only the emulator's CA: pass as ``httpx.AsyncClient(verify=...)``."""
        if self._tls_files is None:
            raise RuntimeError("no CA: the emulator is stopped or runs with tls=False")
        return self._tls_files.client_context()

    # -- provider tokens -------------------------------------------------------
    def make_provider_token(self, iat: float | None = None, *, key_id: str | None = None,
                            team_id: str | None = None) -> str:
        """Sign a provider JWT with the generated key, as a real provider would."""
        if self.private_key is None:
            raise RuntimeError("constructed with a public key: sign tokens with your private key")
        claims = {"iss": team_id or self.team_id, "iat": int(self.clock() if iat is None else iat)}
        return jwt.encode(claims, self.private_key, algorithm="ES256", headers={"kid": key_id or self.key_id})

    def write_auth_key(self, directory: Path | str) -> Path:
        """Write the private key as Apple's ``AuthKey_<key id>.p8`` into ``directory``."""
        if self.private_key_pem is None:
            raise RuntimeError("constructed with a public key: there is no private key to write")
        path = Path(directory) / f"AuthKey_{self.key_id}.p8"
        path.write_bytes(self.private_key_pem)
        path.chmod(0o600)  # bgtasks refuses a key others may read, as it should
        return path

    def _forget_token(self, proto: _APNsProtocol, token: str) -> None:
        """An expired token no longer counts as the team's (its successor is no update)."""
        proto.current_jwt = None
        with self._lock:
            if self._team_jwt is not None and self._team_jwt[0] == token:
                self._team_jwt = None

    def _check_jwt(self, token: str) -> _JwtCheck:
        check = self._jwt_cache.get(token)
        if check is not None:
            return check
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
                raise jwt.InvalidTokenError("alg/kid")
            claims = jwt.decode(
                token, self.public_key, algorithms=["ES256"],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "verify_aud": False,
                         "require": ["iss", "iat"]},
            )
            iat = claims["iat"]
            if claims["iss"] != self.team_id or not isinstance(iat, int):
                raise jwt.InvalidTokenError("iss/iat")
            check = _JwtCheck(None, iat)
        except (jwt.InvalidTokenError, ValueError, TypeError):
            check = _JwtCheck("InvalidProviderToken")
        with self._lock:  # expire_provider_tokens() iterates the cache from another thread
            if len(self._jwt_cache) > 10_000:
                self._jwt_cache.clear()
            self._jwt_cache[token] = check
        return check

    # -- scripting -----------------------------------------------------------
    def script(self, device_token: str, responses: Iterable[APNsResponse | tuple[Any, ...] | str | Any]) -> None:
        """Queue answers for ``device_token``, returned one per request before normal handling.

        Entries: ``(status, reason[, headers])``, a reason string, an ``APNsResponse``
        or ``HANG`` (never answer that request). Example:
        ``apns.script(tok, [(503, "ServiceUnavailable", {}), (429, "TooManyRequests", {"retry-after": "1"})])``.
        """
        items = [r if r is HANG else APNsResponse.of(r) for r in responses]
        with self._lock:
            self._scripts.setdefault(device_token.lower(), deque()).extend(items)

    def unregister(self, device_token: str, timestamp_ms: int | None = None) -> None:
        """From now on ``device_token`` answers 410 Unregistered (with ``timestamp``)."""
        with self._lock:
            self._unregistered[device_token.lower()] = timestamp_ms

    def mark_bad(self, device_token: str) -> None:
        """From now on ``device_token`` answers 400 BadDeviceToken (e.g. a sandbox token in production)."""
        with self._lock:
            self._bad_tokens.add(device_token.lower())

    def mark_not_for_topic(self, device_token: str) -> None:
        """From now on ``device_token`` answers 400 DeviceTokenNotForTopic."""
        with self._lock:
            self._not_for_topic.add(device_token.lower())

    def force_expired_provider_token(self, count: int = 1) -> None:
        """The next ``count`` authenticated requests answer 403 ExpiredProviderToken."""
        with self._lock:
            self._force_expired += count

    def expire_provider_tokens(self) -> None:
        """Every provider token seen so far is stale from now on (403 ExpiredProviderToken),
        as after an hour: the client must sign a new one."""
        with self._lock:
            self._expired_jwts.update(self._jwt_cache)
            self._team_jwt = None  # the next token replaces a stale one: no "update"

    def reset(self) -> None:
        """Forget scripts, token sets, forced expiries and recorded requests."""
        with self._lock:
            self.refused_streams = 0
            self._scripts.clear()
            self._unregistered.clear()
            self._bad_tokens.clear()
            self._not_for_topic.clear()
            self._force_expired = 0
            self._expired_jwts.clear()
            self._team_jwt = None
            self._background.clear()
            self._throttled.clear()
        self.requests.clear()

    def throttled(self, device_token: str | None = None) -> int:
        """Background pushes accepted beyond the budget (iOS would drop them): to one token, or all."""
        with self._lock:
            if device_token is None:
                return sum(self._throttled.values())
            return self._throttled.get(device_token.lower(), 0)

    def goaway(self, reason: str = "Shutdown") -> None:
        """Send GOAWAY (debug data ``{"reason": ...}``) on every connection and close them."""

        def send() -> None:
            for proto in list(self._connections):
                if isinstance(proto, _APNsProtocol):
                    proto.goaway(reason)

        self.call_in_loop(send)

    # -- server ----------------------------------------------------------------
    def _make_protocol(self) -> _APNsProtocol:
        self._next_conn_id += 1
        return _APNsProtocol(self, self._next_conn_id)

    def _handle(self, proto: _APNsProtocol, stream_id: int, st: _Stream) -> tuple[APNsRequest, Any]:
        """Decide the answer for one complete request (runs in the loop thread)."""
        h = st.headers
        method = h.get(":method", "")
        path = h.get(":path", "")
        body = bytes(st.body)
        apns_id = h.get("apns-id")
        req = APNsRequest(proto.conn_id, stream_id, method, path, None, h, body, None, time=self.clock())

        def fail(reason: str, status: int | None = None) -> tuple[APNsRequest, Any]:
            return req, APNsResponse(status or _STATUS_FOR_REASON[reason], reason)

        if path.startswith("/3/device/"):
            req.device_token = path[len("/3/device/"):].split("?", 1)[0] or None
        if method != "POST":
            return fail("MethodNotAllowed")
        if not path.startswith("/3/device/"):
            return fail("BadPath")
        if st.dup:
            return fail("DuplicateHeaders")

        # Provider authentication.
        auth = h.get("authorization")
        if not auth:
            return fail("MissingProviderToken")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return fail("InvalidProviderToken")
        token = token.strip()
        check = self._check_jwt(token)
        if check.reason:
            return fail(check.reason)
        now = self.clock()
        if check.iat > now + FUTURE_IAT_SKEW_S:
            return fail("InvalidProviderToken")
        with self._lock:
            stale = token in self._expired_jwts
        if stale or now - check.iat > TOKEN_MAX_AGE_S:
            self._forget_token(proto, token)
            return fail("ExpiredProviderToken")
        proto.authenticated = True
        if token != proto.current_jwt:
            with self._lock:
                team = self._team_jwt
                if team is None or team[0] != token:
                    if (self.enforce_token_update_interval and team is not None
                            and now - team[1] < TOKEN_MIN_UPDATE_INTERVAL_S):
                        return fail("TooManyProviderTokenUpdates")
                    self._team_jwt = (token, now)
            proto.current_jwt, proto.jwt_since = token, now

        # Request headers.
        device = req.device_token
        if device is None:
            return fail("MissingDeviceToken")
        if not _HEX.match(device) or len(device) % 2 or len(device) > 200:
            return fail("BadDeviceToken")
        topic = h.get("apns-topic")
        if not topic:
            return fail("MissingTopic")
        if self.topics is not None and topic not in self.topics:
            return fail("TopicDisallowed")
        push_type = h.get("apns-push-type")
        if push_type not in PUSH_TYPES:  # missing too: required by watchOS, and by this emulator
            return fail("InvalidPushType")
        priority = h.get("apns-priority")
        if priority is not None and priority not in ("1", "5", "10"):
            return fail("BadPriority")
        if priority == "10" and push_type == "background":  # Apple: "using 10 is an error"
            return fail("BadPriority")
        expiration = h.get("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            return fail("BadExpirationDate")
        collapse = h.get("apns-collapse-id")
        if collapse is not None and len(collapse.encode()) > 64:
            return fail("BadCollapseId")
        if apns_id is not None and not _UUID.match(apns_id):
            return fail("BadMessageId")

        # Payload.
        if not body:
            return fail("PayloadEmpty")
        if len(body) > (MAX_VOIP_PAYLOAD if push_type == "voip" else MAX_PAYLOAD):
            return fail("PayloadTooLarge")
        try:
            req.payload = json.loads(body)
        except ValueError:
            return fail(self.MALFORMED_JSON_REASON, 400)
        if not isinstance(req.payload, dict):
            return fail(self.MALFORMED_JSON_REASON, 400)

        # Device state and scripted answers.
        key = device.lower()
        with self._lock:
            if self._force_expired > 0:
                self._force_expired -= 1
                proto.current_jwt = None
                self._team_jwt = None
                return fail("ExpiredProviderToken")
            queue = self._scripts.get(key)
            if queue:
                scripted = queue.popleft()
                if scripted is HANG:
                    return req, HANG
                if scripted.status == 200:
                    return req, APNsResponse(200, None, scripted.headers)
                if scripted.reason == "ExpiredProviderToken":
                    proto.current_jwt = None
                    self._team_jwt = None
                return req, scripted
            if key in self._bad_tokens:
                return fail("BadDeviceToken")
            if key in self._not_for_topic:
                return fail("DeviceTokenNotForTopic")
            if key in self._unregistered:
                return req, APNsResponse(410, "Unregistered", {}, self._unregistered[key])
            if push_type == "background" and self.background_per_hour is not None:
                seen = self._background.setdefault(key, deque())
                while seen and now - seen[0] >= 3600:
                    seen.popleft()
                if len(seen) >= self.background_per_hour:
                    req.throttled = True
                    self._throttled[key] = self._throttled.get(key, 0) + 1
                seen.append(now)
        return req, APNsResponse(200)


class _APNsProtocol(TrackedProtocol, H2BodySender):
    """One HTTP/2 connection."""

    server: APNsEmulator

    def __init__(self, server: APNsEmulator, conn_id: int) -> None:
        super().__init__(server)
        self.conn_id = conn_id
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.streams: dict[int, _Stream] = {}
        self.pending: dict[int, bytes] = {}
        self.current_jwt: str | None = None
        self.jwt_since = 0.0
        self.authenticated = False  # a request's token was accepted (its answer may be unsent)
        self.proven = False  # ... and that answer has been written to the client
        self.answered_in_read = 0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self.server.tls:
            ssl_obj = transport.get_extra_info("ssl_object")
            if ssl_obj is None or ssl_obj.selected_alpn_protocol() != "h2":
                transport.close()  # APNs speaks HTTP/2 only
                return
        self.h2.initiate_connection()
        self.h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.server.max_concurrent_streams})
        transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.transport.write(self.h2.data_to_send())
            self.transport.close()
            return
        self.answered_in_read = 0
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived) and not self.proven and (
                    self.streams or self.answered_in_read):
                self.h2.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                with self.server._lock:
                    self.server.refused_streams += 1
            elif isinstance(ev, h2.events.RequestReceived):
                headers: dict[str, str] = {}
                dup = False
                for k, v in ev.headers or ():
                    name = k.decode("latin-1").lower() if isinstance(k, bytes) else k.lower()
                    if name in headers and name in _ONCE_HEADERS:
                        dup = True
                    headers[name] = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                self.streams[ev.stream_id] = _Stream(headers, dup)
            elif isinstance(ev, h2.events.DataReceived):
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    st.body += ev.data
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                st = self.streams.pop(ev.stream_id, None)
                if st is not None:
                    self._respond(ev.stream_id, st)
            elif isinstance(ev, h2.events.StreamReset):
                self.streams.pop(ev.stream_id, None)
                self.pending.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.WindowUpdated):
                self.flush_pending()
            elif isinstance(ev, h2.events.PingReceived):  # h2 queues the PING ACK itself
                with self.server._lock:
                    self.server.pings += 1
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.transport.write(self.h2.data_to_send())
                self.transport.close()
                return
        out = self.h2.data_to_send()
        if out:
            self.transport.write(out)
        self.proven = self.proven or self.authenticated

    def _respond(self, stream_id: int, st: _Stream) -> None:
        server = self.server
        self.answered_in_read += 1
        try:
            req, resp = server._handle(self, stream_id, st)
        except Exception as exc:  # a bug in the emulator: answer 500 rather than hang the client
            req = APNsRequest(self.conn_id, stream_id, st.headers.get(":method", ""), st.headers.get(":path", ""),
                              None, st.headers, bytes(st.body), None, time=server.clock())
            resp = APNsResponse(500, "InternalServerError", {"x-emulator-error": repr(exc)[:200]})
        if resp is HANG:
            server.requests.append(req)
            return
        apns_id = None if resp.reason == "BadMessageId" else st.headers.get("apns-id")
        apns_id = apns_id or str(uuid.uuid4()).upper()
        req.status, req.reason, req.apns_id = resp.status, resp.reason, apns_id
        server.requests.append(req)

        headers = [(":status", str(resp.status)), ("apns-id", apns_id)]
        body = b""
        if resp.reason is not None:
            err: dict[str, Any] = {"reason": resp.reason}
            if resp.status == 410:
                err["timestamp"] = resp.timestamp_ms if resp.timestamp_ms is not None else int(server.clock() * 1000)
            body = json.dumps(err, separators=(",", ":")).encode()
            headers.append(("content-type", "application/json"))
            headers.append(("content-length", str(len(body))))
        headers.extend((k.lower(), str(v)) for k, v in resp.headers.items())
        try:
            self.h2.send_headers(stream_id, headers, end_stream=not body)
            if body:
                self.send_body(stream_id, body)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass  # the client reset the stream meanwhile

    def goaway(self, reason: str) -> None:
        assert self.transport is not None
        self.h2.close_connection(error_code=0, additional_data=json.dumps({"reason": reason}).encode())
        self.transport.write(self.h2.data_to_send())
        self.transport.close()
