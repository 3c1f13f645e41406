"""APNs sender: Apple's HTTP/2 provider API with token (ES256 JWT) authentication.

``build_apns_request`` is pure (path, headers, body of one background push);
``ApnsSender`` only talks to the network, over ONE HTTP/2 connection that
carries every request as a concurrent stream, bounded by a semaphore.

Background push, per Apple ("Pushing background updates to your App"):
``apns-push-type: background``, ``apns-priority: 5`` (10 with only
content-available is an error), ``apns-topic`` = the app's bundle id (the
target's ``topic``; without one the message is a CONFIG result, never sent),
``apns-expiration`` = now + ttl (``0``: deliver once or drop), optional
``apns-collapse-id`` (at most 64 bytes), ``apns-id`` = the message's
``push_id`` (a UUID; one is made when absent). Body
``{"aps": {"content-available": 1}, "bgtasks": {...}}`` (:mod:`mobile_push.payload`).

Provider token: one JWT (header ``kid``, claims ``iss`` = team id, ``iat``)
shared by every request, signed again when older than 50 minutes (Apple
rejects tokens older than 60 minutes with 403 ExpiredProviderToken, and
answers 429 TooManyProviderTokenUpdates to changes more frequent than every
20 minutes, so a refresh at 50 never trips either). When APNs still answers
403 ExpiredProviderToken (clock drift, a token Apple dropped), the token is
signed again once — requests rejected with the same token share that one
renewal — and that message is resent once; the resend is part of the same
attempt, not a transient retry. A second expiry answer is a CONFIG result
(the host clock is wrong).

Two HTTP/2 engines, same behaviour, one contract test suite:

* ``engine="h2"`` (default): a small client on the ``h2`` state machine
  (:class:`_H2Client`). Measured by ``bench/push.py``: httpx costs about 1 ms
  of client CPU per request (httpcore's per-request locks and events, one
  socket write per frame, Huffman-coding the 200-byte JWT on every request),
  which caps one process near 1,000 msg/s; this client writes every frame
  queued in one event-loop turn with a single ``write`` and sends header
  literals without Huffman coding (a few more bytes, far less CPU), about
  0.2 ms per request. It handles what APNs does: a new connection waits
  for the server's SETTINGS and sends one request until APNs has accepted a
  provider token on it (APNs allows one stream until then), then up to the
  server's MAX_CONCURRENT_STREAMS; flow control, RST_STREAM, GOAWAY (streams the
  server did not process fail as transport errors, the next request opens a
  new connection), per-request timeouts, ALPN ``h2`` over TLS (``http://``:
  h2c prior knowledge for local servers). No proxy support.
* ``engine="httpx"``, or an injected ``client``: ``httpx.AsyncClient(http2=True,
  http1=False)`` (proxies, ``httpx.MockTransport`` in tests). Its first request,
  and the first after a transport error, goes alone; a connection httpx's pool
  opens on its own may still start with several streams.

Secrets: the private key is loaded once from the ``.p8`` file and kept as a
key object; its bytes, the JWT and the file's content never appear in logs,
errors or reprs. ``hpack`` logs whole encoded header blocks at DEBUG, which
would include the ``authorization`` header: a filter on that logger drops
those records (installed once, when the first sender is made).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mobile_push.classify import Verdict, classify_apns, classify_transport_error, to_result
from mobile_push.payload import PayloadTooLarge, apns_body_bytes, check_message
from mobile_push.senders._h2 import (
    ApnsConnectionError,
    _H2Client,
    _HttpxClient,
    _install_hpack_filter,
)
from mobile_push.types import OutcomeKind, PushMessage, SendResult, Transport

__all__ = [
    "APNS_URLS", "TOKEN_REFRESH_AFTER_S", "TOKEN_MIN_UPDATE_INTERVAL_S", "MAX_COLLAPSE_ID_BYTES", "ApnsRequest",
    "ApnsRequestError", "ApnsConnectionError", "build_apns_request", "ProviderToken", "ApnsSender",
]

log = logging.getLogger(__name__)

APNS_URLS = {"production": "https://api.push.apple.com", "sandbox": "https://api.sandbox.push.apple.com"}
#: Sign a new provider token when the current one is this old (Apple: at most 60 min).
TOKEN_REFRESH_AFTER_S = 50 * 60
#: Apple answers 429 TooManyProviderTokenUpdates to changes more frequent than this.
TOKEN_MIN_UPDATE_INTERVAL_S = 20 * 60
MAX_COLLAPSE_ID_BYTES = 64

_HEX_TOKEN = re.compile(r"^[0-9a-fA-F]{2,200}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


# ------------------------------------------------------------------ the request


class ApnsRequestError(ValueError):
    """A message that cannot become a valid APNs request; ``kind`` and ``reason`` classify it."""

    def __init__(self, kind: OutcomeKind, reason: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class ApnsRequest:
    """One background push as it goes on the wire (without the ``authorization`` header)."""

    path: str
    headers: dict[str, str]
    body: bytes
    apns_id: str


def build_apns_request(message: PushMessage, *, now_s: float) -> ApnsRequest:
    """Path, headers and body of ``message`` (pure; ``now_s`` sets ``apns-expiration``).

    Raises:
        ApnsRequestError: INVALID_TOKEN for a token that is not hex (Apple would
            answer BadDeviceToken; checking here also keeps the token out of the
            URL's structure), CONFIG for a missing topic, a collapse key over 64
            bytes, a ``push_id`` that is not a UUID.
        PayloadTooLarge: the body is over 4096 bytes.
    """
    target = message.target
    if target.transport is not Transport.APNS:
        raise ValueError(f"message for device {target.device_id!r} is for {target.transport.value}, not apns")
    if not _HEX_TOKEN.match(target.token) or len(target.token) % 2:
        raise ApnsRequestError(OutcomeKind.INVALID_TOKEN, "BadDeviceToken",
                               "APNs device tokens are hexadecimal: the device is marked invalid")
    if not target.topic:
        raise ApnsRequestError(OutcomeKind.CONFIG, "MissingTopic",
                               f"device {target.device_id!r} has no APNs topic: register it with the app's "
                               "bundle id as topic")
    headers = {
        "apns-push-type": "background",
        "apns-priority": "5",
        "apns-topic": target.topic,
        "apns-expiration": str(int(now_s + message.ttl_s)) if message.ttl_s > 0 else "0",
    }
    if message.collapse_key is not None:
        if len(message.collapse_key.encode()) > MAX_COLLAPSE_ID_BYTES:
            raise ApnsRequestError(OutcomeKind.CONFIG, "BadCollapseId",
                                   f"collapse_key: {len(message.collapse_key.encode())} bytes, APNs allows "
                                   f"{MAX_COLLAPSE_ID_BYTES}")
        headers["apns-collapse-id"] = message.collapse_key
    apns_id = message.push_id or str(uuid.uuid4())
    if not _UUID.match(apns_id):
        raise ApnsRequestError(OutcomeKind.CONFIG, "BadMessageId", f"push_id: {apns_id!r} is not a UUID")
    headers["apns-id"] = apns_id
    check_message(message)
    return ApnsRequest(f"/3/device/{target.token}", headers, apns_body_bytes(message.payload), apns_id)


# ------------------------------------------------------------ provider token


class ProviderToken:
    """The ES256 provider JWT: one reused, renewed after 50 min or once after an expiry answer.

    Thread-safe (a lock around signing); ``issued`` counts the tokens signed.
    """

    def __init__(self, key: ec.EllipticCurvePrivateKey, key_id: str, team_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self.key_id = key_id
        self.team_id = team_id
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._iat = 0.0
        self.issued = 0

    def __repr__(self) -> str:
        return f"ProviderToken(key_id={self.key_id!r}, team_id={self.team_id!r}, issued={self.issued})"

    def _sign(self) -> str:
        now = self._clock()
        token = jwt.encode({"iss": self.team_id, "iat": int(now)}, self._key, algorithm="ES256",
                           headers={"kid": self.key_id})
        self._token, self._iat = token, now
        self.issued += 1
        return token

    def current(self) -> str:
        """The token to send now: the same one until it is 50 minutes old."""
        with self._lock:
            if self._token is None or self._clock() - self._iat >= TOKEN_REFRESH_AFTER_S:
                if self._token is not None:
                    log.info("APNs provider token renewed (key id %s, %.0f min old)", self.key_id,
                             (self._clock() - self._iat) / 60)
                return self._sign()
            return self._token

    def renew_rejected(self, rejected: str) -> str:
        """After 403 ExpiredProviderToken for ``rejected``: sign a new token unless that was done already.

        Apple does not count an update after a rejected token against the
        20-minute rule; requests rejected with the same token share one renewal.
        """
        with self._lock:
            if self._token == rejected or self._token is None:
                log.info("APNs answered ExpiredProviderToken: provider token renewed (key id %s)", self.key_id)
                return self._sign()
            return self._token


def _load_key(key_file: Path) -> ec.EllipticCurvePrivateKey:
    try:
        data = Path(key_file).read_bytes()
    except OSError as exc:
        raise ValueError(f"BGTASKS_PUSH_APNS_KEY_FILE: cannot read {key_file} ({exc.strerror})") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        key = None
    finally:
        del data
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"BGTASKS_PUSH_APNS_KEY_FILE: {key_file} is not an APNs auth key (a PEM P-256 private "
                         "key, Apple's AuthKey_<key id>.p8)")
    return key


def _other(environment: str) -> str:
    return "sandbox" if environment == "production" else "production"


def _url(url: str, setting: str) -> str:
    url = url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        raise ValueError(f"{setting}: {url!r} is not an http(s)://host[:port] URL")
    return url


class ApnsSender:
    """Sends background pushes to APNs directly (token auth). One attempt per message.

    Args:
        key_file: Apple's ``AuthKey_<key id>.p8`` (``BGTASKS_PUSH_APNS_KEY_FILE``).
        key_id: the key's id (JWT ``kid``).
        team_id: the developer team id (JWT ``iss``).
        environment: ``production`` (api.push.apple.com) or ``sandbox``.
        base_url: overrides the environment's URL (tests, proxies).
        ca_file: a CA bundle trusted in addition to certifi's (tests).
        max_concurrency: requests in flight at once (HTTP/2 streams).
        timeout_s: connect timeout, and how long one request may wait for its answer.
        engine: ``h2`` (default) or ``httpx`` (see the module docstring).
        client: an ``httpx.AsyncClient`` to use (implies ``engine="httpx"``; not closed by ``aclose``).
        clock: seconds since the epoch, for ``iat`` and ``apns-expiration`` (tests).

    A connection belongs to the event loop that opened it: a send from another loop opens a new one
    (and closes the old one in its loop if that loop still runs).
    """

    transport = Transport.APNS

    def __init__(
        self,
        key_file: Path | str,
        key_id: str,
        team_id: str,
        *,
        environment: Literal["production", "sandbox"] = "production",
        base_url: str | None = None,
        other_base_url: str | None = None,
        ca_file: Path | str | None = None,
        max_concurrency: int = 256,
        timeout_s: float = 30.0,
        engine: Literal["h2", "httpx"] = "h2",
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (("key_id", key_id), ("team_id", team_id)):
            if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
                raise ValueError(f"BGTASKS_PUSH_APNS_{name.upper()}: expected Apple's 10-character id, got {value!r}")
        if environment not in APNS_URLS:
            raise ValueError(f"BGTASKS_PUSH_APNS_ENVIRONMENT: {environment!r} is not production or sandbox")
        if engine not in ("h2", "httpx"):
            raise ValueError(f"engine: {engine!r} is not h2 or httpx")
        if max_concurrency < 1 or timeout_s <= 0:
            raise ValueError("max_concurrency and timeout_s: must be positive")
        other = _other(environment)
        self.base_urls = {environment: _url(base_url or APNS_URLS[environment], "BGTASKS_PUSH_APNS_BASE_URL"),
                          other: _url(other_base_url or APNS_URLS[other], "BGTASKS_PUSH_APNS_OTHER_BASE_URL")}
        self.environment = environment
        self.base_url = self.base_urls[environment]
        self.max_concurrency = max_concurrency
        self.engine = "httpx" if client is not None else engine
        self._clock = clock
        self.tokens = ProviderToken(_load_key(Path(key_file)), key_id, team_id, clock)
        _install_hpack_filter()
        ctx: ssl.SSLContext | None = None
        if ca_file is not None or self.engine == "h2":
            import certifi

            ctx = ssl.create_default_context(cafile=certifi.where())
            if ca_file is not None:
                ctx.load_verify_locations(cafile=str(ca_file))
        if ctx is not None and self.engine == "h2":
            ctx.set_alpn_protocols(["h2"])
        self._ctx = ctx
        self._timeout_s = timeout_s
        self._injected = client
        self._clients: dict[str, _H2Client | _HttpxClient] = {}  # by environment, opened on first use
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        # httpx's client opens streams before the server's SETTINGS arrive: its first request
        # goes alone (APNs allows one stream until it has seen a valid token). The h2 engine
        # does this per connection itself.
        self._first: dict[str, asyncio.Lock] | None = None  # by environment (each is a connection)
        self._proven: set[str] = set()
        self._closed = False

    def _client(self, environment: str) -> _H2Client | _HttpxClient:
        if environment not in self._clients:
            self._clients[environment] = self._make_http(self.base_urls[environment])
        return self._clients[environment]

    def _make_http(self, url: str) -> _H2Client | _HttpxClient:
        if self.engine == "h2":
            assert self._ctx is not None
            return _H2Client(url, self._ctx, self._timeout_s)
        if self._injected is not None:
            return _HttpxClient(url, self._injected, owned=False)
        return _HttpxClient(url, httpx.AsyncClient(
            http1=False, http2=True, verify=self._ctx if self._ctx is not None else True,
            timeout=httpx.Timeout(self._timeout_s), limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        ), owned=True)

    def _bind_loop(self) -> None:
        """A connection belongs to the loop that opened it: a send from another loop gets a new one."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None:
            old, old_loop = list(self._clients.values()), self._loop
            if old_loop.is_running() and not old_loop.is_closed():
                for client in old:
                    asyncio.run_coroutine_threadsafe(client.aclose(), old_loop)
            self._clients = {}
        self._loop = loop
        self._sem = asyncio.Semaphore(self.max_concurrency)
        self._first, self._proven = ({} if self.engine == "httpx" else None), set()

    def __repr__(self) -> str:
        return (f"ApnsSender(environment={self.environment!r}, base_url={self.base_url!r}, engine={self.engine!r}, "
                f"key_id={self.tokens.key_id!r}, team_id={self.tokens.team_id!r})")

    async def send(self, messages: Sequence[PushMessage]) -> list[SendResult]:
        """One attempt per message, concurrently (at most ``max_concurrency`` in flight)."""
        if self._closed:
            raise RuntimeError("ApnsSender.send after aclose()")
        for m in messages:
            if m.target.transport is not Transport.APNS:
                raise ValueError(f"message for device {m.target.device_id!r} is for {m.target.transport.value}, "
                                 "this sender is apns")
        self._bind_loop()
        if len(messages) == 1:
            return [await self._send_one(messages[0])]
        return list(await asyncio.gather(*(self._send_one(m) for m in messages)))

    async def _send_one(self, message: PushMessage) -> SendResult:
        try:
            req = build_apns_request(message, now_s=self._clock())
        except ApnsRequestError as exc:
            return to_result(message, Verdict(exc.kind, exc.reason, str(exc)))
        except PayloadTooLarge as exc:
            return to_result(message, Verdict(OutcomeKind.CONFIG, "PayloadTooLarge", str(exc)))
        assert self._sem is not None
        extra: dict[str, str] = {}
        environment = message.target.environment or self.environment
        async with self._sem:
            token = self.tokens.current()
            answer = await self._post(req, token, environment)
            if isinstance(answer, tuple) and answer[0] == 403 and answer[1] == "ExpiredProviderToken":
                extra["providerTokenRenewed"] = "1"
                token = self.tokens.renew_rejected(token)
                answer = await self._post(req, token, environment)
            if isinstance(answer, tuple) and answer[0] == 400 and answer[1] == "BadDeviceToken":
                # Usually a development build's token sent to production or the reverse: the
                # other environment is tried once before the device is marked invalid.
                other = _other(environment)
                second = await self._post(req, token, other)
                if isinstance(second, tuple) and second[0] == 200:
                    answer, extra["apnsEnvironment"] = second, other
        if isinstance(answer, BaseException):
            return to_result(message, classify_transport_error(answer, "APNs"), extra=extra)
        status, reason, retry_after, apns_id, body = answer
        if status == 410 and isinstance(body.get("timestamp"), int):
            extra["unregisteredAtMs"] = str(body["timestamp"])
        return to_result(message, classify_apns(status, reason, retry_after), message_id=apns_id or req.apns_id,
                         extra=extra)

    async def _post(self, req: ApnsRequest, token: str, environment: str
                    ) -> tuple[int, str | None, str | None, str | None, dict[str, Any]] | BaseException:
        if self._first is not None and environment not in self._proven:
            async with self._first.setdefault(environment, asyncio.Lock()):
                if environment not in self._proven:
                    answer = await self._post_now(req, token, environment)
                    if isinstance(answer, tuple) and answer[0] != 403:
                        self._proven.add(environment)
                    return answer
        answer = await self._post_now(req, token, environment)
        if self._first is not None and isinstance(answer, BaseException):
            self._proven.discard(environment)  # the connection may be new next time: one request first
        return answer

    async def _post_now(self, req: ApnsRequest, token: str, environment: str
                        ) -> tuple[int, str | None, str | None, str | None, dict[str, Any]] | BaseException:
        headers = dict(req.headers)
        headers["authorization"] = f"bearer {token}"
        try:
            answer = await self._client(environment).request(req.path, headers, req.body)
        except (OSError, httpx.HTTPError, h2.exceptions.H2Error) as exc:  # connect, TLS, timeout, reset, GOAWAY
            return exc
        body: dict[str, Any] = {}
        if answer.status != 200 and answer.body:
            try:
                parsed = json.loads(answer.body)
                body = parsed if isinstance(parsed, dict) else {}
            except ValueError:
                body = {}
        reason = body.get("reason") if isinstance(body.get("reason"), str) else None
        return answer.status, reason, answer.headers.get("retry-after"), answer.headers.get("apns-id"), body

    async def keepalive(self) -> None:
        """Keep an idle connection open (HTTP/2 PING; the h2 engine). A closed one is opened
        again by the next send."""
        if self._loop is asyncio.get_running_loop():
            for client in self._clients.values():
                if isinstance(client, _H2Client):
                    client.ping()

    async def aclose(self) -> None:
        """Close the HTTP/2 connection (an injected httpx client is left open)."""
        self._closed = True
        loop = self._loop
        for client in list(self._clients.values()):
            if loop is None or loop is asyncio.get_running_loop():
                await client.aclose()
            elif loop.is_running():  # opened by a loop in another thread: close it there
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(client.aclose(), loop))
