"""Netlink sockets used as doorbells: any message means "look again".

We never parse the messages. A ring makes the sensor drain the socket (so a
burst of link, address and route messages costs one re-snapshot) and read the
whole state again; a socket overflow (``ENOBUFS``: the kernel dropped
messages) is handled the same way, since a full snapshot is a full resync.

The socket belongs to the network namespace of the thread that creates it;
see :mod:`triggers.sensors.network` for what that means for tests.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time

NETLINK_ROUTE = 0
NETLINK_KOBJECT_UEVENT = 15

# <linux/rtnetlink.h> legacy multicast group bits (bind() takes a bitmask).
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
ROUTE_GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE

UEVENT_KERNEL_GROUP = 1

_RCVBUF_BYTES = 1 << 20
_READ_BYTES = 1 << 16


class NetlinkDoorbell:
    """A non-blocking netlink socket subscribed to ``groups``.

    :param protocol: ``NETLINK_ROUTE`` (default) or ``NETLINK_KOBJECT_UEVENT``.
    :param groups: multicast group bitmask.
    :param match: optional bytes; with it, only messages containing it ring
        (used to keep only ``SUBSYSTEM=power_supply`` uevents).
    :param rcvbuf_bytes: the socket's receive buffer; when it overflows, the
        next read fails with ``ENOBUFS``, which rings as well (``overflows`` counts them).
    :raises OSError: when the socket cannot be opened (no netlink here).
    """

    def __init__(
        self,
        protocol: int = NETLINK_ROUTE,
        groups: int = ROUTE_GROUPS,
        match: bytes | None = None,
        rcvbuf_bytes: int = _RCVBUF_BYTES,
    ) -> None:
        self.match = match
        self.overflows = 0
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, protocol
        )
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
            self.sock.bind((0, groups))
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> bool:
        """Read everything queued; return whether anything relevant (or an overflow) was seen."""
        rang = False
        while True:
            try:
                data = self.sock.recv(_READ_BYTES)
            except BlockingIOError:
                return rang
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped messages: resync
                    self.overflows += 1
                    rang = True
                    continue
                raise
            if not data:
                return rang
            if self.match is None or self.match in data:
                rang = True

    def close(self) -> None:
        self.sock.close()


class DoorbellWakeups:
    """Wake when the doorbell rings (after a short settle), or every ``poll_s`` as a safety net.

    ``settle_s``: after the first ring, keep draining until the socket has been
    quiet that long (at most ``max_settle_s``) so one reconfiguration (link up,
    address, route) gives one snapshot and no transient state in between.
    """

    def __init__(self, bell: NetlinkDoorbell, poll_s: float, settle_s: float = 0.0, max_settle_s: float = 1.0) -> None:
        if poll_s <= 0:
            raise ValueError("poll_s must be > 0")
        self.bell = bell
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.max_settle_s = max_settle_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._readable = asyncio.Event()

    def _ensure_reader(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self.bell.fileno(), self._readable.set)

    async def wait(self, stop: asyncio.Event) -> bool:
        self._ensure_reader()
        deadline = time.monotonic() + self.poll_s
        while not stop.is_set():
            self._readable.clear()
            if self.bell.drain():
                await self._settle(stop)
                return not stop.is_set()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True  # safety poll
            stopper = asyncio.ensure_future(stop.wait())
            reader = asyncio.ensure_future(self._readable.wait())
            try:
                await asyncio.wait({stopper, reader}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                reader.cancel()
        return False

    async def _settle(self, stop: asyncio.Event) -> None:
        if self.settle_s <= 0:
            return
        end = time.monotonic() + self.max_settle_s
        while not stop.is_set() and time.monotonic() < end:
            self._readable.clear()
            try:
                await asyncio.wait_for(self._readable.wait(), self.settle_s)
            except TimeoutError:
                return
            self.bell.drain()

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.bell.fileno())
        self.bell.close()
