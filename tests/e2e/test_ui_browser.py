"""The Prefect UI of a running `bgtasks up`, driven in Debian's Chromium (Playwright).

A user opens the UI, finds the ``create-background-task`` deployment, fills its
Custom run form (the spec's creation form) and submits; the new task's
deployment appears in the list and its run completes. Screenshots of each step
are kept in ``build/test-artifacts/ui/``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.up import Up, running

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "ui"
#: Generous: a 2-core machine runs the server, the worker and the browser at once.
STEP_MS = 120_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running(tmp_path_factory.mktemp("ui") / "home") as up:
        yield up


def log_in(page: object, stack: Up) -> None:
    """The UI's login page: the server's auth string, as `bgtasks ui --secret` prints it."""
    page.goto(stack.ui)  # type: ignore[attr-defined]
    field = page.get_by_placeholder("admin:pass")  # type: ignore[attr-defined]
    field.wait_for()
    field.fill(stack.cli("ui", "--secret").strip())
    page.get_by_role("button", name="Login").click()  # type: ignore[attr-defined]


def _field(page: object, label: str, inner: str) -> object:
    """The first ``inner`` element inside the form property labelled ``label``."""
    return page.locator(  # type: ignore[attr-defined]
        f"xpath=//*[normalize-space(text())='{label}']/ancestor::*[.//{inner}][1]//{inner}"
    ).first


def choose(page: object, label: str, option: str) -> None:
    """Pick ``option`` in the select labelled ``label`` and see it chosen with its menu closed
    (an open menu would cover the next control: a CI run once waited on it for the whole step)."""
    from playwright.sync_api import expect

    select = page.get_by_label(label)  # type: ignore[attr-defined]
    select.click()
    page.get_by_role("option", name=option, exact=True).click()  # type: ignore[attr-defined]
    expect(select).to_contain_text(option)
    options = page.get_by_role("option")  # type: ignore[attr-defined]
    if options.count():
        page.keyboard.press("Escape")  # type: ignore[attr-defined]
    expect(options).to_have_count(0)


def _wait_completed(stack: Up, name: str) -> dict:
    """The task once its run has finished (a safety-net deadline, not a timing assertion)."""
    import time

    deadline = time.monotonic() + STEP_MS / 1000
    while time.monotonic() < deadline:
        task = stack.cli_json("task", "show", name)
        if task.get("result"):
            return task
        time.sleep(0.5)
    raise AssertionError(f"task {name} did not finish: {task}")


def test_create_background_task_from_the_prefect_ui_form(stack: Up) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    name = "ui-made-task"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(STEP_MS)

            log_in(page, stack)
            page.screenshot(path=ARTIFACTS / "0-logged-in.png")
            page.goto(f"{stack.ui}/v2/deployments")
            control = page.get_by_role("link", name="create-background-task").first
            control.wait_for()
            page.screenshot(path=ARTIFACTS / "1-deployments.png")
            control.click()
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Custom run").click()
            page.get_by_text("Parameters", exact=True).wait_for()

            _field(page, "name", "textarea").fill(name)
            choose(page, "Select Type", "one-time")
            choose(page, "Select priority", "high")
            # Every field has a value (flows.forms): no "Property is type None" switch anywhere.
            expect(page.get_by_text(re.compile("Property is type None"))).to_have_count(0)
            _field(page, "handler (Optional)", "textarea").fill("demo")
            page.screenshot(path=ARTIFACTS / "2-create-form.png", full_page=True)
            page.get_by_role("button", name="Submit").click()
            page.get_by_text(re.compile("scheduled to start")).wait_for()
            page.screenshot(path=ARTIFACTS / "3-submitted.png")

            # The control run creates the task; its deployment shows up in the list.
            page.goto(f"{stack.ui}/v2/deployments")
            created = page.get_by_role("link", name=name, exact=True).first
            expect(created).to_be_visible(timeout=STEP_MS)
            page.screenshot(path=ARTIFACTS / "4-task-listed.png")
            # Its run completes (read from the API: the UI's run list is not live), and the
            # task's page in the UI shows it.
            task = _wait_completed(stack, name)
            page.goto(f"{stack.ui}/v2/deployments/deployment/{task['id']}")
            expect(page.get_by_text("priority:high").first).to_be_visible(timeout=STEP_MS)
            expect(page.get_by_text("Completed").first).to_be_visible(timeout=STEP_MS)
            page.screenshot(path=ARTIFACTS / "5-task-run-completed.png")
        except Exception:
            page.screenshot(path=ARTIFACTS / "failure.png", full_page=True)
            raise
        finally:
            browser.close()

    task = stack.cli_json("task", "show", name)
    assert task["status"] == "completed" and task["priority"] == "high" and task["handler"] == "demo"
    assert task["result"]["success"] is True
