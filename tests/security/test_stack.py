"""One `bgtasks up` on a new home, looked at from outside: its files and its doors in a browser.

- The home is 0700 and everything in it is its owner's alone (databases, results, logs,
  the auth string), created so by the umask of every part; the auth string appears in no
  log and not in `bgtasks up`'s output.
- In a real browser (Debian's Chromium, Playwright): the user logs in to the Prefect UI
  with the auth string, and a page served from another origin, open in the same browser,
  creates nothing. The page tries what a page can do without knowing any secret: ``fetch``
  to the Prefect API and the REST API (CORS and no-cors, JSON and text/plain), an
  auto-submitted form, and the events websocket. Afterwards the stack is read back with
  its own keys: no deployment, no task, no run, no event was made.
"""

from __future__ import annotations

import base64
import http.server
import json
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.up import Up, running

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "security"
STEP_MS = 120_000

ATTACK = """<!doctype html><html><body><h1>Totally harmless page</h1>
<form id="f" method="POST" action="{rest}/tasks/{victim}/run" enctype="text/plain" target="sink">
<input name='{{"delaySeconds": 0, "x": "' value='"}}'></form><iframe name="sink"></iframe>
<script>
const results = {{}};
async function attempt(name, url, init) {{
  try {{ const r = await fetch(url, init); results[name] = r.type === "opaque" ? "opaque" : r.status; }}
  catch (e) {{ results[name] = "blocked: " + e.name; }}
}}
const pwn = JSON.stringify({{name: "{marker}", flow_id: "{flow_id}", work_pool_name: "background-tasks",
  pull_steps: [{{"prefect.deployments.steps.run_shell_script": {{script: "touch /tmp/{marker}"}}}}]}});
const task = JSON.stringify({{name: "{marker}", handler: "demo", schedule: {{type: "one-time"}}}});
(async () => {{
  await attempt("prefect-cors", "{prefect}/api/deployments/", {{method: "POST", body: pwn,
    headers: {{"Content-Type": "application/json"}}}});
  await attempt("prefect-no-cors", "{prefect}/api/deployments/", {{method: "POST", body: pwn, mode: "no-cors",
    headers: {{"Content-Type": "text/plain"}}}});
  await attempt("prefect-read", "{prefect}/api/deployments/filter", {{method: "POST", body: "{{}}",
    headers: {{"Content-Type": "application/json"}}}});
  await attempt("rest-cors", "{rest}/tasks", {{method: "POST", body: task,
    headers: {{"Content-Type": "application/json"}}}});
  await attempt("rest-no-cors", "{rest}/tasks", {{method: "POST", body: task, mode: "no-cors",
    headers: {{"Content-Type": "text/plain"}}}});
  await attempt("rest-run", "{rest}/tasks/{victim}/run", {{method: "POST", mode: "no-cors"}});
  await new Promise(done => {{
    const ws = new WebSocket("{ws}/api/events/in", ["prefect"]);
    ws.onopen = () => {{ results.ws = "open"; ws.send(JSON.stringify({{type: "auth", token: null}}));
      ws.send(JSON.stringify({{id: crypto.randomUUID(), occurred: new Date().toISOString(),
        event: "bgtasks.power.plugged", resource: {{"prefect.resource.id": "bgtasks.host.{marker}"}}}})); }};
    ws.onerror = () => {{ results.ws = results.ws || "error"; }};
    ws.onclose = () => {{ results.ws_closed = true; done(); }};
  }});
  document.getElementById("f").submit();
  results.done = true;
}})();
</script></body></html>"""


@pytest.fixture(scope="module")
def up_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running(tmp_path_factory.mktemp("up") / "home") as up:
        yield up


@pytest.fixture
def attacker_site() -> Iterator[tuple[str, dict[str, str]]]:
    """A web server on another port (another origin); the page it serves is set by the test."""
    page: dict[str, str] = {"html": ""}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = page["html"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", page
    finally:
        server.shutdown()
        server.server_close()


def test_the_home_is_private_after_bgtasks_up(up_stack: Up) -> None:
    up_stack.cli_json("task", "run", up_stack.cli_json("task", "create", "modes", "--handler", "demo")["id"], "--wait")
    home = up_stack.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    loose = []
    for path in [home, *home.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if not path.is_symlink() and mode & 0o077:
            loose.append(f"{path.relative_to(home)} {mode:04o}")
    assert loose == [], loose
    secret = up_stack.auth_string
    assert stat.S_IMODE((home / "secrets" / "prefect-auth-string").stat().st_mode) == 0o600
    # Kinds of files the home holds: the SQLite databases, results, logs, the secret.
    assert (home / "prefect" / "prefect.db").exists() and (home / "bgtasks.db").exists()
    assert any((home / "prefect" / "storage").iterdir())  # the demo run's result
    for log in (home / "logs").iterdir():
        assert secret not in log.read_text(errors="replace"), log
    assert secret not in "".join(up_stack.output)
    assert "log in with the auth string in" in "".join(up_stack.output)
    # The stack's Prefect API: nothing without the key.
    assert httpx.get(f"{up_stack.ui}/api/flows/count", timeout=30).status_code == 401
    assert httpx.post(f"{up_stack.ui}/api/flows/count", timeout=30).status_code == 401


def test_login_with_the_secret_and_a_foreign_page_creates_nothing(up_stack: Up,
                                                                   attacker_site: tuple[str, dict[str, str]]) -> None:
    from playwright.sync_api import sync_playwright

    from tests.e2e.test_ui_browser import log_in

    assert CHROMIUM.exists(), "Debian's chromium is missing: `make test` installs it"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    marker = f"pwned-{uuid.uuid4().hex[:8]}"
    victim = up_stack.cli_json("task", "create", "browser-victim", "--handler", "demo",
                               "--at", "2099-01-01T00:00:00Z")  # one run, in 2099: a run-now would show
    flow_id = up_stack.cli_json("task", "show", victim["id"])["id"]  # any id: the request must fail before it
    site, page_html = attacker_site
    page_html["html"] = ATTACK.format(prefect=up_stack.ui, rest=up_stack.api, ws=up_stack.ui.replace("http", "ws"),
                                      victim=victim["id"], marker=marker, flow_id=flow_id)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            ui = context.new_page()
            ui.set_default_timeout(STEP_MS)
            log_in(ui, up_stack)
            ui.get_by_text("Deployments").first.wait_for()  # logged in: the UI's navigation shows
            ui.screenshot(path=ARTIFACTS / "1-logged-in.png")
            evil = context.new_page()
            evil.set_default_timeout(STEP_MS)
            evil.goto(site)
            evil.wait_for_function("() => typeof results !== 'undefined' && results.done === true",
                                   timeout=STEP_MS)
            results = evil.evaluate("() => results")
            evil.screenshot(path=ARTIFACTS / "2-attacker-page.png")
        finally:
            browser.close()

    # Every CORS request was refused by the browser (no allowed origin); the no-cors ones are
    # opaque to the page, and the servers refused them: nothing below exists.
    assert str(results["prefect-cors"]).startswith("blocked"), results
    assert str(results["prefect-read"]).startswith("blocked"), results
    assert str(results["rest-cors"]).startswith("blocked"), results
    assert results.get("ws") != "open", results
    auth = {"Authorization": "Basic " + base64.b64encode(up_stack.auth_string.encode()).decode()}
    with httpx.Client(timeout=60) as http:
        client_id = str(uuid.uuid4())
        csrf = http.get(f"{up_stack.ui}/api/csrf-token", params={"client": client_id}, headers=auth).json()["token"]
        headers = {**auth, "Prefect-Csrf-Token": csrf, "Prefect-Csrf-Client": client_id}
        deployments = http.post(f"{up_stack.ui}/api/deployments/filter", json={}, headers=headers).json()
        assert marker not in {d["name"] for d in deployments}
        runs = http.post(f"{up_stack.ui}/api/flow_runs/filter", headers=headers, json={
            "flow_runs": {"deployment_id": {"any_": [victim["id"]]}}}).json()
        assert [r["expected_start_time"][:4] for r in runs] == ["2099"], runs  # no run-now reached it
        events = http.post(f"{up_stack.ui}/api/events/filter", headers=headers, json={
            "filter": {"any_resource": {"id_prefix": [f"bgtasks.host.{marker}"]}}, "limit": 10}).json()
        assert events["events"] == [], events
    assert marker not in json.dumps(up_stack.cli_json("task", "ls"))
    assert not Path(f"/tmp/{marker}").exists()
