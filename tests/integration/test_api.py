"""The REST API served by `bgtasks api` (uvicorn) against the real Prefect server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bgtasks.settings import Settings
from tests.fixtures import ApiProcess, ServerHandle, make_token
from tests.spec_example import SPEC_EXAMPLE

pytestmark = [pytest.mark.integration, pytest.mark.postgresql]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api(api_process: ApiProcess, settings: Settings) -> Iterator[httpx.Client]:
    """A client with a token carrying tasks:read and tasks:write."""
    token = make_token(settings, "tasks:read", "tasks:write", name="api-tests")
    with httpx.Client(base_url=api_process.base, timeout=60, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def _names(api: httpx.Client) -> set[str]:
    return {t["name"] for t in api.get("/tasks").json()}


def test_spec_example_creates_the_periodic_task_it_describes(api: httpx.Client) -> None:
    created = api.post("/tasks", json=SPEC_EXAMPLE)
    assert created.status_code == 201, created.text
    task = created.json()
    try:
        assert task["name"] == "Data Sync" and task["type"] == "periodic" and task["status"] == "pending"
        assert task["priority"] == "normal" and task["handler"] == "data-sync"
        assert task["schedule"]["interval"] == 3_600_000 and task["retryPolicy"]["maxBackoffMs"] == 60_000
        assert task["createdAt"].endswith("Z") and task["nextRun"].endswith("Z")
        got = api.get(f"/tasks/{task['id']}").json()
        assert got == task
        assert task["id"] in [t["id"] for t in api.get("/tasks", params={"type": "periodic"}).json()]
        assert api.get(f"/tasks/{task['id']}/result").status_code == 404
        paused = api.post(f"/tasks/{task['id']}/pause").json()
        assert paused["paused"] is True
        refused = api.post(f"/tasks/{task['id']}/run")
        assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json"
        assert api.post(f"/tasks/{task['id']}/resume").json()["paused"] is False
        assert api.post(f"/tasks/{task['id']}/cancel").json()["status"] == "cancelled"
    finally:
        assert api.delete(f"/tasks/{task['id']}").status_code == 204
    assert api.get(f"/tasks/{task['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**SPEC_EXAMPLE, "schedule": {"type": "periodic", "interval": 0}}, "schedule.interval"),
        ({**SPEC_EXAMPLE, "schedule": {"type": "periodic"}}, "schedule.interval"),
        ({**SPEC_EXAMPLE, "retryPolicy": {"maxRetries": -1}}, "retryPolicy.maxRetries"),
        ({**SPEC_EXAMPLE, "priority": "urgent"}, "priority"),
        ({**SPEC_EXAMPLE, "colour": "blue"}, "colour"),
        ({**SPEC_EXAMPLE, "name": "Nightly Report"}, "name"),
        ({"schedule": {"type": "one-time"}}, "name"),
        ({**SPEC_EXAMPLE, "data": {"note": ["ok", "a\x00b"]}}, "data.note.1"),
        ({**SPEC_EXAMPLE, "description": "\x00"}, "description"),
    ],
    ids=["interval-zero", "no-interval", "negative-retries", "bad-priority", "unknown-field", "no-handler", "no-name",
         "nul-in-data", "nul-in-description"],
)
def test_bad_input_is_a_problem_document_naming_the_field(api: httpx.Client, body: dict, field: str) -> None:
    before = _names(api)
    resp = api.post("/tasks", json=body)
    assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["status"] == 422 and problem["title"] and problem["detail"]
    assert field in [e["field"] for e in problem["errors"]], problem
    assert _names(api) == before


def test_unknown_task_is_404_problem(api: httpx.Client) -> None:
    resp = api.get("/tasks/00000000-0000-0000-0000-000000000000")
    assert resp.status_code == 404 and resp.json()["title"] == "Task not found"
    bad_query = api.get("/tasks", params={"status": "sleeping"})
    assert bad_query.status_code == 422 and bad_query.json()["errors"][0]["field"] == "status"


def test_nul_in_path_or_query_is_422_naming_it(api: httpx.Client) -> None:
    """PostgreSQL cannot store U+0000: refused up front on every database alike."""
    for resp, field in ((api.get("/tasks/a%00b"), "taskId"), (api.get("/tasks", params={"sort": "\x00"}), "sort")):
        assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json", resp.text
        assert [e["field"] for e in resp.json()["errors"]] == [field]


def test_committed_openapi_document_matches_the_served_one(api: httpx.Client) -> None:
    served = api.get("/openapi.json").json()
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert served == committed, "docs/openapi.json is stale: run `make openapi`"


def test_run_later_schedules_the_run_delay_seconds_ahead(api: httpx.Client) -> None:
    start = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    body = {"name": "run later", "schedule": {"type": "periodic", "interval": 86_400_000, "startTime": start},
            "handler": "demo"}
    task = api.post("/tasks", json=body).json()
    try:
        before = datetime.now(UTC)
        resp = api.post(f"/tasks/{task['id']}/run", json={"delaySeconds": 600})
        assert resp.status_code == 202, resp.text
        assert resp.json()["runId"]
        # The schedule's first run is a day away: the run-later run is the next one.
        when = datetime.fromisoformat(api.get(f"/tasks/{task['id']}").json()["nextRun"])
        assert before + timedelta(seconds=600) <= when <= datetime.now(UTC) + timedelta(seconds=600)
        bad = api.post(f"/tasks/{task['id']}/run", json={"delaySeconds": -1})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "delaySeconds"
        assert api.get(f"/tasks/{task['id']}").json()["nextRun"] == when.isoformat().replace("+00:00", "Z")
    finally:
        api.delete(f"/tasks/{task['id']}")


# ---- authentication ---------------------------------------------------------------


def test_no_token_is_401_and_names_the_scheme(api_process: ApiProcess, api: httpx.Client) -> None:
    before = _names(api)
    for headers in ({}, {"Authorization": "Bearer bgt_not-a-real-token"}, {"Authorization": "Basic dXNlcjpwdw=="}):
        for method, path in (("GET", "/tasks"), ("POST", "/tasks"), ("GET", "/tasks/x"), ("DELETE", "/tasks/x")):
            resp = httpx.request(method, api_process.base + path, headers=headers, json=SPEC_EXAMPLE)
            assert resp.status_code == 401, (method, path, headers, resp.text)
            assert resp.headers["content-type"] == "application/problem+json"
            assert resp.headers["www-authenticate"].startswith("Bearer")
    assert _names(api) == before
    assert httpx.get(api_process.base + "/health").status_code == 200


def test_wrong_scope_is_403_and_changes_nothing(api_process: ApiProcess, api: httpx.Client, settings: Settings) -> None:
    reader = {"Authorization": f"Bearer {make_token(settings, 'tasks:read', name='reader')}"}
    device = {"Authorization": f"Bearer {make_token(settings, 'devices:report', name='phone', device='phone-1')}"}
    before = _names(api)
    listed = httpx.get(api_process.base + "/tasks", headers=reader)
    assert listed.status_code == 200
    denied = httpx.post(api_process.base + "/tasks", headers=reader, json=SPEC_EXAMPLE)
    assert denied.status_code == 403, denied.text
    assert 'scope="tasks:write"' in denied.headers["www-authenticate"]
    assert "tasks:write" in denied.json()["detail"]
    assert httpx.get(api_process.base + "/tasks", headers=device).status_code == 403
    assert _names(api) == before


def test_revoked_token_is_401(api_process: ApiProcess, settings: Settings) -> None:
    import asyncio

    from bgtasks.auth import TokenStore
    from bgtasks.store import open_store

    secret = make_token(settings, "tasks:read", name="short-lived")
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(api_process.base + "/tasks", headers=headers).status_code == 200

    async def revoke() -> None:
        store = await open_store(settings.store_url)
        tokens = TokenStore(store)
        record = await tokens.verify(secret)
        assert record is not None
        await tokens.revoke(record.id)
        await store.close()

    asyncio.run(revoke())
    assert httpx.get(api_process.base + "/tasks", headers=headers).status_code == 401


def test_tokens_are_stored_hashed(settings: Settings) -> None:
    import sqlite3

    secret = make_token(settings, "tasks:read", name="hashed")
    db = settings.store_url.removeprefix("sqlite:///")
    dump = "\n".join(sqlite3.connect(db).iterdump())
    assert secret not in dump and secret[4:] not in dump


def test_auth_none_is_loopback_only(prefect_server: object) -> None:
    import subprocess
    import sys

    exe = str(Path(sys.executable).parent / "bgtasks")
    env = {**__import__("os").environ, "BGTASKS_API_AUTH": "none"}
    refused = subprocess.run([exe, "api", "--host", "0.0.0.0", "--port", "1"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "only on loopback" in refused.stderr
    open_api = ApiProcess(env={"BGTASKS_API_AUTH": "none"})
    try:
        open_api.wait_healthy()
        assert httpx.get(open_api.base + "/tasks").status_code == 200
    finally:
        open_api.stop()


def test_a_prefect_server_that_is_down_is_a_503_problem_to_retry(prefect_server: ServerHandle) -> None:
    """While its Prefect server is down the API answers 503 with Retry-After, not a bare 500."""
    open_api = ApiProcess(env={"BGTASKS_API_AUTH": "none"})
    try:
        open_api.wait_healthy()
        prefect_server.stop()
        try:
            down = httpx.get(open_api.base + "/tasks", timeout=600)
        finally:
            prefect_server.start()
        assert down.status_code == 503, down.text
        assert down.headers["content-type"].startswith("application/problem+json")
        assert down.headers["retry-after"] == "5"
        assert down.json()["title"] == "Unavailable"
        assert down.json()["detail"].startswith("the Prefect server did not answer (ConnectError)")
        assert httpx.get(open_api.base + "/tasks", timeout=60).status_code == 200  # back with the server
    finally:
        open_api.stop()


class FaultyPrefect:
    """A relay to the session's Prefect server that, while ``failing``, answers every request
    as Prefect does when its database is busy (503) instead of passing it on."""

    def __init__(self, upstream: str) -> None:
        import http.server
        import threading

        from tests.conftest import free_port

        relay = self
        self.failing = False
        self.refused = 0
        client = httpx.Client(base_url=upstream, timeout=120)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if relay.failing:
                    relay.refused += 1
                    status, content, headers = 503, b'{"exception_message":"Service Unavailable"}', {
                        "content-type": "application/json"}
                else:
                    up = client.request(self.command, self.path, content=body, headers={
                        k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")})
                    status, content = up.status_code, up.content
                    headers = {k: v for k, v in up.headers.items()
                               if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")}
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self._client = client

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._client.close()


def test_a_prefect_5xx_is_a_503_problem_to_retry_and_stores_nothing(prefect_server: ServerHandle,
                                                                     settings: Settings) -> None:
    """Prefect answers 503 when its database is busy; the API passes that on as 503 with
    Retry-After (after the Prefect client's own retries, turned off here), not a 500."""
    faulty = FaultyPrefect(settings.api_url.removesuffix("/api"))
    open_api = ApiProcess(env={"BGTASKS_API_AUTH": "none", "PREFECT_API_URL": faulty.url + "/api",
                               "PREFECT_CLIENT_MAX_RETRIES": "0"})
    try:
        open_api.wait_healthy()
        assert httpx.get(open_api.base + "/tasks", timeout=60).status_code == 200  # through the relay
        faulty.failing = True
        for answer in (httpx.get(open_api.base + "/tasks", timeout=60),
                       httpx.post(open_api.base + "/tasks", timeout=60, json={
                           "name": "made-during-a-5xx", "handler": "demo", "schedule": {"type": "one-time"}})):
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "5"
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.json()["detail"] == "the Prefect server answered 503; retry later"
        assert faulty.refused >= 2
        faulty.failing = False
        names = {t["name"] for t in httpx.get(open_api.base + "/tasks", timeout=60).json()}
        assert "made-during-a-5xx" not in names
    finally:
        open_api.stop()
        faulty.stop()
