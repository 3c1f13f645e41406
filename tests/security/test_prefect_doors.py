"""The Prefect server bgtasks starts needs its auth string, and browsers cannot act for a page.

Against the session's real server (``python -m bgtasks.prefect_server server start``, as
``bgtasks up`` runs it), with plain HTTP requests and websockets: what an attacker on
this machine, or a web page open in the user's browser, could send.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bgtasks.settings import Settings
from tests.fixtures import ServerHandle

pytestmark = [pytest.mark.integration, pytest.mark.postgresql]

#: A deployment whose pull step runs a shell command: what the worker would execute.
SHELL_STEP = [{"prefect.deployments.steps.run_shell_script": {"script": "touch /tmp/bgtasks-pwned"}}]


@pytest.fixture(scope="module")
def base(prefect_server: ServerHandle, settings: Settings) -> str:
    return settings.api_url


@pytest.fixture(scope="module")
def basic(settings: Settings) -> dict[str, str]:
    assert settings.server.auth_string is not None
    token = base64.b64encode(settings.server.auth_string.get_secret_value().encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


async def _deployment_names(client: Any) -> set[str]:
    return {d.name for d in await client.read_deployments()}


async def test_without_the_secret_nothing_is_read_or_created(base: str, http: httpx.Client, client: Any) -> None:
    name = f"pwned-{uuid.uuid4().hex[:8]}"
    flow_id = await client.create_flow_from_name("pwned-flow")
    body = {"name": name, "flow_id": str(flow_id), "work_pool_name": "background-tasks", "pull_steps": SHELL_STEP}
    for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"wrong").decode()},
                    {"Authorization": "Bearer not-the-string"}):
        made = http.post(f"{base}/deployments/", json=body, headers=headers)
        assert made.status_code == 401, made.text
        # Fake CSRF headers do not get it past the auth check (the CSRF check reads the database).
        made = http.post(f"{base}/deployments/", json=body,
                         headers={**headers, "Prefect-Csrf-Token": "x", "Prefect-Csrf-Client": "y"})
        assert made.status_code == 401, made.text
        assert http.post(f"{base}/flow_runs/filter", json={}, headers=headers).status_code == 401
        assert http.get(f"{base}/flows/{flow_id}", headers=headers).status_code == 401
    assert name not in await _deployment_names(client)
    # Liveness stays open, as in Prefect (probes carry no credentials).
    assert http.get(f"{base}/health").status_code == 200


def test_with_the_secret_a_write_still_needs_a_csrf_token(base: str, http: httpx.Client,
                                                          basic: dict[str, str]) -> None:
    refused = http.post(f"{base}/flow_runs/filter", json={}, headers=basic)
    assert refused.status_code == 403 and "CSRF" in refused.text
    client_id = str(uuid.uuid4())
    token = http.get(f"{base}/csrf-token", params={"client": client_id}, headers=basic)
    assert token.status_code == 200, token.text
    ok = http.post(f"{base}/flow_runs/filter", json={"limit": 1}, headers={
        **basic, "Prefect-Csrf-Token": token.json()["token"], "Prefect-Csrf-Client": client_id})
    assert ok.status_code == 200, ok.text


def test_a_foreign_host_name_is_refused(base: str, http: httpx.Client, basic: dict[str, str],
                                        settings: Settings) -> None:
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1."""
    port = settings.server.port
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}"):
        answer = http.get(f"{base}/health", headers={**basic, "Host": host})
        assert answer.status_code == 400, (host, answer.text)
        assert http.get(base.removesuffix("/api") + "/", headers={"Host": host}).status_code == 400
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert http.get(f"{base}/health", headers={"Host": host}).status_code == 200, host


def test_a_foreign_origin_is_refused_even_with_the_secret(base: str, http: httpx.Client, basic: dict[str, str],
                                                          settings: Settings) -> None:
    """A page of another site cannot use the API from the user's browser, whatever it knows."""
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{settings.server.port + 1}"):
        answer = http.post(f"{base}/flows/filter", json={}, headers={**basic, "Origin": origin})
        assert answer.status_code == 403, (origin, answer.text)
        preflight = http.options(f"{base}/deployments/", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
        # A no-cors form post from another site carries no Origin on old browsers, but its Sec-Fetch-Site.
        form = http.post(f"{base}/flows/filter", content=b"x", headers={
            **basic, "Content-Type": "text/plain", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"})
        assert form.status_code == 403
    # The UI's own origin passes (its CORS preflight is answered for that origin only).
    own = f"http://127.0.0.1:{settings.server.port}"
    preflight = http.options(f"{base}/deployments/", headers={"Origin": own, "Access-Control-Request-Method": "POST"})
    assert preflight.headers.get("access-control-allow-origin") == own


async def test_the_events_websocket_refuses_other_origins_and_unauthenticated_clients(base: str) -> None:
    """A page cannot forge ``bgtasks.*`` trigger events through the events websocket."""
    import websockets
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    url = base.replace("http://", "ws://") + "/events/in"
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(url, origin="http://evil.example", subprotocols=["prefect"])  # type: ignore[list-item]
    assert refused.value.response.status_code == 403

    forged = {"id": str(uuid.uuid4()), "occurred": "2026-01-01T00:00:00Z", "event": "bgtasks.power.plugged",
              "resource": {"prefect.resource.id": "bgtasks.host.pwned"}}
    async with websockets.connect(url, subprotocols=["prefect"]) as ws:  # type: ignore[list-item]
        await ws.send('{"type": "auth", "token": "wrong"}')
        with pytest.raises(ConnectionClosed):
            await ws.send(__import__("json").dumps(forged))
            await asyncio.wait_for(ws.recv(), 30)


def test_the_launcher_refuses_to_start_an_open_server(tmp_path: Any) -> None:
    """``bgtasks.prefect_server`` never serves without an auth string, nor to every origin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BGTASKS_"))}
    env.update({"PREFECT_HOME": str(tmp_path), "PREFECT_SERVER_API_PORT": "1"})
    argv = [sys.executable, "-m", "bgtasks.prefect_server", "server", "start", "--port", "1"]
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "refusing to start without an auth string" in p.stderr, p.stderr
    env["PREFECT_SERVER_API_AUTH_STRING"] = "some-string"
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "refusing to allow every browser origin" in p.stderr, p.stderr
