"""Senders that live as long as the worker, not the run: one per credential set, shared by
every device-task run through a private Unix socket.

A run is a process of its own (forked per run), so senders it built itself opened a new
TLS connection and signed a new APNs provider token (and fetched a new FCM access token)
every run. Apple treats rapid connect/disconnect as abuse and answers 429
``TooManyProviderTokenUpdates`` when a team's token changes more often than every 20
minutes. The warm worker therefore holds the senders (:class:`PushService`, started by the
``bgtasks.policies.push`` policy) and hands each run the socket's path in
``BGTASKS_PUSH_SOCKET``; the run's :class:`RemoteSender` sends through it. A run without
that variable (the stock process worker, ``bgtasks device test``) builds its own senders,
as before (:func:`senders_for`).

The socket is a file in the bgtasks home, mode 0600: only the user bgtasks runs as can
push through it. One JSON object a line each way::

    -> {"op": "transports"}                      <- {"transports": ["apns", "fcm"]}
    -> {"op": "send", "transport": "apns", "messages": [PushMessage...]}
    <- {"results": [SendResult...]}
    <- {"error": "..."}   (the senders could not be built: a credentials problem, named)

Nothing secret crosses it: messages carry device tokens and the run's payload, as the
push itself does; credentials stay in the worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from bgtasks.settings import PushSettings
from mobile_push.types import OutcomeKind, Platform, PushMessage, PushTarget, Sender, SendResult, Transport

logger = logging.getLogger(__name__)

#: The variable that tells a run where the worker's push service listens.
ENV_SOCKET = "BGTASKS_PUSH_SOCKET"
#: A request line may carry a chunk of messages (each under 4 kB of payload).
LINE_LIMIT = 64 * 1024 * 1024
#: How often idle senders are asked to keep their connections open (HTTP/2 PING).
KEEPALIVE_S = 60.0


# ---------------------------------------------------------------------- wire format
def message_json(m: PushMessage) -> dict[str, Any]:
    return asdict(m)


def message_from(d: dict[str, Any]) -> PushMessage:
    t = d["target"]
    target = PushTarget(t["device_id"], Platform(t["platform"]), Transport(t["transport"]), t["token"], t.get("topic"),
                        t.get("environment"))
    rest = {f.name: d[f.name] for f in fields(PushMessage) if f.name not in ("target", "payload") and f.name in d}
    return PushMessage(target, dict(d["payload"]), **rest)


def result_json(r: SendResult) -> dict[str, Any]:
    out = asdict(r)
    out.pop("message")  # the caller has it: results come back in the order sent
    return out


def result_from(d: dict[str, Any], message: PushMessage) -> SendResult:
    return SendResult(message, OutcomeKind(d["kind"]), d.get("message_id"), d.get("status"), d.get("reason"),
                      d.get("error"), d.get("retry_after_s"), dict(d.get("extra") or {}), d.get("min_backoff_s"))


# ---------------------------------------------------------------------- the service
class PushService:
    """The worker's senders behind a Unix socket (see the module docstring)."""

    def __init__(self, push: PushSettings, path: Path) -> None:
        self.push = push
        self.path = path
        self._senders: dict[Transport, Sender] | None = None
        self._build_error: str | None = None
        self._lock = asyncio.Lock()
        self._server: asyncio.AbstractServer | None = None
        self._keepalive: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # a socket left by a worker that was killed
        old = os.umask(0o177)  # the socket is created 0600: no moment where others may connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=LINE_LIMIT)
        finally:
            os.umask(old)
        self._keepalive = asyncio.create_task(self._keep_alive())

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.path.unlink(missing_ok=True)
        for sender in (self._senders or {}).values():
            try:
                await sender.aclose()
            except Exception:  # noqa: BLE001 - closing: nothing left to do with it
                logger.debug("closing %r failed", sender, exc_info=True)

    async def senders(self) -> dict[Transport, Sender]:
        """Built on first use (a worker that never pushes loads no push library)."""
        async with self._lock:
            if self._senders is None and self._build_error is None:
                from mobile_push.senders import make_senders

                try:
                    self._senders = make_senders(self.push)
                except ValueError as exc:  # a credentials file unreadable, wrong, or open to others
                    self._build_error = str(exc)
            if self._build_error is not None:
                raise ValueError(self._build_error)
            assert self._senders is not None
            return self._senders

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            senders = await self.senders()
        except ValueError as exc:
            return {"error": str(exc)}
        if request.get("op") == "transports":
            return {"transports": sorted(t.value for t in senders)}
        if request.get("op") == "send":
            sender = senders.get(Transport(request["transport"]))
            if sender is None:
                return {"error": f"{request['transport']} is not configured in the worker"}
            results = await sender.send([message_from(m) for m in request["messages"]])
            return {"results": [result_json(r) for r in results]}
        return {"error": f"unknown op {request.get('op')!r}"}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = await self._answer(json.loads(line))
                except Exception as exc:  # noqa: BLE001 - a bad request must not stop the service
                    logger.warning("push service: request failed: %s", type(exc).__name__, exc_info=True)
                    answer = {"error": f"the worker's push service failed: {type(exc).__name__}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            for sender in (self._senders or {}).values():
                ping = getattr(sender, "keepalive", None)
                if ping is not None:
                    try:
                        await ping()
                    except Exception:  # noqa: BLE001 - the next send reconnects
                        logger.debug("keepalive of %r failed", sender, exc_info=True)


# ---------------------------------------------------------------------- the run's side
class RemoteSender:
    """A :class:`~mobile_push.types.Sender` that sends through the worker's push service."""

    def __init__(self, path: str | Path, transport: Transport) -> None:
        self.path = str(path)
        self.transport = transport
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock: asyncio.Lock | None = None  # one request at a time on the connection

    def __repr__(self) -> str:
        return f"RemoteSender(transport={self.transport.value!r})"

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._conn is None:
                self._conn = await asyncio.open_unix_connection(self.path, limit=LINE_LIMIT)
            reader, writer = self._conn
            writer.write(json.dumps(body).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
            if not line:
                self._conn = None
                raise ConnectionError("the worker's push service closed the connection")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise ValueError(answer["error"])
        return answer

    async def send(self, messages: Sequence[PushMessage]) -> list[SendResult]:
        answer = await self.request({"op": "send", "transport": self.transport.value,
                                     "messages": [message_json(m) for m in messages]})
        return [result_from(r, m) for r, m in zip(answer["results"], messages, strict=True)]

    async def aclose(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


def worker_socket(home: Path) -> Path | None:
    """The push service of a warm worker running in this bgtasks home, if any (``bgtasks device
    test`` pushes through it: a second provider token within 20 minutes would be refused)."""
    for sock in sorted((home / "run").glob("push-*.sock")):
        try:
            os.kill(int(sock.stem.removeprefix("push-")), 0)
        except (ValueError, ProcessLookupError):
            continue
        except PermissionError:
            pass  # alive, someone else's
        return sock
    return None


async def senders_for(push: PushSettings, path: Path | str | None = None) -> dict[Transport, Sender]:
    """The senders a run pushes with: the worker's, through its push service (at ``path``, else
    the one the warm worker that started this run named), when there is one; else built here.

    Raises:
        ValueError: the senders cannot be built (a credentials problem, named).
    """
    path = path or os.environ.get(ENV_SOCKET)
    if path and Path(path).exists():
        probe = RemoteSender(path, Transport.APNS)
        try:
            transports = (await probe.request({"op": "transports"}))["transports"]
        except (OSError, ConnectionError):
            transports = None  # the worker is going away: this run pushes on its own
        finally:
            await probe.aclose()
        if transports is not None:
            return {Transport(t): RemoteSender(path, Transport(t)) for t in transports}
    from mobile_push.senders import make_senders

    return make_senders(push)
