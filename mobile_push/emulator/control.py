"""The push emulator with its simulated phones as one service, and the HTTP API that drives
the phones (``bgtasks device simulate|set|phones`` and bgtasks' ``/devices/{id}/simulation``).

The control API listens on 127.0.0.1 and needs the key kept in the emulator's directory
(``control.key``, owner-only); ``control.json`` says where it listens. Routes:

* ``GET /phones``, ``GET /phones/{id}``: the phones, their state, work and recent log;
* ``POST /phones`` ``{"platform", "count", "labels", "environment"}``: new phones, each
  registered with bgtasks through its REST API;
* ``PATCH /phones/{id}``: state fields (``charging``, ``battery``, ``network``, ``idle``,
  ``storageLow``, ``appKilled``);
* ``POST /phones/{id}/rotate-token``, ``POST /phones/{id}/uninstall``.

Errors are ``{"title", "detail", "errors": [{"field", "message"}]}`` with 401, 404 or 422.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from .phones import Credentials, Fleet, FleetError
from .stack import PushEmulator
from .tls import write_private

CONTROL_FILE = "control.json"
KEY_FILE = "control.key"
PHONES_FILE = "phones.json"


def _problem(status: int, title: str, field: str | None, message: str) -> Any:
    from starlette.responses import JSONResponse

    errors = [{"field": field, "message": message}] if field else []
    return JSONResponse({"title": title, "detail": f"{field}: {message}" if field else message, "errors": errors},
                        status_code=status)


def control_app(fleet: Fleet, key: str) -> Any:
    """The control API (a Starlette app) over ``fleet``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def call(request: Request, op: Any, status: int = 200) -> Any:
        auth = request.headers.get("authorization", "")
        if not secrets.compare_digest(auth.encode(), f"Bearer {key}".encode()):
            return _problem(401, "Unauthorized", None, "the control API needs the key in control.key")
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return _problem(422, "Invalid input", "body", "is not JSON")
        try:
            # The fleet's loop is this one: call its coroutines directly.
            return JSONResponse(await op(body), status_code=status)
        except FleetError as exc:
            return _problem(exc.status, "Invalid input" if exc.status == 422 else "Refused", exc.field, exc.message)

    async def phones(request: Request) -> Any:
        if request.method == "GET":
            return await call(request, lambda _: _async([p.view() for p in fleet.phones.values()]))

        async def add(body: Any) -> Any:
            if not isinstance(body, dict):
                raise FleetError("body", "must be a JSON object")
            count = body.get("count", 1)
            if isinstance(count, bool) or not isinstance(count, int):
                raise FleetError("count", "must be a whole number")
            labels = body.get("labels") or []
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise FleetError("labels", "must be a list of strings")
            return await fleet._add(str(body.get("platform")), count, labels, body.get("environment"),
                                    body.get("prefix"))
        return await call(request, add, 201)

    async def phone(request: Request) -> Any:
        pid = request.path_params["id"]
        if request.method == "GET":
            return await call(request, lambda _: _async(fleet._phone(pid).view()))
        return await call(request, lambda body: fleet._set_state(pid, body))

    async def rotate(request: Request) -> Any:
        return await call(request, lambda _: fleet._rotate_token(request.path_params["id"]))

    async def uninstall(request: Request) -> Any:
        return await call(request, lambda _: fleet._uninstall(request.path_params["id"]))

    async def health(request: Request) -> Any:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[
        Route("/health", health),
        Route("/phones", phones, methods=["GET", "POST"]),
        Route("/phones/{id}", phone, methods=["GET", "PATCH"]),
        Route("/phones/{id}/rotate-token", rotate, methods=["POST"]),
        Route("/phones/{id}/uninstall", uninstall, methods=["POST"]),
    ])


async def _async(value: Any) -> Any:
    return value


def load_key(directory: Path) -> str:
    path = directory / KEY_FILE
    try:
        key = path.read_text().strip()
        if len(key) >= 32:
            return key
    except OSError:
        pass
    key = secrets.token_urlsafe(32)
    write_private(path, key.encode())
    return key


class EmulatorService:
    """PushEmulator + Fleet + the control API, started and stopped together."""

    def __init__(self, directory: Path, api_url: str, credentials: Credentials | None = None, *,
                 fcm_port: int = 0, apns_port: int = 0, apns_sandbox_port: int = 0, control_port: int = 0) -> None:
        self.directory = Path(directory)
        self.emulator = PushEmulator(self.directory, fcm_port=fcm_port, apns_port=apns_port,
                                     apns_sandbox_port=apns_sandbox_port)
        self.api_url = api_url
        self.credentials = credentials
        self.control_port = control_port
        self.fleet: Fleet | None = None
        self._server: Any = None
        self._served: Any = None
        self.control_url = ""

    def start(self) -> EmulatorService:
        import uvicorn

        self.emulator.start()
        try:
            for server in (self.emulator.fcm, self.emulator.apns, self.emulator.apns_sandbox):
                server.requests.limit = 1000  # a long-running emulator keeps only the latest requests
            self.fleet = Fleet(self.emulator, self.api_url, self.credentials, self.directory / PHONES_FILE).start()
            key = load_key(self.directory)
            config = uvicorn.Config(control_app(self.fleet, key), host="127.0.0.1", port=self.control_port,
                                    log_level="warning", lifespan="off", access_log=False)
            self._server = uvicorn.Server(config)
            self._served = asyncio.run_coroutine_threadsafe(self._server.serve(), self.fleet.loop)
            deadline = time.monotonic() + 30
            while not self._server.started:
                if self._served.done() or time.monotonic() > deadline:
                    self._served.result(0)  # raises what stopped it (a port in use)
                    raise OSError(f"the phones' control API did not start on port {self.control_port}")
                time.sleep(0.02)
            port = self._server.servers[0].sockets[0].getsockname()[1]
            self.control_url = f"http://127.0.0.1:{port}"
            write_private(self.directory / CONTROL_FILE, json.dumps({"url": self.control_url}).encode())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            try:
                self._served.result(15)
            except Exception:  # noqa: BLE001 - stopping: what it died of no longer matters
                pass
            self._server = None
        if self.fleet is not None:
            self.fleet.stop()
            self.fleet = None
        (self.directory / CONTROL_FILE).unlink(missing_ok=True)
        self.emulator.stop()

    def __enter__(self) -> EmulatorService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ControlClient:
    """The control API from another process: ``bgtasks device simulate|set|phones`` and the REST API."""

    def __init__(self, directory: Path, timeout_s: float = 120) -> None:
        try:
            self.url = json.loads((Path(directory) / CONTROL_FILE).read_text())["url"]
            key = (Path(directory) / KEY_FILE).read_text().strip()
        except (OSError, ValueError, KeyError):
            raise FleetError("emulator", "no push emulator runs for this bgtasks home "
                                         "(start it with `bgtasks up --push emulator` or `bgtasks emulator`)",
                             status=409) from None
        self.headers = {"Authorization": f"Bearer {key}"}
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            resp = httpx.request(method, self.url + path, json=body, headers=self.headers, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise FleetError("emulator", f"the push emulator at {self.url} does not answer ({type(exc).__name__})",
                             status=409) from None
        return self._answer(resp)

    async def arequest(self, method: str, path: str, body: Any = None) -> Any:
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                resp = await client.request(method, self.url + path, json=body, headers=self.headers)
        except httpx.HTTPError as exc:
            raise FleetError("emulator", f"the push emulator at {self.url} does not answer ({type(exc).__name__})",
                             status=409) from None
        return self._answer(resp)

    @staticmethod
    def _answer(resp: httpx.Response) -> Any:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 400:
            errors = (body or {}).get("errors") if isinstance(body, dict) else None
            if errors:
                raise FleetError(errors[0]["field"], errors[0]["message"], status=resp.status_code)
            detail = body.get("detail") if isinstance(body, dict) else resp.text[:200]
            raise FleetError("emulator", str(detail), status=resp.status_code)
        return body
