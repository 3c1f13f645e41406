"""The APNs sender's HTTP/2 transports (moved out of :mod:`mobile_push.senders.apns`).

``_H2Client``: a small client on the ``h2`` state machine, the default engine
(see the apns module's docstring for why and what it handles); ``_HttpxClient``:
``httpx.AsyncClient(http2=True)`` with the same contract. ``_install_hpack_filter``
keeps hpack's DEBUG records, which carry whole header blocks (the provider
token), out of the logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections import deque
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import httpx
from hpack import Encoder


class _DropHeaderBlocks(logging.Filter):
    """Drops hpack's DEBUG dumps of whole header blocks (they contain the authorization header)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Encoded header block", "Decoding ", "Decoded "))


_HPACK_FILTER = _DropHeaderBlocks()


def _install_hpack_filter() -> None:
    hpack_log = logging.getLogger("hpack.hpack")
    if _HPACK_FILTER not in hpack_log.filters:
        hpack_log.addFilter(_HPACK_FILTER)


# ------------------------------------------------------------ HTTP/2 engines


class ApnsConnectionError(ConnectionError):
    """No answer on the connection: refused, reset, closed, GOAWAY before the stream was processed."""


class _Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class _PlainEncoder(Encoder):
    """HPACK without Huffman coding: literals are copied, not bit-packed in Python (see the module docstring)."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        return super().encode(headers, huffman=False)


class _Stream:
    __slots__ = ("future", "headers", "body", "timer")

    def __init__(self, future: asyncio.Future[_Answer]) -> None:
        self.future = future
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.timer: asyncio.TimerHandle | None = None


class _H2Protocol(asyncio.Protocol):
    """One client HTTP/2 connection; frames queued in one loop turn leave in one write.

    A new connection sends nothing until the server's SETTINGS have arrived, then one
    request: APNs allows a single stream until it has seen a valid provider token (h2
    reports an unlimited stream count before SETTINGS). Once an answer other than 403
    (a token refused) has come back, up to the server's MAX_CONCURRENT_STREAMS are open.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False))
        self._h2.encoder = _PlainEncoder()
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._unsent: dict[int, bytes] = {}  # bodies waiting for flow-control window, in order
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._flush_handle: asyncio.Handle | None = None
        self._settings = asyncio.Event()  # the server's SETTINGS (or the connection's end) arrived
        self.proven = False  # the server has answered a request with an accepted token
        self.closed = False
        self.reason = "connection closed"

    # -- asyncio callbacks -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._h2.initiate_connection()
        transport.write(self._h2.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self._close(f"connection lost{f': {exc}' if exc else ''}")

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._close(f"HTTP/2 protocol error: {exc}")
            if self._transport is not None:
                self._transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.ResponseReceived):
                st = self._streams.get(ev.stream_id)
                if st is not None:
                    st.headers = [(bytes(k), bytes(v)) for k, v in ev.headers or ()]
            elif isinstance(ev, h2.events.DataReceived):
                st = self._streams.get(ev.stream_id)
                if st is not None and ev.data:
                    st.body += ev.data
                self._h2.acknowledge_received_data(ev.flow_controlled_length or 0, ev.stream_id or 0)
            elif isinstance(ev, h2.events.StreamEnded):
                self._finish(ev.stream_id or 0)
            elif isinstance(ev, h2.events.StreamReset):
                self._fail(ev.stream_id or 0, ApnsConnectionError(f"APNs reset the stream (error {ev.error_code})"))
            elif isinstance(ev, h2.events.WindowUpdated):
                self._send_unsent()  # more window: bodies go on; stream capacity is unchanged
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                self._settings.set()
                self._send_unsent()
                self._wake_free()
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self._goaway(ev)
        self._schedule_flush()
        if self.closed and not self._streams and self._transport is not None:  # drained after GOAWAY
            self._loop.call_soon(self._transport.close)

    # -- requests ----------------------------------------------------------------
    def _capacity(self) -> int:
        return self._h2.remote_settings.max_concurrent_streams if self.proven else 1

    async def request(self, headers: list[tuple[bytes, bytes]], body: bytes, timeout_s: float) -> _Answer:
        if not self._settings.is_set():
            try:
                await asyncio.wait_for(self._settings.wait(), timeout_s)
            except TimeoutError:
                raise TimeoutError(f"no HTTP/2 SETTINGS from the server within {timeout_s:g} s") from None
        while not self.closed and len(self._streams) >= self._capacity():
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # it was woken for a free stream it will not use: pass it on
                raise
        if self.closed:
            raise ApnsConnectionError(self.reason)
        try:
            sid = self._h2.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError:
            self._close("stream ids exhausted")
            raise ApnsConnectionError(self.reason) from None
        st = _Stream(self._loop.create_future())
        self._h2.send_headers(sid, headers)  # raises before the stream is ours if h2 refuses it
        self._streams[sid] = st
        self._unsent[sid] = body
        self._send_unsent()
        self._schedule_flush()
        st.timer = self._loop.call_later(timeout_s, self._timeout, sid, timeout_s)
        try:
            return await st.future
        except asyncio.CancelledError:
            self._reset(sid)
            raise
        finally:
            st.timer.cancel()

    def _send_unsent(self) -> None:
        for sid in list(self._unsent):
            if self._h2.outbound_flow_control_window <= 0:
                return
            body = self._unsent[sid]
            try:
                n = min(self._h2.local_flow_control_window(sid), self._h2.max_outbound_frame_size, len(body))
                if n == len(body):
                    self._h2.send_data(sid, body, end_stream=True)
                    del self._unsent[sid]
                elif n > 0:
                    self._h2.send_data(sid, body[:n])
                    self._unsent[sid] = body[n:]
            except h2.exceptions.StreamClosedError:
                del self._unsent[sid]

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _wake_free(self) -> None:
        """Wake as many waiting requests as there are free streams (waking them all, thousands
        at a time on every WINDOW_UPDATE, cost more CPU than the requests themselves)."""
        self._wake(self._capacity() - len(self._streams))

    def _wake(self, n: int = 1) -> None:
        while n > 0 and self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                n -= 1

    def _finish(self, sid: int) -> None:
        st = self._streams.pop(sid, None)
        self._unsent.pop(sid, None)
        if st is None:
            return
        if not st.future.done():
            raw = {k.decode("latin-1"): v.decode("latin-1") for k, v in st.headers}
            status = raw.pop(":status", "")
            if status.isdigit():
                st.future.set_result(_Answer(int(status), raw, bytes(st.body)))
                if not self.proven and int(status) != 403:
                    self.proven = True  # the token was accepted: the server's own limit from now on
                    self._wake_free()
            else:
                st.future.set_exception(ApnsConnectionError("APNs answered without a :status"))
        self._wake()

    def _fail(self, sid: int, exc: BaseException) -> None:
        st = self._streams.pop(sid, None)
        self._unsent.pop(sid, None)
        if st is not None and not st.future.done():
            st.future.set_exception(exc)
        self._wake()

    def _reset(self, sid: int) -> None:
        if self._streams.pop(sid, None) is not None:
            self._unsent.pop(sid, None)
            try:
                self._h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            except h2.exceptions.H2Error:
                pass
            self._schedule_flush()
            self._wake()

    def _timeout(self, sid: int, timeout_s: float) -> None:
        st = self._streams.get(sid)
        self._reset(sid)
        if st is not None and not st.future.done():
            st.future.set_exception(TimeoutError(f"no answer from APNs within {timeout_s:g} s"))

    def _goaway(self, ev: h2.events.ConnectionTerminated) -> None:
        reason = ""
        try:
            reason = str(json.loads(ev.additional_data or b"{}").get("reason", ""))
        except (ValueError, AttributeError):
            pass
        self.closed = True
        self._settings.set()
        self.reason = f"APNs closed the connection (GOAWAY {reason or ev.error_code})"
        last = ev.last_stream_id or 0
        for sid in [s for s in self._streams if s > last]:  # never processed: safe to send again
            self._fail(sid, ApnsConnectionError(self.reason))
        self._wake(len(self._waiters))

    def _close(self, reason: str) -> None:
        if not self.closed:
            self.closed, self.reason = True, reason
        self._settings.set()  # a request waiting for SETTINGS sees the end instead
        for sid in list(self._streams):
            self._fail(sid, ApnsConnectionError(self.reason))
        self._wake(len(self._waiters))

    def ping(self) -> None:
        """An HTTP/2 PING: keeps an idle connection open (APNs closes idle ones)."""
        if not self.closed:
            self._h2.ping(os.urandom(8))
            self._schedule_flush()

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            try:
                self._h2.close_connection()
                self._transport.write(self._h2.data_to_send())
            except h2.exceptions.H2Error:
                pass
            self._transport.close()
        self._close("closed by the client")


class _H2Client:
    """One HTTP/2 connection to ``base_url``, opened on first use and again after it closes."""

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext | None, timeout_s: float) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or ""
        self._tls = parts.scheme == "https"
        self._port = parts.port or (443 if self._tls else 80)
        self._scheme = parts.scheme.encode()
        self._authority = parts.netloc.encode()
        self._ssl = ssl_context
        self._timeout_s = timeout_s
        self._proto: _H2Protocol | None = None
        self._lock: asyncio.Lock | None = None
        self._connects = 0  # connection attempts made
        self._connect_error: BaseException | None = None  # the last one's failure

    async def _connection(self) -> _H2Protocol:
        proto = self._proto
        if proto is not None and not proto.closed:
            return proto
        if self._lock is None:
            self._lock = asyncio.Lock()
        attempt = self._connects
        async with self._lock:
            if self._proto is None or self._proto.closed:
                if self._connects != attempt and self._connect_error is not None:
                    # The connect this request queued behind failed: fail with it rather than try
                    # again, one request after another, each up to the timeout.
                    raise ApnsConnectionError(f"{type(self._connect_error).__name__}: {self._connect_error}")
                self._connects += 1
                try:
                    self._proto = await self._connect()
                except Exception as exc:
                    self._connect_error = exc
                    raise
                self._connect_error = None
            return self._proto

    async def _connect(self) -> _H2Protocol:
        loop = asyncio.get_running_loop()
        ctx = self._ssl if self._tls else None
        transport, proto = await asyncio.wait_for(loop.create_connection(
            lambda: _H2Protocol(loop), self._host, self._port, ssl=ctx,
            server_hostname=self._host if ctx else None), self._timeout_s)
        if ctx is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                proto.close()
                raise ApnsConnectionError(f"{self._host} did not negotiate HTTP/2 (ALPN h2)")
        return proto

    async def request(self, path: str, headers: dict[str, str], body: bytes) -> _Answer:
        proto = await self._connection()
        block = [(b":method", b"POST"), (b":scheme", self._scheme), (b":authority", self._authority),
                 (b":path", path.encode()), (b"content-length", str(len(body)).encode())]
        block.extend((k.encode(), v.encode()) for k, v in headers.items())
        return await proto.request(block, body, self._timeout_s)

    def ping(self) -> None:
        if self._proto is not None:
            self._proto.ping()

    async def aclose(self) -> None:
        if self._proto is not None:
            self._proto.close()
            self._proto = None


class _HttpxClient:
    """The same interface over ``httpx.AsyncClient``."""

    def __init__(self, base_url: str, client: httpx.AsyncClient, owned: bool) -> None:
        self._base_url = base_url
        self._client = client
        self._owned = owned

    async def request(self, path: str, headers: dict[str, str], body: bytes) -> _Answer:
        r = await self._client.post(self._base_url + path, headers=headers, content=body)
        return _Answer(r.status_code, dict(r.headers), r.content)

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()


# ------------------------------------------------------------------------ sender
