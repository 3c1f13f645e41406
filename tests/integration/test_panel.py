"""The task panel's server side, against a real REST API process and Prefect server: the
page and its assets, the login that turns a token into HttpOnly cookies, the CSRF check on
writes made with the cookie, the live event stream, the Prefect UI's link back, and the
committed script being the build of its source. (tests/e2e/test_panel_browser.py drives
the page itself in Chromium.)"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bgtasks.settings import Settings
from tests.fixtures import ApiProcess, WorkerHandle, make_token

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "bgtasks" / "api" / "panel" / "static"
DEMO = {"handler": "demo", "schedule": {"type": "one-time"}}


@contextlib.contextmanager
def _login(base: str, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=60) as c:
        r = c.post("/ui/session", json={"token": token})
        assert r.status_code == 200, r.text
        yield c


def test_the_page_and_its_assets_are_served_without_a_token_and_load_nothing_from_elsewhere(
        api_process: ApiProcess) -> None:
    page = httpx.get(f"{api_process.base}/ui/", timeout=60)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    for name in ("panel.js", "panel.css"):
        r = httpx.get(f"{api_process.base}/ui/assets/{name}", timeout=60)
        assert r.status_code == 200 and r.content == (STATIC / name).read_bytes()
    # Nothing from another host: no http(s) URL in the page or its style (the browser test
    # records every request the page makes; the CSP above forbids the rest).
    for name in ("index.html", "panel.css"):
        text = (STATIC / name).read_text()
        assert "http://" not in text and "https://" not in text and "@import" not in text, name
    assert httpx.get(f"{api_process.base}/ui/assets/..%2Fpanel%2F__init__.py", timeout=60).status_code == 404
    assert httpx.get(f"{api_process.base}/ui/assets/missing.js", timeout=60).status_code == 404
    # The page is public; the data is not.
    assert httpx.get(f"{api_process.base}/tasks", timeout=60).status_code == 401


def test_login_sets_httponly_strict_cookies_and_writes_need_the_csrf_token(
        api_process: ApiProcess, settings: Settings) -> None:
    bad = httpx.post(f"{api_process.base}/ui/session", json={"token": "bgt_nope"}, timeout=60)
    assert bad.status_code == 401 and bad.json()["errors"] == [{"field": "token", "message": "is unknown or revoked"}]
    assert "set-cookie" not in bad.headers
    empty = httpx.post(f"{api_process.base}/ui/session", json={}, timeout=60)
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "token"
    device_only = make_token(settings, "devices:write", name="panel-no-read")
    r = httpx.post(f"{api_process.base}/ui/session", json={"token": device_only}, timeout=60)
    assert r.status_code == 403 and "tasks:read" in r.json()["detail"]

    token = make_token(settings, "tasks:read", "tasks:write", name="panel-writer")
    with _login(api_process.base, token) as c:
        login = c.cookies
        cookies = [h for k, h in c.post("/ui/session", json={"token": token}).headers.multi_items()
                   if k == "set-cookie"]
        assert len(cookies) == 2
        for header in cookies:
            lower = header.lower()
            assert "httponly" in lower and "samesite=strict" in lower and "path=/" in lower, header
        assert token not in json.dumps(c.get("/ui/session").json())  # the page never sees the token
        who = c.get("/ui/session").json()
        assert who["name"] == "panel-writer" and who["scopes"] == ["tasks:read", "tasks:write"] and who["csrf"]
        assert login.get("bgtasks_csrf") == who["csrf"]

        assert c.get("/tasks").status_code == 200  # reads need only the cookie
        before = {t["name"] for t in c.get("/tasks").json()}
        refused = c.post("/tasks", json={"name": "panel-csrf", **DEMO})
        assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
        wrong = c.post("/tasks", json={"name": "panel-csrf", **DEMO}, headers={"X-CSRF-Token": "guess"})
        assert wrong.status_code == 403
        assert {t["name"] for t in c.get("/tasks").json()} == before  # nothing was created
        made = c.post("/tasks", json={"name": "panel-csrf", **DEMO}, headers={"X-CSRF-Token": who["csrf"]})
        assert made.status_code == 201, made.text
        assert c.delete(f"/tasks/{made.json()['id']}", headers={"X-CSRF-Token": who["csrf"]}).status_code == 204

        out = c.delete("/ui/session")
        assert out.status_code == 204
        assert c.get("/ui/session").status_code == 401 and c.get("/tasks").status_code == 401

    reader = make_token(settings, "tasks:read", name="panel-reader")
    with _login(api_process.base, reader) as c:
        who = c.get("/ui/session").json()
        assert who["scopes"] == ["tasks:read"]
        r = c.post("/tasks", json={"name": "panel-reader", **DEMO}, headers={"X-CSRF-Token": who["csrf"]})
        assert r.status_code == 403 and "tasks:write" in r.json()["detail"]


def _read_events(base: str, token: str, found: list[dict[str, Any]], want: Any, opened: threading.Event) -> None:
    with httpx.stream("GET", f"{base}/tasks/events", headers={"Authorization": f"Bearer {token}"},
                      timeout=httpx.Timeout(60, read=120)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                message = json.loads(line.removeprefix("data: "))
                found.append(message)
                if kind == "resync":
                    opened.set()  # the server's subscription to Prefect's events is open
                if want(found):
                    return


def test_run_changes_stream_to_the_panel_as_server_sent_events(
        api_process: ApiProcess, worker: WorkerHandle, settings: Settings) -> None:
    token = make_token(settings, "tasks:read", "tasks:write", name="panel-events")
    headers = {"Authorization": f"Bearer {token}"}
    found: list[dict[str, Any]] = []
    task_id: dict[str, str] = {}
    opened = threading.Event()

    def done(messages: list[dict[str, Any]]) -> bool:
        return any(m["kind"] == "run" and m["taskId"] == task_id.get("id") and m["state"] == "Completed"
                   for m in messages)

    reader = threading.Thread(target=_read_events, args=(api_process.base, token, found, done, opened), daemon=True)
    reader.start()
    assert opened.wait(120), "the event stream did not open"
    r = httpx.post(f"{api_process.base}/tasks", json={"name": "panel-live", **DEMO}, headers=headers, timeout=60)
    assert r.status_code == 201, r.text
    task_id["id"] = r.json()["id"]
    reader.join(300)
    assert not reader.is_alive(), f"no Completed event for the task: {found}"
    states = [m["state"] for m in found if m["kind"] == "run" and m["taskId"] == task_id["id"]]
    assert "Running" in states and states[-1] == "Completed", states
    assert all(m["kind"] in ("run", "task", "resync") for m in found)
    # the task's creation was heard too (a deployment event)
    assert {"kind": "task", "taskId": task_id["id"], "change": "created"}.items() <= next(
        m for m in found if m["kind"] == "task" and m["taskId"] == task_id["id"]).items()
    assert httpx.get(f"{api_process.base}/tasks/events", timeout=60).status_code == 401  # a door like the others
    httpx.delete(f"{api_process.base}/tasks/{task_id['id']}", headers=headers, timeout=60)


async def test_a_tasks_prefect_ui_description_links_back_to_its_panel_page(manager: Any) -> None:
    from bgtasks.models import CreateTaskOptions
    from prefect.client.orchestration import get_client

    task = await manager.create(CreateTaskOptions.model_validate({"name": "panel link+back", **DEMO}))
    try:
        async with get_client() as client:
            from uuid import UUID

            dep = await client.read_deployment(UUID(task.id))
        assert dep.description.endswith(
            f"[Open in the bgtasks panel](http://127.0.0.1:{manager.settings.api.port}/ui/#task-name=panel%20link%2Bback)")
    finally:
        await manager.delete(task.id)


def test_the_committed_panel_script_is_the_build_of_its_source(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    assert npm, "Node.js and npm build the panel"
    client = ROOT / "clients" / "typescript"
    if not (client / "node_modules").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=client, check=True, timeout=600)
    out = tmp_path / "panel.js"
    p = subprocess.run([npm, "run", "panel", "--", f"--outfile={out}"], cwd=client, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == (STATIC / "panel.js").read_bytes(), "run `make panel` and commit panel.js"
