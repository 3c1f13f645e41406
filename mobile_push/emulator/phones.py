"""Simulated phones: devices that receive what the push emulator accepted and behave as their
platform does, following the device guides (docs/android-workmanager.md, docs/ios-background.md)
step by step, and report through bgtasks' REST API with their own tokens.

Android (FCM data messages, WorkManager):

* a message reaches ``onMessageReceived`` only while the phone is online and the app is not
  force-stopped; a normal-priority message waits while the phone dozes (``idle``), a
  high-priority one does not. FCM keeps at most 100 pending messages for an offline phone:
  more, and all are dropped and ``onDeletedMessages`` fires when it comes back;
* ``onMessageReceived`` enqueues unique work named by the run, with the payload's constraints
  (a run already enqueued or done is a duplicate: nothing happens). A high-priority message
  whose constraints are only network and storage starts expedited work while the quota lasts;
* work starts when its constraints hold; a constraint lost mid-work stops it (reported
  ``stopped`` with WorkManager's stop reason) and WorkManager runs it again once they hold.

iOS (APNs background pushes):

* a background push reaches the app while it is not force-quit and the hourly budget iOS
  grants background pushes lasts (more are throttled: dropped); an offline phone gets only
  the last push APNs stored for it;
* a quick handler whose constraints hold runs at once, inside the ~30 s a push grants; other
  work waits for the BGProcessingTask, which iOS starts only while the phone is idle and
  charging (and online, if a queued run needs the network). Idle or power ending mid-work
  fires the expiration handler: the cut-short run reports ``stopped`` ("expired") and stays
  queued for the next processing task.

The simulated app's handlers: the run's ``data`` may say ``workMs`` (how long the work takes:
a number, or a list by try whose last entry repeats; default the phone's ``work_ms``) and
``fail`` (a message: the handler raises it). On iOS the handler ``quick`` is the guide's quick
handler. A handler's result is ``{"device": id, "handler": name, "input": data}``.

Phones, their state and their queued work are kept in a JSON file (owner-only) across
restarts. Everything runs on the fleet's own event loop thread; the public methods are
thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import httpx

from .tls import write_private

Platform = Literal["android", "ios"]
Network = Literal["wifi", "cellular", "none"]
IOS_TOPIC = "com.example.bgtasks.sim"
#: FCM keeps at most this many pending messages per offline device.
FCM_MAX_PENDING = 100
#: What a background push grants the app on iOS.
IOS_PUSH_SECONDS = 30.0
#: WorkManager's stop reasons (WorkInfo.STOP_REASON_*), by the constraint that stopped holding.
ANDROID_STOP_REASONS = {
    "requiresNetwork": "STOP_REASON_CONSTRAINT_CONNECTIVITY",
    "requiresWifi": "STOP_REASON_CONSTRAINT_CONNECTIVITY",
    "requiresCharging": "STOP_REASON_CONSTRAINT_CHARGING",
    "requiresBatteryNotLow": "STOP_REASON_CONSTRAINT_BATTERY_NOT_LOW",
    "requiresDeviceIdle": "STOP_REASON_CONSTRAINT_DEVICE_IDLE",
    "requiresStorageNotLow": "STOP_REASON_CONSTRAINT_STORAGE_NOT_LOW",
}
#: The constraints expedited work accepts (WorkManager refuses others).
EXPEDITED_CONSTRAINTS = {"requiresNetwork", "requiresWifi", "requiresStorageNotLow"}
LOG_LINES = 50
#: The simulated app's handlers quick enough for the push's 30 s (the guide's quickHandlers).
QUICK_HANDLERS = {"quick"}


class FleetError(ValueError):
    """A request the fleet refuses: ``field`` names what is wrong."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


@dataclass
class PhoneState:
    """What the phone's owner does to it: ``bgtasks device set``."""

    charging: bool = False
    battery: int = 80  # percent
    network: Network = "wifi"
    idle: bool = False  # Android: dozing; iOS: locked and unused
    storage_low: bool = False
    app_killed: bool = False  # force-stopped (Android) / force-quit (iOS): no pushes reach the app

    def failing(self, constraints: dict[str, Any]) -> str | None:
        """The first of the run's constraints that does not hold now, or None."""
        checks = {
            "requiresNetwork": self.network != "none",
            "requiresWifi": self.network == "wifi",  # WorkManager's UNMETERED
            "requiresCharging": self.charging,
            "requiresBatteryNotLow": self.charging or self.battery > 15,
            "requiresDeviceIdle": self.idle,
            "requiresStorageNotLow": not self.storage_low,
        }
        return next((k for k, ok in checks.items() if constraints.get(k) and not ok), None)


#: The state's fields as the control API and bgtasks' REST API name them (camelCase).
STATE_FIELDS = {"charging": "charging", "battery": "battery", "network": "network", "idle": "idle",
                "storageLow": "storage_low", "appKilled": "app_killed"}


def state_view(state: PhoneState) -> dict[str, Any]:
    return {camel: getattr(state, snake) for camel, snake in STATE_FIELDS.items()}


def check_state_change(change: dict[str, Any]) -> dict[str, Any]:
    """A state change (camelCase fields), checked and in the state's own names: a FleetError
    naming the field otherwise. Nothing changes until every field is right."""
    if not isinstance(change, dict):
        raise FleetError("body", "must be a JSON object of state fields")
    out: dict[str, Any] = {}
    for key, value in change.items():
        if key in ("charging", "idle", "storageLow", "appKilled"):
            if not isinstance(value, bool):
                raise FleetError(key, "must be true or false")
        elif key == "battery":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise FleetError(key, "must be a whole percentage from 0 to 100")
        elif key == "network":
            if value not in ("wifi", "cellular", "none"):
                raise FleetError(key, "must be wifi, cellular or none")
        else:
            raise FleetError(key, f"unknown field (known: {', '.join(STATE_FIELDS)})")
        out[STATE_FIELDS[key]] = value
    return out


@dataclass
class Work:
    """A run on the phone: WorkManager work (Android) or a queued run (iOS)."""

    payload: dict[str, str]
    expedited: bool = False
    quick: bool = False  # iOS: run inside the push's 30 s (else by the BGProcessingTask)
    stops: int = 0
    reported_started: bool = False


@dataclass
class Phone:
    id: str
    platform: Platform
    token: str
    labels: list[str] = field(default_factory=list)
    environment: str | None = None  # iOS: the APNs environment the app registered with
    state: PhoneState = field(default_factory=PhoneState)
    uninstalled: bool = False
    work_ms: int = 200
    expedited_quota: int = 20  # Android: expedited jobs left in the app's quota
    push_budget_per_hour: int = 3  # iOS: background pushes the system lets through an hour
    works: dict[str, Work] = field(default_factory=dict)  # run id -> work, in arrival order
    done: list[str] = field(default_factory=list)  # finished runs (de-duplication beyond KEEP)
    held: list[dict[str, Any]] = field(default_factory=list)  # pushes not yet delivered to the app
    deleted_messages: bool = False  # Android: FCM dropped this phone's pending messages
    delivered_at: list[float] = field(default_factory=list)  # iOS: background pushes in the last hour
    log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    running: dict[str, asyncio.Task[None]] = field(default_factory=dict, repr=False)

    def note(self, text: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {text}")

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id, "platform": self.platform, "labels": self.labels, "environment": self.environment,
            "state": state_view(self.state), "uninstalled": self.uninstalled, "workMs": self.work_ms,
            "work": [{"runId": run_id, "taskName": w.payload.get("taskName", ""),
                      "status": "running" if run_id in self.running else "waiting",
                      "waitingFor": None if run_id in self.running else self.waiting_for(w),
                      "expedited": w.expedited, "stops": w.stops} for run_id, w in self.works.items()],
            "heldPushes": len(self.held), "finishedRuns": len(self.done), "log": list(self.log),
        }

    def constraints(self, w: Work) -> dict[str, Any]:
        try:
            c = json.loads(w.payload.get("constraints") or "{}")
        except ValueError:
            return {}
        return c if isinstance(c, dict) else {}

    def waiting_for(self, w: Work) -> str | None:
        if w.quick:
            return None
        failing = self.state.failing(self.constraints(w))
        if self.platform == "ios" and failing is None and not (self.state.idle and self.state.charging):
            return "BGProcessingTask (iOS starts it while the phone is idle and charging)"
        return failing

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "platform": self.platform, "token": self.token, "labels": self.labels,
            "environment": self.environment, "state": asdict(self.state), "uninstalled": self.uninstalled,
            "work_ms": self.work_ms, "expedited_quota": self.expedited_quota,
            "push_budget_per_hour": self.push_budget_per_hour,
            "works": {k: asdict(w) for k, w in self.works.items()}, "done": self.done[-1000:],
            "held": self.held, "deleted_messages": self.deleted_messages,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Phone:
        known = {f.name for f in fields(PhoneState)}
        phone = cls(d["id"], d["platform"], d["token"], list(d.get("labels") or []), d.get("environment"),
                    PhoneState(**{k: v for k, v in (d.get("state") or {}).items() if k in known}),
                    bool(d.get("uninstalled")), int(d.get("work_ms", 200)), int(d.get("expedited_quota", 20)),
                    int(d.get("push_budget_per_hour", 3)))
        phone.works = {k: Work(**w) for k, w in (d.get("works") or {}).items()}
        phone.done = list(d.get("done") or [])
        phone.held = list(d.get("held") or [])
        phone.deleted_messages = bool(d.get("deleted_messages"))
        return phone


def new_push_token(platform: Platform) -> str:
    """A token of the shape the platform's push service issues (FCM: ~160 URL-safe characters;
    APNs: 64 hex digits)."""
    if platform == "android":
        return f"{secrets.token_urlsafe(16)}:APA91b{secrets.token_urlsafe(105)}"
    return secrets.token_hex(32)


class Credentials:
    """How the simulated phones reach bgtasks' REST API: the app backend's headers (to register
    devices, ``devices:write``) and each device's own headers (``devices:report``)."""

    async def backend_headers(self) -> dict[str, str]:
        return {}

    async def device_headers(self, device_id: str) -> dict[str, str]:
        return {}

    async def close(self) -> None:
        """The fleet stops: tokens it was given may be revoked."""


class Fleet:
    """The simulated phones of one push emulator (see the module docstring)."""

    def __init__(self, emulator: Any, api_url: str, credentials: Credentials | None = None,
                 state_file: Path | None = None) -> None:
        self.emulator = emulator
        self.api_url = api_url.rstrip("/")
        self.credentials = credentials or Credentials()
        self.state_file = state_file
        self.phones: dict[str, Phone] = {}
        self._by_token: dict[str, Phone] = {}
        self.loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._http: httpx.AsyncClient | None = None
        self._dirty = False
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Fleet:
        self._thread = threading.Thread(target=self.loop.run_forever, name="bgtasks-phones", daemon=True)
        self._thread.start()
        self.call(self._start())
        for server in (self.emulator.fcm, self.emulator.apns, self.emulator.apns_sandbox):
            server.requests.listeners.append(self._on_request)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        for server in (self.emulator.fcm, self.emulator.apns, self.emulator.apns_sandbox):
            with contextlib.suppress(ValueError):
                server.requests.listeners.remove(self._on_request)
        with contextlib.suppress(Exception):
            self.call(self._stop(), timeout_s=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        if not self.loop.is_running():
            self.loop.close()

    def call(self, coro: Awaitable[Any], timeout_s: float = 120) -> Any:
        """Run ``coro`` on the fleet's loop from another thread; its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)  # type: ignore[arg-type]

    async def _start(self) -> None:
        self._http = httpx.AsyncClient(timeout=30)
        if self.state_file is not None and self.state_file.exists():
            for d in json.loads(self.state_file.read_text()).get("phones", []):
                phone = Phone.from_json(d)
                self._remember(phone)
        for phone in self.phones.values():
            self._spawn(self._resume(phone))
        self._flusher = asyncio.create_task(self._flush_loop())

    async def _stop(self) -> None:
        self._stopping = True
        for phone in self.phones.values():
            for t in list(phone.running.values()):
                t.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._flusher is not None:
            self._flusher.cancel()
        self._save()
        if self._http is not None:
            await self._http.aclose()
        await self.credentials.close()

    def _remember(self, phone: Phone) -> None:
        self.phones[phone.id] = phone
        self._by_token[phone.token] = phone
        if phone.uninstalled:
            self._unregister(phone)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- persistence ------------------------------------------------------------------------

    def _changed(self) -> None:
        self._dirty = True

    def _save(self) -> None:
        if self.state_file is None:
            return
        data = {"phones": [p.to_json() for p in self.phones.values()]}
        write_private(self.state_file, json.dumps(data).encode())
        self._dirty = False

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._dirty:
                self._save()

    # ---- the public face (thread-safe) -------------------------------------------------------

    def add(self, platform: str, count: int = 1, labels: list[str] | None = None, *,
            environment: str | None = None, prefix: str | None = None) -> list[dict[str, Any]]:
        """Make ``count`` phones and register each through the REST API, as an app backend does."""
        return self.call(self._add(platform, count, labels or [], environment, prefix))

    def set_state(self, phone_id: str, change: dict[str, Any]) -> dict[str, Any]:
        return self.call(self._set_state(phone_id, change))

    def rotate_token(self, phone_id: str) -> dict[str, Any]:
        return self.call(self._rotate_token(phone_id))

    def uninstall(self, phone_id: str) -> dict[str, Any]:
        return self.call(self._uninstall(phone_id))

    def view(self, phone_id: str | None = None) -> Any:
        async def go() -> Any:
            if phone_id is None:
                return [p.view() for p in self.phones.values()]
            return self._phone(phone_id).view()
        return self.call(go())

    def _phone(self, phone_id: str) -> Phone:
        phone = self.phones.get(phone_id)
        if phone is None:
            raise FleetError("id", f"no simulated phone {phone_id!r}", status=404)
        return phone

    async def _add(self, platform: str, count: int, labels: list[str], environment: str | None,
                   prefix: str | None) -> list[dict[str, Any]]:
        if platform not in ("android", "ios"):
            raise FleetError("platform", "must be android or ios")
        if not 1 <= count <= 10_000:
            raise FleetError("count", "must be 1 to 10000")
        if environment is not None and (platform != "ios" or environment not in ("production", "sandbox")):
            raise FleetError("environment", "only iOS phones have one: production or sandbox")
        base = prefix or f"sim-{platform}"
        taken = set(self.phones)
        made: list[Phone] = []
        n = 1
        while len(made) < count:
            if f"{base}-{n}" not in taken:
                made.append(Phone(f"{base}-{n}", platform, new_push_token(platform),  # type: ignore[arg-type]
                                  sorted(set(labels)), environment if platform == "ios" else None))
            n += 1
        headers = await self.credentials.backend_headers()
        sem = asyncio.Semaphore(16)

        async def register(phone: Phone) -> None:
            body: dict[str, Any] = {"id": phone.id, "platform": phone.platform, "token": phone.token,
                                    "labels": phone.labels}
            if phone.platform == "ios":
                body["topic"] = IOS_TOPIC
                if phone.environment:
                    body["environment"] = phone.environment
            async with sem:
                resp = await self._client().post(f"{self.api_url}/devices", json=body, headers=headers)
            if resp.status_code != 201:
                raise FleetError("devices", f"POST /devices answered {resp.status_code}: {_detail(resp)}",
                                 status=502)
            phone.note("registered with bgtasks (POST /devices)")

        await asyncio.gather(*(register(p) for p in made))
        for phone in made:
            self._remember(phone)
        self._changed()
        return [p.view() for p in made]

    async def _set_state(self, phone_id: str, change: dict[str, Any]) -> dict[str, Any]:
        phone = self._phone(phone_id)
        checked = check_state_change(change)
        for key, value in checked.items():
            setattr(phone.state, key, value)
        if checked:
            phone.note("state: " + ", ".join(f"{k}={v}" for k, v in checked.items()))
            self._changed()
            await self._react(phone)
        return phone.view()

    async def _rotate_token(self, phone_id: str) -> dict[str, Any]:
        """The platform issues a new token (onNewToken / a new APNs token): the app sends it to
        bgtasks with the device's own API token; the old one stops working."""
        phone = self._phone(phone_id)
        old, new = phone.token, new_push_token(phone.platform)
        resp = await self._client().put(f"{self.api_url}/devices/{phone.id}", json={"token": new},
                                        headers=await self.credentials.device_headers(phone.id))
        if resp.status_code != 200:
            raise FleetError("token", f"PUT /devices/{phone.id} answered {resp.status_code}: {_detail(resp)}",
                             status=502)
        self._unregister(phone)  # the old token is dead at the push service
        del self._by_token[old]
        phone.token = new
        self._by_token[new] = phone
        phone.note("push token rotated; the new one sent to bgtasks (PUT /devices/{id})")
        self._changed()
        return phone.view()

    async def _uninstall(self, phone_id: str) -> dict[str, Any]:
        """The app is uninstalled: its token is dead at the push service (FCM UNREGISTERED,
        APNs 410 Unregistered); bgtasks finds out at its next push."""
        phone = self._phone(phone_id)
        phone.uninstalled = True
        self._unregister(phone)
        for t in list(phone.running.values()):
            t.cancel()
        phone.works.clear()
        phone.held.clear()
        phone.note("app uninstalled: its push token is dead")
        self._changed()
        return phone.view()

    def _unregister(self, phone: Phone) -> None:
        if phone.platform == "android":
            self.emulator.fcm.unregister(phone.token)
        else:
            self.emulator.apns.unregister(phone.token)
            self.emulator.apns_sandbox.unregister(phone.token)

    def _client(self) -> httpx.AsyncClient:
        assert self._http is not None, "the fleet is not started"
        return self._http

    # ---- pushes arrive ---------------------------------------------------------------------------

    def _on_request(self, req: Any) -> None:
        """An emulator answered a request (its thread): a push it accepted goes to its phone."""
        if getattr(req, "status", 0) != 200:
            return
        expires: float | None = None
        if hasattr(req, "device_token"):  # APNs
            token, body = req.device_token, req.payload
            payload = body.get("bgtasks") if isinstance(body, dict) else None
            high = req.headers.get("apns-priority") == "10"
            with contextlib.suppress(ValueError):  # apns-expiration: epoch seconds (0: now or never)
                expires = float(req.headers.get("apns-expiration", ""))
        else:  # FCM
            message = (req.json or {}).get("message") or {}
            token, payload = message.get("token"), message.get("data")
            android = message.get("android") or {}
            high = (android.get("priority") or "").lower() == "high"
            with contextlib.suppress(ValueError):  # android.ttl: "3600s" (0s: now or never)
                expires = time.time() + float(str(android.get("ttl", "")).removesuffix("s"))
        if token and isinstance(payload, dict) and "bgtasks" in payload:
            self.loop.call_soon_threadsafe(self._pushed, token, dict(payload), high, expires)

    def _pushed(self, token: str, payload: dict[str, str], high: bool, expires: float | None) -> None:
        phone = self._by_token.get(token)
        if phone is None or phone.uninstalled:
            return
        self._spawn(self._receive(phone, {"payload": payload, "high": high, "expires": expires}))

    async def _receive(self, phone: Phone, push: dict[str, Any]) -> None:
        run_id = push["payload"].get("runId", "")
        if phone.state.app_killed:
            what = "force-stopped" if phone.platform == "android" else "force-quit by the user"
            phone.note(f"push for run {run_id[:8]} not delivered: the app is {what}")
            return
        if phone.platform == "android":
            if phone.state.network == "none" or (phone.state.idle and not push["high"]):
                phone.held.append(push)
                why = "offline" if phone.state.network == "none" else "dozing (normal priority)"
                phone.note(f"push for run {run_id[:8]} held by FCM: {why}")
                if len(phone.held) > FCM_MAX_PENDING:
                    phone.held.clear()
                    phone.deleted_messages = True
                    phone.note(f"more than {FCM_MAX_PENDING} pending messages: FCM dropped them all")
                self._changed()
                return
            await self._android_message(phone, push)
        else:
            if phone.state.network == "none":
                phone.held[:] = [push]  # APNs stores one background push per app for an offline device
                phone.note(f"push for run {run_id[:8]} stored by APNs (offline; only the last is kept)")
                self._changed()
                return
            await self._ios_push(phone, push)

    async def _react(self, phone: Phone) -> None:
        """The phone's state changed: deliver held pushes, stop or start work."""
        if phone.state.app_killed or phone.uninstalled:
            for t in list(phone.running.values()):
                t.cancel()
            return
        if phone.state.network != "none":
            if phone.platform == "android" and phone.deleted_messages:
                phone.deleted_messages = False
                phone.note("onDeletedMessages: FCM dropped pending messages; their runs will miss this phone")
            keep, deliver = [], []
            now = time.time()
            for push in phone.held:
                if push.get("expires") is not None and push["expires"] <= now:
                    phone.note(f"push for run {push['payload'].get('runId', '')[:8]} expired before the phone "
                               "could get it (its TTL)")
                    continue
                dozing = phone.platform == "android" and phone.state.idle and not push["high"]
                (keep if dozing else deliver).append(push)
            phone.held = keep
            for push in deliver:
                if phone.platform == "android":
                    await self._android_message(phone, push)
                else:
                    await self._ios_push(phone, push)
        self._schedule(phone)

    async def _resume(self, phone: Phone) -> None:
        """After a restart: work that was running starts again (the process died with it)."""
        self._schedule(phone)

    # ---- Android: onMessageReceived and WorkManager --------------------------------------------

    async def _android_message(self, phone: Phone, push: dict[str, Any]) -> None:
        p = push["payload"]
        run_id = p.get("runId", "")
        phone.note(f"onMessageReceived: run {run_id[:8]} of {p.get('taskName', '')!r}"
                   + (" (high priority)" if push["high"] else ""))
        if run_id in phone.works or run_id in phone.done:
            phone.note(f"run {run_id[:8]} already enqueued or done: KEEP, nothing to do")
            return
        work = Work(p)
        constraints = {k for k, v in phone.constraints(work).items() if v}
        if push["high"] and constraints <= EXPEDITED_CONSTRAINTS:
            if phone.expedited_quota > 0:
                phone.expedited_quota -= 1
                work.expedited = True
            else:
                phone.note("expedited quota used up: runs as regular work (RUN_AS_NON_EXPEDITED_WORK_REQUEST)")
        phone.works[run_id] = work
        self._changed()
        self._schedule(phone)

    # ---- iOS: didReceiveRemoteNotification and BGProcessingTask --------------------------------

    async def _ios_push(self, phone: Phone, push: dict[str, Any]) -> None:
        p = push["payload"]
        run_id = p.get("runId", "")
        now = time.time()
        phone.delivered_at = [t for t in phone.delivered_at if now - t < 3600]
        if len(phone.delivered_at) >= phone.push_budget_per_hour:
            phone.note(f"push for run {run_id[:8]} throttled by iOS "
                       f"(more than {phone.push_budget_per_hour} background pushes an hour)")
            return
        phone.delivered_at.append(now)
        phone.note(f"didReceiveRemoteNotification: run {run_id[:8]} of {p.get('taskName', '')!r}")
        if run_id in phone.works or run_id in phone.done:
            phone.note(f"run {run_id[:8]} already queued or done: a duplicate push")
            return
        work = Work(p)
        # The guide's received(): a quick handler whose constraints hold now runs at once;
        # idle-only and everything else waits for the processing task.
        c = phone.constraints(work)
        work.quick = (p.get("handler") in QUICK_HANDLERS and not c.get("requiresDeviceIdle")
                      and phone.state.failing(c) is None)
        phone.works[run_id] = work
        self._changed()
        self._schedule(phone)

    # ---- running work ----------------------------------------------------------------------------

    def _may_run(self, phone: Phone, w: Work) -> bool:
        if phone.uninstalled or phone.state.app_killed:
            return False
        return phone.waiting_for(w) is None

    def _schedule(self, phone: Phone) -> None:
        """Stop running work whose conditions ended; start waiting work whose conditions hold."""
        for run_id, task in list(phone.running.items()):
            w = phone.works.get(run_id)
            if w is not None and not self._may_run(phone, w):
                task.cancel()
        for run_id, w in list(phone.works.items()):
            if run_id not in phone.running and self._may_run(phone, w):
                phone.running[run_id] = self._spawn(self._run(phone, run_id, w))

    async def _run(self, phone: Phone, run_id: str, w: Work) -> None:
        p = w.payload
        try:
            data = json.loads(p.get("data") or "null")
        except ValueError:
            data = None
        opts = data if isinstance(data, dict) else {}
        work_ms = opts.get("workMs", phone.work_ms)
        if isinstance(work_ms, list) and work_ms:  # by try: the last one repeats
            work_ms = work_ms[min(w.stops, len(work_ms) - 1)]
        work_ms = work_ms if isinstance(work_ms, int | float) and work_ms >= 0 else phone.work_ms
        quick = phone.platform == "ios" and w.quick
        kind = ("expedited work" if w.expedited else "work") if phone.platform == "android" else (
            "the push's 30 s" if quick else "BGProcessingTask")
        phone.note(f"run {run_id[:8]} started ({kind})")
        started = time.monotonic()
        try:
            await self._report(phone, p, {"state": "started"})
            if quick and work_ms / 1000 > IOS_PUSH_SECONDS - 5:
                # The guide's deadline: the completion handler is called before iOS kills the app.
                await asyncio.sleep(IOS_PUSH_SECONDS - 5)
                raise _Expired
            await asyncio.sleep(work_ms / 1000)
        except (asyncio.CancelledError, _Expired):
            phone.running.pop(run_id, None)
            if self._stopping or phone.uninstalled or run_id not in phone.works:
                raise
            if phone.state.app_killed:  # the process died with the work: nothing reports
                phone.note(f"run {run_id[:8]} killed with the app; it runs again once the app does")
                return
            w.stops += 1
            w.quick = False  # iOS: what did not fit the push's time goes to the processing task
            reason = self._stop_reason(phone, w)
            phone.note(f"run {run_id[:8]} stopped: {reason}")
            self._changed()
            with contextlib.suppress(Exception):
                await self._report(phone, p, {"state": "stopped", "stopReason": reason,
                                              "durationMs": int((time.monotonic() - started) * 1000)})
            self._schedule(phone)
            return
        phone.running.pop(run_id, None)
        phone.works.pop(run_id, None)
        phone.done.append(run_id)
        if len(phone.done) > 2000:  # de-duplication needs only the recent runs
            del phone.done[:-1000]
        self._changed()
        duration = int((time.monotonic() - started) * 1000)
        if isinstance(opts.get("fail"), str):
            phone.note(f"run {run_id[:8]} failed: {opts['fail']}")
            await self._report(phone, p, {"state": "failed", "error": opts["fail"], "durationMs": duration})
        else:
            phone.note(f"run {run_id[:8]} succeeded")
            result = {"device": phone.id, "handler": p.get("handler", ""), "input": data}
            await self._report(phone, p, {"state": "succeeded", "data": result, "durationMs": duration})
        self._schedule(phone)

    def _stop_reason(self, phone: Phone, w: Work) -> str:
        if phone.platform == "ios":
            return "expired"
        failing = phone.state.failing(phone.constraints(w))
        return ANDROID_STOP_REASONS.get(failing or "", "STOP_REASON_UNKNOWN")

    async def _report(self, phone: Phone, p: dict[str, str], body: dict[str, Any]) -> None:
        """POST the report with the device's own token, as the guides do: retried on a network
        error or a 5xx (after the phone is online again), final on a 4xx."""
        body = {"reportToken": p.get("reportToken", ""), **body}
        url = p.get("reportUrl", "")
        for attempt in range(8):
            while phone.state.network == "none":
                await asyncio.sleep(0.2)
            try:
                resp = await self._client().post(url, json=body, headers=await self.credentials.device_headers(phone.id))
            except httpx.HTTPError as exc:
                phone.note(f"report {body['state']} failed: {type(exc).__name__}; retrying")
            else:
                if resp.status_code < 500:
                    if resp.status_code != 201:
                        phone.note(f"report {body['state']} refused: {resp.status_code} {_detail(resp)}")
                    return
                phone.note(f"report {body['state']} answered {resp.status_code}; retrying")
            await asyncio.sleep(min(30.0, 0.5 * 2 ** attempt))


class _Expired(Exception):
    """The iOS push's time ran out before the quick work ended."""


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(body.get("detail") or body)[:300] if isinstance(body, dict) else str(body)[:300]
