"""The REST API served by `bgtasks api` (uvicorn) against the real Prefect server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bgtasks.stack import wait_until
from tests.conftest import free_port
from tests.spec_example import SPEC_EXAMPLE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api(prefect_server: Any) -> Iterator[httpx.Client]:
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "bgtasks"), "api", "--port", str(port)],
                            env=os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 120, "bgtasks api", lambda: proc.poll() is None)
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
    ],
    ids=["interval-zero", "no-interval", "negative-retries", "bad-priority", "unknown-field", "no-handler", "no-name"],
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


def test_committed_openapi_document_matches_the_served_one(api: httpx.Client) -> None:
    served = api.get("/openapi.json").json()
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert served == committed, "docs/openapi.json is stale: run `make openapi`"
