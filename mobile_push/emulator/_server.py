"""Shared machinery of the push-service emulators.

``LoopThreadServer`` runs an asyncio server on 127.0.0.1 (a free port, or the one asked) inside
its own event loop on a daemon thread, so an emulator can be started and stopped
from synchronous pytest fixtures (``start()``/``stop()`` or ``with``) and from
async code (``async with``) alike; the caller's event loop is never used.
``stop()`` closes the listening socket, aborts every open connection, waits
for their ``connection_lost`` and joins the thread: nothing is left behind.

``Recorder`` is the thread-safe list of recorded requests, with a condition
variable so a test can wait for N requests without sleeping.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, Self, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Script entry meaning "never answer this request" (to exercise client timeouts).
HANG: Any = type("_Hang", (), {"__repr__": lambda self: "HANG"})()


class Recorder(Generic[T]):
    """A thread-safe, append-only list of recorded requests."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._cond = threading.Condition()
        #: Called with each item after it is recorded (in the server's thread).
        self.listeners: list[Callable[[T], None]] = []
        #: Keep at most this many items (the oldest go): a long-running emulator's bound.
        self.limit: int | None = None

    def append(self, item: T) -> None:
        with self._cond:
            self._items.append(item)
            if self.limit is not None and len(self._items) > self.limit:
                del self._items[: len(self._items) - self.limit]
            self._cond.notify_all()
        for listener in list(self.listeners):
            listener(item)

    def snapshot(self) -> list[T]:
        """A copy of everything recorded so far."""
        with self._cond:
            return list(self._items)

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[T]:
        """Block until at least ``count`` items are recorded; return them all.

        Raises ``TimeoutError`` after ``timeout`` seconds (a safety net, not a
        timing assertion).
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._items) >= count, timeout):
                raise TimeoutError(f"{len(self._items)} of {count} requests after {timeout:g}s")
            return list(self._items)

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self.snapshot())


class TrackedProtocol(asyncio.Protocol):
    """Base protocol that registers itself with its server for clean shutdown."""

    def __init__(self, server: LoopThreadServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = server.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)


class LoopThreadServer:
    """An asyncio server in a private event loop on a daemon thread.

    Subclasses implement ``_make_protocol`` and may override ``_ssl_context``,
    ``_before_start`` and ``_after_stop``.
    """

    host = "127.0.0.1"
    scheme = "http"

    def __init__(self, port: int = 0) -> None:
        self.port = 0
        self._listen_port = port  # 0: a free one
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[TrackedProtocol] = set()

    # -- to override -------------------------------------------------------
    def _make_protocol(self) -> asyncio.Protocol:
        raise NotImplementedError

    def _ssl_context(self) -> ssl.SSLContext | None:
        return None

    def _before_start(self) -> None:
        """Runs in the caller's thread before the loop starts (e.g. make certificates)."""

    def _after_stop(self) -> None:
        """Runs in the caller's thread after the loop thread has ended."""

    # -- lifecycle -----------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._loop

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:<port>`` of the running server."""
        if not self.port:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> Self:
        """Start serving; returns once the socket is listening."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._before_start()
        loop = asyncio.new_event_loop()
        self._loop = loop
        started: concurrent.futures.Future[int] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                try:
                    server = loop.run_until_complete(
                        loop.create_server(self._make_protocol, self.host, self._listen_port, ssl=self._ssl_context())
                    )
                except BaseException as exc:  # report to start(), then exit the thread
                    started.set_exception(exc)
                    return
                self._server = server
                started.set_result(server.sockets[0].getsockname()[1])
                loop.run_forever()
                loop.run_until_complete(self._drain())
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"{type(self).__name__}-loop", daemon=True)
        self._thread.start()
        try:
            self.port = started.result(timeout=30)
        except BaseException:
            self._thread.join(timeout=30)
            self._thread = None
            self._loop = None
            self._after_stop()
            raise
        return self

    async def _drain(self) -> None:
        server = self._server
        if server is not None:
            server.close()
        waits = []
        for proto in list(self._connections):
            if proto.transport is not None:
                proto.transport.abort()
            waits.append(proto.closed)
        if waits:
            await asyncio.wait(waits, timeout=10)
        if server is not None:
            await server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        """Close the socket and every connection, join the thread. Idempotent."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if thread is threading.current_thread():
            raise RuntimeError("stop() called from the server's own loop thread")
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
        self._thread = None
        self._loop = None
        self._server = None
        self.port = 0
        self._after_stop()

    def call_in_loop(self, fn: Callable[[], R], timeout: float = 10.0) -> R:
        """Run ``fn`` in the server's loop thread and return its result."""
        fut: concurrent.futures.Future[R] = concurrent.futures.Future()

        def call() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(call)
        return fut.result(timeout=timeout)

    @property
    def open_connections(self) -> int:
        """How many client connections are open now."""
        return self.call_in_loop(lambda: len(self._connections))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)


class H2BodySender:
    """Response bodies of a server-side HTTP/2 connection within the client's flow-control
    window: what does not fit waits in ``pending`` until a WINDOW_UPDATE (``flush_pending``).
    Both emulators answer with it; ``h2`` is their ``h2.connection.H2Connection``."""

    h2: Any
    pending: dict[int, bytes]

    def send_body(self, stream_id: int, body: bytes) -> None:
        window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
        if window >= len(body):
            self.h2.send_data(stream_id, body, end_stream=True)
            return
        if window > 0:
            self.h2.send_data(stream_id, body[:window])
            body = body[window:]
        self.pending[stream_id] = body

    def flush_pending(self) -> None:
        import h2.exceptions

        for stream_id, body in list(self.pending.items()):
            del self.pending[stream_id]
            try:
                self.send_body(stream_id, body)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass  # the client reset the stream meanwhile
