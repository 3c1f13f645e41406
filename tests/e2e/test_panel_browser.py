"""The task panel (/ui) of a running `bgtasks up --push emulator`, driven in Debian's
Chromium (Playwright) through every item of the module spec's UI section: log in, the
creation form (one-time, periodic, triggered, constrained, and a bad input's field
error), the list (status, next run, last result, filter, sort, live updates), the details
(history with attempts, result data, errors, the waiting reason, a device task's
deliveries and reports), the demo controls and the output panel; a read-only token sees
no write control; `bgtasks ui --link` logs in; the page is usable on a phone, by keyboard
and in dark mode. Screenshots of each part go to build/test-artifacts/panel/.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.up import Up, poll

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "panel"
#: Generous: a 2-core machine runs the server, the worker and the browser at once.
STEP_MS = 120_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    up = Up(tmp_path_factory.mktemp("panel") / "home")
    try:
        up.start("--push", "emulator")
        yield up
    finally:
        assert up.stop() == 0


def row(page: Any, name: str) -> Any:
    return page.locator("#task-table tbody tr").filter(has=page.get_by_role("link", name=name, exact=True))


def names(page: Any) -> list[str]:
    return page.locator("#task-table tbody tr td:nth-child(2)").all_inner_texts()


def fill_common(page: Any, name: str, type_: str = "one-time", priority: str = "normal") -> None:
    page.get_by_label("Name", exact=True).fill(name)
    page.locator("#f-type").select_option(type_)
    page.get_by_label("Priority", exact=True).select_option(priority)


def create(page: Any, name: str) -> None:
    from playwright.sync_api import expect

    page.get_by_role("button", name="Create task").click()
    expect(row(page, name)).to_have_count(1)
    expect(page.locator("#output-log li").first).to_contain_text(f"Created {name}")


def test_the_task_panel_does_every_item_of_the_specs_ui_section(stack: Up) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    panel = f"{stack.api}/ui/"
    assert f"Task panel:  {panel}" in "".join(stack.output)  # `bgtasks up` prints its address
    writer = stack.cli_json("token", "create", "panel-writer")["token"]
    reader = stack.cli_json("token", "create", "panel-reader", "--scope", "tasks:read")["token"]
    # A device task, made with the CLI: the panel shows its deliveries and reports.
    stack.cli("device", "simulate", "--platform", "android", "--count", "1", "--label", "panel")
    stack.cli("task", "create", "panel-phones", "--handler", "sync", "--device-label", "panel", "--timeout", "5m")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(STEP_MS)
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        expect.set_options(timeout=STEP_MS)
        try:
            # -- login: a bad token is refused beside the field; a good one opens the panel
            page.goto(panel)
            token_field = page.get_by_label("API token")
            token_field.fill("bgt_not-a-token")
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#login-error")).to_contain_text("unknown or revoked")
            expect(token_field).to_have_attribute("aria-invalid", "true")
            page.screenshot(path=ARTIFACTS / "0-login.png")
            token_field.fill(writer)
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#whoami")).to_have_text("panel-writer (read and write)")
            expect(page.locator("#live")).to_have_text("● live")
            assert not [c for c in page.context.cookies() if c["name"] == "bgtasks_session" and not c["httpOnly"]]

            # -- a bad input: the field's error beside it, nothing created
            fill_common(page, "panel-bad", "periodic")
            page.get_by_label("or cron (instead of Every)").fill("not a cron")
            page.get_by_role("button", name="Create task").click()
            expect(page.locator("[id='err-schedule.cron']")).to_contain_text("cron")
            expect(page.get_by_label("or cron (instead of Every)")).to_have_attribute("aria-invalid", "true")
            expect(page.locator("#output-log li.err").first).to_contain_text("Create panel-bad")
            page.screenshot(path=ARTIFACTS / "1-field-error.png", full_page=True)
            assert "panel-bad" not in names(page)
            page.get_by_label("or cron (instead of Every)").fill("")

            # -- one-time, with data; its run completes and the list shows it without a reload
            fill_common(page, "panel-once")
            page.get_by_label("Data (JSON)").fill('{"message": "from the form"}')
            create(page, "panel-once")
            expect(row(page, "panel-once").locator(".last-result")).to_contain_text("succeeded")
            expect(row(page, "panel-once")).to_contain_text("completed")

            # -- periodic, every hour, high priority, with retries
            fill_common(page, "panel-hourly", "periodic", "high")
            page.get_by_label("Every", exact=True).fill("1")
            page.get_by_label("Unit").select_option("hours")
            page.get_by_label("Max retries").fill("2")
            create(page, "panel-hourly")
            expect(row(page, "panel-hourly").locator(".next-run")).not_to_have_text("—")

            # -- triggered, on the charger being plugged in
            fill_common(page, "panel-plug", "triggered", "low")
            page.get_by_label("Event").select_option("power.plugged")
            create(page, "panel-plug")
            expect(row(page, "panel-plug")).to_contain_text("triggered")

            # -- constrained: Wi-Fi, which this machine's wired link never is: the run waits, visibly
            fill_common(page, "panel-wifi")
            page.get_by_label("Wi-Fi (unmetered)").check()
            create(page, "panel-wifi")
            expect(row(page, "panel-wifi")).to_contain_text("waiting: requiresWifi")
            expect(page.locator("#details-title")).to_have_text("panel-wifi")
            expect(page.locator("#details")).to_contain_text("Waiting for constraints")
            expect(page.locator("#details")).to_contain_text("requiresWifi")
            page.screenshot(path=ARTIFACTS / "2-list.png", full_page=True)

            # -- filter by status and type; sort by name, priority, next run and creation time
            page.get_by_label("Status", exact=True).select_option("completed")
            poll("the completed tasks only", lambda: sorted(names(page)) == sorted(
                t["name"] for t in stack.cli_json("task", "ls", "--status", "completed")), STEP_MS / 1000)
            expect(row(page, "panel-once")).to_have_count(1)
            expect(row(page, "panel-wifi")).to_have_count(0)
            assert all("completed" in s for s in page.locator("#task-table tbody tr td:nth-child(1)").all_inner_texts())
            page.get_by_label("Status", exact=True).select_option("")
            page.locator("#filter-type").select_option("triggered")
            expect(page.locator("#task-table tbody tr")).to_have_count(1)
            expect(row(page, "panel-plug")).to_have_count(1)
            page.locator("#filter-type").select_option("")
            mine = ["panel-hourly", "panel-once", "panel-phones", "panel-plug", "panel-wifi"]
            page.get_by_label("Sort by").select_option("name")
            expect(page.locator("#task-table tbody tr td:nth-child(2)")).to_have_text(sorted(mine))
            for sort in ("priority", "next-run", "created"):
                page.get_by_label("Sort by").select_option(sort)
                # The API's order (read again while runs may still change a next run).
                poll(f"the panel to show the API's {sort} order",
                     lambda: names(page) == [t["name"] for t in stack.cli_json("task", "ls", "--sort", sort)],
                     STEP_MS / 1000)
            page.get_by_label("Sort by").select_option("priority")
            expect(page.locator("#task-table tbody tr td:nth-child(2)").first).to_have_text("panel-hourly")  # high

            # -- run one now and watch it change live
            row(page, "panel-hourly").get_by_role("button", name="Run panel-hourly now").click()
            expect(page.locator("#output-log li").first).to_contain_text("Started a run of panel-hourly")
            expect(row(page, "panel-hourly").locator(".last-result")).to_contain_text("succeeded")

            # -- details: the definition, timing, history with attempts, the result's data
            row(page, "panel-once").get_by_role("button", name="Details of panel-once").click()
            details = page.locator("#details")
            expect(page.locator("#details-title")).to_have_text("panel-once")
            expect(details).to_contain_text("from the form")
            history = details.locator("table.history tbody tr")
            expect(history).to_have_count(1)
            expect(history.first).to_contain_text("Completed")
            assert history.first.locator("td").nth(5).inner_text() == "1"
            run_link = history.first.get_by_role("link")
            expect(run_link).to_have_attribute("href", re.compile(rf"^{re.escape(stack.ui)}/runs/flow-run/[0-9a-f-]+$"))
            task_id = stack.cli_json("task", "show", "panel-once")["id"]
            expect(details.get_by_role("link", name="Open in the Prefect UI")).to_have_attribute(
                "href", f"{stack.ui}/deployments/deployment/{task_id}")
            for label in ("Created", "Last run", "Next run", "Schedule", "Retry policy", "Constraints"):
                expect(details.locator("dt", has_text=re.compile(f"^{label}$"))).to_have_count(1)
            page.screenshot(path=ARTIFACTS / "3-details.png", full_page=True)

            # -- demo controls: execute selected now, quick demo, simulate failure
            page.get_by_role("button", name="Execute selected now").click()
            expect(page.locator("#output-log li").first).to_contain_text("Started a run of panel-once")
            expect(history).to_have_count(2)
            expect(history.first).to_contain_text("Completed")
            page.get_by_role("button", name="Quick demo task").click()
            expect(page.locator("#output-log li").first).to_contain_text("Created demo-")
            demo = page.locator("#task-table tbody tr").filter(has_text=re.compile(r"demo-\d+"))
            expect(demo.locator(".last-result")).to_contain_text("succeeded")
            page.get_by_role("button", name="Simulate failure").click()
            failing = page.locator("#task-table tbody tr").filter(has_text=re.compile(r"fail-\d+"))
            expect(failing.locator(".last-result")).to_contain_text("Simulated failure")
            failing.get_by_role("button", name=re.compile("^Details of fail-")).click()
            expect(details).to_contain_text("Simulated failure")
            expect(details.locator("table.history tbody tr").first).to_contain_text("Failed")
            assert details.locator("table.history tbody tr").first.locator("td").nth(5).inner_text() == "3"
            page.screenshot(path=ARTIFACTS / "4-failure.png", full_page=True)

            # -- a device task: each device's delivery and report
            row(page, "panel-phones").get_by_role("button", name="Details of panel-phones").click()
            expect(details).to_contain_text(re.compile(r"sim-android-1 \(android, fcm\): push delivered; report succeeded"))
            page.screenshot(path=ARTIFACTS / "5-device-task.png", full_page=True)

            # -- pause, resume, cancel
            row(page, "panel-hourly").get_by_role("button", name="Pause panel-hourly").click()
            expect(row(page, "panel-hourly")).to_contain_text("paused")
            row(page, "panel-hourly").get_by_role("button", name="Resume panel-hourly").click()
            expect(row(page, "panel-hourly").get_by_role("button", name="Pause panel-hourly")).to_be_visible()
            row(page, "panel-plug").get_by_role("button", name="Cancel panel-plug").click()
            expect(row(page, "panel-plug")).to_contain_text("cancelled")
            expect(row(page, "panel-plug").get_by_role("button", name="Run panel-plug now")).to_have_count(0)

            # -- clear completed: the one-time tasks that completed go, the rest stay
            page.get_by_role("button", name="Clear completed").click()
            expect(page.locator("#output-log li").first).to_contain_text(re.compile(r"Cleared \d+ completed task"))
            expect(row(page, "panel-once")).to_have_count(0)
            expect(demo).to_have_count(0)
            expect(row(page, "panel-hourly")).to_have_count(1)
            expect(failing).to_have_count(1)

            # -- the output panel: each operation with its indicator and time; clear it
            log = page.locator("#output-log li")
            expect(log.filter(has=page.locator(".icon[aria-label='success']")).first).to_be_visible()
            expect(log.filter(has=page.locator(".icon[aria-label='error']")).first).to_be_visible()
            assert re.match(r"\d{4}-\d\d-\d\dT", log.first.locator("time").get_attribute("datetime") or "")
            page.screenshot(path=ARTIFACTS / "6-output.png", full_page=True)
            page.get_by_role("button", name="Clear log").click()
            expect(log).to_have_count(0)

            # -- accessible: every control has a label; the skip link is the first stop
            unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
                .filter(e => e.offsetParent !== null)
                .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
                .map(e => e.outerHTML)""")
            assert unlabelled == []
            page.reload()  # (the session survives a reload: its cookie)
            expect(page.locator("#whoami")).to_have_text("panel-writer (read and write)")
            expect(row(page, "panel-hourly")).to_have_count(1)
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.textContent.trim()") == "Skip to the task list"
            page.keyboard.press("Enter")
            assert page.evaluate("location.hash") == "#tasks"

            # -- a phone-sized viewport: one column, nothing wider than the screen
            page.set_viewport_size({"width": 390, "height": 844})
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            page.screenshot(path=ARTIFACTS / "7-phone.png", full_page=True)
            page.set_viewport_size({"width": 1280, "height": 1000})

            # -- dark mode follows the system
            light = page.evaluate("getComputedStyle(document.body).backgroundColor")
            page.emulate_media(color_scheme="dark")
            assert page.evaluate("getComputedStyle(document.body).backgroundColor") != light
            page.screenshot(path=ARTIFACTS / "8-dark.png", full_page=True)
            page.emulate_media(color_scheme="light")

            # -- offline: every request the page made went to the API's own origin
            assert requested and all(url.startswith(f"{stack.api}/") for url in requested), \
                sorted({u for u in requested if not u.startswith(f"{stack.api}/")})

            # -- log out
            page.get_by_role("button", name="Log out").click()
            expect(page.get_by_label("API token")).to_be_visible()

            # -- a read-only token sees the tasks and no write control
            ro = browser.new_page(viewport={"width": 1280, "height": 900})
            ro.goto(panel)
            ro.get_by_label("API token").fill(reader)
            ro.get_by_role("button", name="Log in").click()
            expect(ro.locator("#whoami")).to_have_text("panel-reader (read only)")
            expect(row(ro, "panel-hourly")).to_have_count(1)
            for hidden in ("#create", "#demo"):
                expect(ro.locator(hidden)).to_be_hidden()
            expect(ro.get_by_role("button", name=re.compile("^(Run|Pause|Resume|Cancel) "))).to_have_count(0)
            ro.screenshot(path=ARTIFACTS / "9-read-only.png", full_page=True)

            # -- `bgtasks ui --link`: logged in by the link, the token gone from the address bar
            linked = browser.new_page(viewport={"width": 1280, "height": 900})
            link = stack.cli("ui", "--link").strip()
            assert link.startswith(f"{panel}#token=")
            linked.goto(link)
            expect(linked.locator("#whoami")).to_have_text("panel (bgtasks ui) (read and write)")
            assert "token" not in linked.url
        except Exception:
            page.screenshot(path=ARTIFACTS / "failure.png", full_page=True)
            raise
        finally:
            browser.close()
