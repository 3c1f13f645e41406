"""FCM sender: firebase-admin 7.7 builds, validates, encodes and authenticates; data-only messages,
one attempt per message.

Two engines carry the requests (``BGTASKS_PUSH_FCM_ENGINE``):

* ``h2`` (default): every message on one HTTP/2 connection to FCM, as many
  streams at once as the server allows, on the small client the APNs sender
  uses (:mod:`mobile_push.senders._h2`). The body is firebase-admin's own
  encoding of the message (``_MessagingService.encode_message``), the headers
  its own (the access token of its credential, the API format version), and
  the answer is classified from FCM's status and error body. firebase-admin's
  httpx path costs about 1-2 ms of CPU per message; this one a fraction of
  it (docs/performance.md). PING keeps the connection open between runs.
* ``sdk``: firebase-admin's ``send_each_async`` (httpx), as described below.

Messages (``build_fcm_message``, pure): ``data`` = the payload map (strings);
Android devices get ``android`` = priority ``normal`` (``high`` only when the
message asks: FCM deprioritises high-priority messages that show no
notification), ``ttl``, ``collapse_key``; iOS devices registered with FCM get
``apns`` = headers ``apns-push-type: background``, ``apns-priority: 5``,
``apns-expiration``, ``apns-collapse-id`` and ``aps.content-available = 1``
(no alert, sound or badge). :func:`mobile_push.payload.fcm_message` is the
same object as plain JSON, used for the size check; a test pins the two equal.

Token or FID: a Firebase installation ID is 22 characters of base64url whose
first character is ``c``, ``d``, ``e`` or ``f`` (its first four bits are
``0111``); an FCM registration token is much longer (~150+ characters,
usually ``<fid>:APA91b...``). firebase-admin 7.7 prefers ``Message(fid=...)``
and deprecates ``token=``; a registration token goes in the ``token`` field
the v1 API has always had (set as an attribute after construction, which is
what the encoder reads, so no DeprecationWarning is raised per message).

The SDK's own retries are switched off, so :mod:`mobile_push.delivery` is the
only retry loop for every transport:

* async path (the one used): ``_MessagingService._async_client`` is replaced
  by the SDK's own ``HttpxAsyncClient`` built with
  ``retry_config=HttpxRetry(max_retries=0)``. The default one retries 500 and
  503 four times (about 7 s) inside a single "attempt".
* sync path (not used by bgtasks, guarded anyway): the ``requests`` session's
  adapters are remounted with ``Retry(total=0, respect_retry_after_header=
  False)``; the default one sleeps a ``Retry-After`` of up to hours.

Both hooks are private attributes of firebase-admin 7.7 (pinned ``<8``);
``_install_hooks`` raises if they change shape, and the integration tests
fail if either stops working (a scripted 503 must reach the fake exactly once).

One firebase app per process per (credentials file, send URL): apps live in a
module-level registry and are never deleted (``delete_app`` runs
``asyncio.run()`` inside, which fails in a running loop). The async HTTP
client is bound to the event loop that uses it: a sender used from a new loop
installs a fresh no-retry client (the old loop's connections go with it). A
new key under the same path needs a new process.

The OAuth access token is refreshed in a worker thread before each send when
it is missing or about to expire (google-auth's refresh is a blocking HTTP
call); the SDK still refreshes by itself on a 401 (at most twice), which only
happens when the key or the project is misconfigured.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import ssl
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import firebase_admin
import h2.exceptions
import requests.adapters
from firebase_admin import _http_client, _retry, credentials, exceptions, messaging
from google.auth.transport import requests as google_auth_requests
from urllib3.util.retry import Retry

from mobile_push.classify import (
    Verdict,
    classify_fcm,
    classify_fcm_answer,
    classify_fcm_exception,
    fcm_error_details,
    to_result,
)
from mobile_push.senders._h2 import ApnsConnectionError, _H2Client, _install_hpack_filter
from mobile_push.payload import PayloadTooLarge, check_message
from mobile_push.types import OutcomeKind, Platform, PushMessage, SendResult, Transport

__all__ = ["FcmSender", "build_fcm_message", "is_fid", "apns_expiration"]

_FID = re.compile(r"^[cdef][A-Za-z0-9_-]{21}$")
_NO_RETRY_ASYNC = _retry.HttpxRetry(max_retries=0)
#: FCM HTTP v1's send endpoint.
FCM_SEND_URL = "https://fcm.googleapis.com/v1/projects/{project}/messages:send"
#: What firebase-admin's own requests carry besides the token and its service's _fcm_headers
#: (the API format version 2 and the SDK's name): its version, for Google's metrics.
_SDK_HEADERS = {k.lower(): v for k, v in _http_client.METRICS_HEADERS.items()}


def is_fid(token: str) -> bool:
    """A Firebase installation ID (22 base64url characters starting with c/d/e/f), not a registration token."""
    return bool(_FID.match(token))


def apns_expiration(now_s: float, ttl_s: float) -> int:
    """``apns-expiration`` for a push sent at ``now_s`` that may wait ``ttl_s``; 0 = deliver once or drop."""
    return int(now_s + ttl_s) if ttl_s > 0 else 0


def build_fcm_message(message: PushMessage, *, now_s: float) -> messaging.Message:
    """The firebase-admin ``Message`` of one silent push (pure; see the module docstring)."""
    target = message.target
    if target.transport is not Transport.FCM:
        raise ValueError(f"message for device {target.device_id!r} is for {target.transport.value}, not fcm")
    android = apns = None
    if target.platform is Platform.ANDROID:
        android = messaging.AndroidConfig(collapse_key=message.collapse_key,
                                          priority="high" if message.high_priority else "normal",
                                          ttl=message.ttl_s)
    else:
        headers = {"apns-push-type": "background", "apns-priority": "5",
                   "apns-expiration": str(apns_expiration(now_s, message.ttl_s))}
        if message.collapse_key is not None:
            headers["apns-collapse-id"] = message.collapse_key
        apns = messaging.APNSConfig(headers=headers,
                                    payload=messaging.APNSPayload(aps=messaging.Aps(content_available=True)))
    token = target.token
    options = messaging.FCMOptions(analytics_label=message.analytics_label) if message.analytics_label else None
    if is_fid(token):
        return messaging.Message(data=dict(message.payload), android=android, apns=apns, fid=token,
                                 fcm_options=options)
    msg = messaging.Message(data=dict(message.payload), android=android, apns=apns, fcm_options=options)
    msg.token = token  # the v1 "token" field; see the module docstring
    return msg


# ------------------------------------------------------------------ app registry


class _TimeoutRequest(google_auth_requests.Request):
    """google-auth's transport with our timeout instead of its 120 s default."""

    def __init__(self, timeout_s: float, ca_file: Path | str | None = None) -> None:
        super().__init__()
        self._timeout_s = timeout_s
        self._verify = str(ca_file) if ca_file is not None else None  # a local FCM's token endpoint

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                 timeout: Any = None, **kwargs: Any) -> Any:
        if self._verify is not None:  # per request: REQUESTS_CA_BUNDLE would beat the session's
            kwargs.setdefault("verify", self._verify)
        return super().__call__(url, method, body, headers, timeout=timeout or self._timeout_s,  # type: ignore[no-untyped-call]
                                **kwargs)


@dataclass
class _AppEntry:
    app: firebase_admin.App
    timeout_s: float
    refresh_lock: threading.Lock = field(default_factory=threading.Lock)
    loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
    users: int = 0


_REGISTRY: dict[tuple[str, str | None], _AppEntry] = {}
_REGISTRY_LOCK = threading.Lock()


def _service(app: firebase_admin.App) -> Any:
    return messaging._get_messaging_service(app)


def _install_hooks(entry: _AppEntry, fcm_url: str | None) -> None:
    """Point the app at ``fcm_url`` and switch off the SDK's retries (sync and async paths)."""
    service = _service(entry.app)
    if not isinstance(getattr(service, "_fcm_url", None), str) or not isinstance(
            getattr(service, "_async_client", None), _http_client.HttpxAsyncClient) or not isinstance(
            getattr(service, "_fcm_headers", None), dict) or not callable(
            getattr(messaging._MessagingService, "encode_message", None)):
        raise RuntimeError("firebase-admin's messaging internals changed (_fcm_url/_async_client/_fcm_headers/"
                           "encode_message): bgtasks "
                           "supports firebase-admin 7.7; pin it or update mobile_push/senders/fcm.py")
    if fcm_url is not None:
        service._fcm_url = fcm_url
    _install_async_client(entry)
    session = service._client.session
    no_retry = Retry(total=0, connect=0, read=0, status=0, redirect=0, raise_on_status=False,
                     respect_retry_after_header=False)
    prefixes = set(session.adapters)
    parts = re.match(r"^(https?://[^/]+)", service._fcm_url)
    if parts:
        prefixes.add(parts.group(1))
    for prefix in prefixes:
        session.mount(prefix, requests.adapters.HTTPAdapter(pool_connections=100, pool_maxsize=100,
                                                            max_retries=no_retry))


def _install_async_client(entry: _AppEntry) -> None:
    service = _service(entry.app)
    service._async_client = _http_client.HttpxAsyncClient(
        credential=service._credential, timeout=entry.timeout_s, retry_config=_NO_RETRY_ASYNC)


def _app_entry(credentials_file: Path, fcm_url: str | None, app_name: str | None, timeout_s: float) -> _AppEntry:
    key = (str(credentials_file.resolve()), fcm_url)
    with _REGISTRY_LOCK:
        entry = _REGISTRY.get(key)
        if entry is not None:
            return entry
        try:
            cred = credentials.Certificate(str(credentials_file))
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not a service-account key file"
            raise ValueError(f"BGTASKS_PUSH_FCM_CREDENTIALS_FILE: {credentials_file}: {why} (download one from "
                             "the Firebase console, Project settings > Service accounts)") from None
        name = app_name or "bgtasks-fcm-" + hashlib.sha256("\0".join(map(str, key)).encode()).hexdigest()[:16]
        try:
            app = firebase_admin.initialize_app(cred, {"httpTimeout": timeout_s}, name=name)
        except ValueError:  # the name is taken: an app someone else initialised
            app = firebase_admin.get_app(name)
        entry = _AppEntry(app, timeout_s)
        _install_hooks(entry, fcm_url)
        _REGISTRY[key] = entry
        return entry


# ------------------------------------------------------------------------ sender


class FcmSender:
    """Sends silent pushes through FCM HTTP v1 with firebase-admin. One attempt per message.

    Args:
        credentials_file: the Firebase service-account JSON (``BGTASKS_PUSH_FCM_CREDENTIALS_FILE``).
        fcm_url: overrides the ``messages:send`` URL (tests, proxies).
        chunk_size: messages per ``send_each_async`` call (<= 500; FACTS: its
            connection pool degrades with hundreds queued, so 100 or fewer).
        app_name: the firebase app's name (default: derived from the file and URL).
        timeout_s: HTTP timeout of one request and of a token refresh.
    """

    transport = Transport.FCM

    def __init__(self, credentials_file: Path | str, *, fcm_url: str | None = None, chunk_size: int = 100,
                 app_name: str | None = None, timeout_s: float = 30.0, engine: Literal["h2", "sdk"] = "h2",
                 ca_file: Path | str | None = None) -> None:
        if not 1 <= chunk_size <= 500:
            raise ValueError(f"chunk_size: must be within 1..500, got {chunk_size}")
        if fcm_url is not None and not re.match(r"^https?://[^/]+/", fcm_url):
            raise ValueError(f"BGTASKS_PUSH_FCM_URL: {fcm_url!r} is not an absolute http(s) URL")
        if engine not in ("h2", "sdk"):
            raise ValueError(f"BGTASKS_PUSH_FCM_ENGINE: {engine!r} is not h2 or sdk")
        self.credentials_file = Path(credentials_file)
        self.fcm_url = fcm_url
        self.chunk_size = chunk_size
        self.engine = engine
        self._entry = _app_entry(self.credentials_file, fcm_url, app_name, timeout_s)
        self._entry.users += 1
        self._request = _TimeoutRequest(timeout_s, ca_file)
        self._timeout_s = timeout_s
        self._ca_file = ca_file
        self._h2: _H2Client | None = None  # the h2 engine's connection, bound to one event loop
        self._h2_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def app(self) -> firebase_admin.App:
        return self._entry.app

    @property
    def project_id(self) -> str | None:
        project = self._entry.app.project_id
        return project if isinstance(project, str) else None

    def __repr__(self) -> str:
        return (f"FcmSender(project_id={self.project_id!r}, credentials_file={str(self.credentials_file)!r}, "
                f"fcm_url={self.fcm_url!r}, chunk_size={self.chunk_size})")

    def _refresh_token(self, refused: str | None = None) -> None:
        """Refresh when the token is missing or expiring, or is ``refused`` (FCM answered 401 to it)."""
        cred = _service(self._entry.app)._credential
        with self._entry.refresh_lock:
            if not cred.valid or (refused is not None and cred.token == refused):
                cred.refresh(self._request)

    async def _ensure_access_token(self, refused: str | None = None) -> Verdict | None:
        """Refresh the OAuth token off the event loop if needed; a verdict for every message if that fails."""
        try:
            await asyncio.to_thread(self._refresh_token, refused)
        except Exception as exc:  # google.auth RefreshError / TransportError, classified
            return classify_fcm_exception(exceptions.UnknownError("access token refresh failed", cause=exc))
        return None

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        with _REGISTRY_LOCK:
            ref = self._entry.loop
            if ref is None or ref() is not loop:
                _install_async_client(self._entry)
                self._entry.loop = weakref.ref(loop)

    async def send(self, messages: Sequence[PushMessage]) -> list[SendResult]:
        """One attempt per message: chunks of ``chunk_size`` through ``send_each_async``."""
        if self._closed:
            raise RuntimeError("FcmSender.send after aclose()")
        results: list[SendResult | None] = [None] * len(messages)
        ready: list[tuple[int, messaging.Message]] = []
        now = time.time()
        for i, m in enumerate(messages):
            if m.target.transport is not Transport.FCM:
                raise ValueError(f"message for device {m.target.device_id!r} is for {m.target.transport.value}, "
                                 "this sender is fcm")
            try:
                check_message(m)
            except PayloadTooLarge as exc:
                results[i] = to_result(m, Verdict(OutcomeKind.CONFIG, "PayloadTooLarge", str(exc)))
                continue
            ready.append((i, build_fcm_message(m, now_s=now)))
        if ready:
            failed = await self._ensure_access_token()
            if failed is not None:
                for i, _ in ready:
                    results[i] = to_result(messages[i], failed)
            elif self.engine == "h2":
                await self._send_h2(messages, ready, results)
            else:
                self._bind_loop()
                for start in range(0, len(ready), self.chunk_size):
                    chunk = ready[start:start + self.chunk_size]
                    await self._send_chunk(messages, chunk, results)
        out = [r for r in results if r is not None]
        assert len(out) == len(messages)
        return out

    async def _send_chunk(self, messages: Sequence[PushMessage], chunk: list[tuple[int, messaging.Message]],
                          results: list[SendResult | None]) -> None:
        try:
            batch = await messaging.send_each_async([fm for _, fm in chunk], app=self._entry.app)
        except exceptions.FirebaseError as exc:  # the whole chunk failed (e.g. the auth flow raised)
            verdict = classify_fcm_exception(exc)
            for i, _ in chunk:
                results[i] = to_result(messages[i], verdict)
            return
        for (i, _), resp in zip(chunk, batch.responses, strict=True):
            if resp.success:
                results[i] = to_result(messages[i], Verdict(OutcomeKind.DELIVERED, status=200),
                                       message_id=resp.message_id)
            else:
                results[i] = to_result(messages[i], classify_fcm_exception(resp.exception))

    # ---- the h2 engine ----------------------------------------------------------------

    def _url(self) -> str:
        return self.fcm_url or FCM_SEND_URL.format(project=self.project_id)

    def _h2_client(self) -> _H2Client:
        loop = asyncio.get_running_loop()
        if self._h2 is None or self._h2_loop is not loop:  # a connection serves the loop that opened it
            old, old_loop = self._h2, self._h2_loop
            if old is not None and old_loop is not None and old_loop.is_running():
                asyncio.run_coroutine_threadsafe(old.aclose(), old_loop)  # closed where it was opened
            import certifi

            # The CA file of a local FCM replaces the public roots, as it does for the token endpoint.
            ctx = ssl.create_default_context(cafile=str(self._ca_file) if self._ca_file else certifi.where())
            ctx.set_alpn_protocols(["h2"])
            parts = urlsplit(self._url())
            _install_hpack_filter()  # hpack's DEBUG dumps carry the access token
            self._h2 = _H2Client(f"{parts.scheme}://{parts.netloc}", ctx, self._timeout_s)
            self._h2_loop = loop
        return self._h2

    async def _send_h2(self, messages: Sequence[PushMessage], ready: list[tuple[int, messaging.Message]],
                       results: list[SendResult | None]) -> None:
        """Every message on one HTTP/2 connection, as many streams at once as FCM allows; the
        body is firebase-admin's own encoding of the message, the token its credential's."""
        client = self._h2_client()
        path = urlsplit(self._url()).path
        service = _service(self._entry.app)
        encode = messaging._MessagingService.encode_message
        refused: list[tuple[int, messaging.Message]] = []

        async def one(i: int, fm: messaging.Message, token: str, last_try: bool) -> None:
            headers = {"authorization": f"Bearer {token}", "content-type": "application/json; UTF-8",
                       **_SDK_HEADERS, **{k.lower(): v for k, v in service._fcm_headers.items()}}
            body = json.dumps({"message": encode(fm)}, separators=(",", ":")).encode()
            try:
                answer = await client.request(path, headers, body)
            except (ApnsConnectionError, OSError, asyncio.TimeoutError, h2.exceptions.H2Error) as exc:
                results[i] = to_result(messages[i], classify_fcm(None, message=type(exc).__name__))
                return
            if answer.status == 200:
                try:
                    name = json.loads(answer.body).get("name")
                except ValueError:
                    name = None
                results[i] = to_result(messages[i], Verdict(OutcomeKind.DELIVERED, status=200), message_id=name)
                return
            if answer.status == 401 and not last_try and fcm_error_details(answer.body).error_code is None:
                refused.append((i, fm))  # the access token itself was refused: renew it, send again once
                return
            results[i] = to_result(messages[i], classify_fcm_answer(
                answer.status, answer.body, answer.headers.get("retry-after")))

        token = service._credential.token
        await asyncio.gather(*(one(i, fm, token, False) for i, fm in ready))
        if refused:  # as the SDK does on a 401: one refresh, one more try
            failed = await self._ensure_access_token(refused=token)
            if failed is not None:
                for i, _ in refused:
                    results[i] = to_result(messages[i], failed)
                return
            token = service._credential.token
            await asyncio.gather(*(one(i, fm, token, True) for i, fm in refused))

    async def keepalive(self) -> None:
        """Keep an idle HTTP/2 connection open (PING); a closed one is opened again by the next send."""
        if self._h2 is not None and self._h2_loop is asyncio.get_running_loop():
            self._h2.ping()

    async def aclose(self) -> None:
        """Release this sender; the last one in this loop closes the app's HTTP client (the app stays)."""
        if self._closed:
            return
        self._closed = True
        client, loop, self._h2, self._h2_loop = self._h2, self._h2_loop, None, None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()
        elif client is not None and loop is not None and loop.is_running():  # opened by another thread's loop
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(client.aclose(), loop))
        close = None
        with _REGISTRY_LOCK:
            self._entry.users -= 1
            ref = self._entry.loop
            if self._entry.users <= 0 and ref is not None and ref() is asyncio.get_running_loop():
                close = _service(self._entry.app)._async_client
                self._entry.loop = None
        if close is not None:
            await close.aclose()
