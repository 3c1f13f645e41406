"""The REST API is hard to knock over: a key before the body, bounded bodies, no foreign pages.

Against ``bgtasks api`` (uvicorn) on the session's Prefect server: unauthenticated and
hostile requests get a 4xx, store nothing and never a 5xx; a cross-site request from a
browser is refused even with authentication off (``BGTASKS_API_AUTH=none``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bgtasks.settings import Settings
from tests.fixtures import ApiProcess, ServerHandle, make_token, runs_of

pytestmark = pytest.mark.integration

ONCE = {"type": "one-time", "startTime": "2099-01-01T00:00:00Z"}


@pytest.fixture(scope="module")
def api(api_process: ApiProcess, settings: Settings) -> Iterator[httpx.Client]:
    token = make_token(settings, "tasks:read", "tasks:write", name="doors")
    with httpx.Client(base_url=api_process.base, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


@pytest.fixture(scope="module")
def open_api(prefect_server: ServerHandle) -> Iterator[ApiProcess]:
    """The API with authentication off (loopback only), as a developer may run it."""
    proc = ApiProcess(env={"BGTASKS_API_AUTH": "none"})
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


def _names(api: httpx.Client) -> set[str]:
    return {t["name"] for t in api.get("/tasks").json()}


def test_authentication_comes_before_the_body(api_process: ApiProcess) -> None:
    """No token: 401 whatever the body (a NUL, bad JSON, a huge or deep one), never a 422/413/500."""
    bodies = [b'{"name": "\\u0000"}', b"{not json", b"[" * 5000, b"x" * 3_000_000]
    with httpx.Client(base_url=api_process.base, timeout=60) as anon:
        for body in bodies:
            answer = anon.post("/tasks", content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 401, (body[:20], answer.status_code, answer.text[:200])
            assert answer.headers["www-authenticate"].startswith("Bearer")
        bad = anon.get("/tasks", headers={"Authorization": "Bearer bgt_not-a-real-token"})
        assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]


def test_an_oversized_body_is_413_and_stores_nothing(api: httpx.Client) -> None:
    body = {"name": "too-big", "handler": "demo", "schedule": ONCE, "data": {"blob": "x" * 1_100_000}}
    answer = api.post("/tasks", json=body)
    assert answer.status_code == 413, answer.text[:300]
    assert answer.headers["content-type"] == "application/problem+json"
    # The same without a Content-Length (chunked): counted as it arrives.
    chunks = iter([json.dumps(body).encode()[i:i + 65536] for i in range(0, 1_200_000, 65536)])
    assert api.post("/tasks", content=chunks, headers={"Content-Type": "application/json"}).status_code == 413
    assert "too-big" not in _names(api)


@pytest.mark.parametrize(("raw", "why"), [
    (b'{"name": "deep", "schedule": {"type": "one-time"}, "data": ' + b"[" * 990 + b"]" * 990 + b"}", "deeper"),
    (b'{"name": "nan", "handler": "demo", "schedule": {"type": "one-time"}, "data": {"x": NaN}}', "NaN"),
    (b'{"name": "inf", "handler": "demo", "schedule": {"type": "one-time"}, "data": [-Infinity]}', "NaN"),
])
def test_deep_or_non_finite_json_is_400_on_every_route(api: httpx.Client, raw: bytes, why: str) -> None:
    for path in ("/tasks", "/devices", "/tasks/x/run"):
        answer = api.post(path, content=raw, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400 and why in answer.json()["detail"], (path, answer.text[:200])
    assert not {"deep", "nan", "inf"} & _names(api)
    # A NaN inside a string is text, not a number: that body is fine.
    ok = api.post("/tasks", json={"name": "nan-text", "handler": "demo", "schedule": ONCE, "data": "NaN [[["})
    assert ok.status_code == 201, ok.text
    api.delete(f"/tasks/{ok.json()['id']}")


@pytest.mark.parametrize("name", ["evil\x1b[31mred", "invoice\u202egpj.exe", "two\nlines", "bell\x07"])
def test_names_with_control_or_bidi_characters_are_refused(api: httpx.Client, name: str) -> None:
    answer = api.post("/tasks", json={"name": name, "handler": "demo", "schedule": ONCE})
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "name"
    assert name not in _names(api)


def test_oversized_task_data_is_a_field_error_and_is_never_logged(api: httpx.Client,
                                                                  api_process: ApiProcess) -> None:
    """600 KB of data is over Prefect's 512 KB parameter limit: a 422 naming ``data``, not a
    500, and the payload (a user's data, maybe their secrets) does not reach the API's log."""
    marker = "SECRET-MARKER-" + "y" * 20
    body = {"name": "big-data", "handler": "demo", "schedule": ONCE, "data": {"k": marker + "z" * 600_000}}
    with httpx.Client(base_url=str(api.base_url), headers=dict(api.headers), timeout=60) as c:
        answer = c.post("/tasks", json=body)
    # The API's body limit (1 MiB) lets it through; the task data limit (256 KiB) refuses it.
    assert answer.status_code == 422, answer.text[:300]
    assert answer.json()["errors"][0]["field"] == "data" and "BGTASKS_TASK_DATA_MAX_BYTES" in answer.text
    assert "big-data" not in _names(api)
    assert marker not in answer.text
    assert marker not in api_process.log_path.read_text(errors="replace")


def test_a_foreign_host_or_origin_is_refused(api: httpx.Client) -> None:
    assert api.get("/tasks", headers={"Host": "evil.example"}).status_code == 400
    assert api.get("/health", headers={"Host": "evil.example:4300"}).status_code == 400
    refused = api.post("/tasks", json={"name": "from-a-page", "handler": "demo", "schedule": ONCE},
                       headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403
    assert "from-a-page" not in _names(api)


async def test_with_auth_off_a_cross_site_post_is_still_refused(open_api: ApiProcess, api: httpx.Client,
                                                                client: Any) -> None:
    """``BGTASKS_API_AUTH=none``: the text/plain form post a page can send without a preflight
    (today's attack: 202 for /tasks/{id}/run) is refused, and the task does not run."""
    task = api.post("/tasks", json={"name": "victim", "handler": "demo", "schedule": ONCE}).json()
    try:
        with httpx.Client(base_url=open_api.base, timeout=60) as anon:
            for headers in ({"Origin": "http://evil.example"}, {"Host": "evil.example"},
                            {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}):
                answer = anon.post(f"/tasks/{task['id']}/run", content=b"{}",
                                   headers={"Content-Type": "text/plain", **headers})
                assert answer.status_code in (400, 403), (headers, answer.status_code, answer.text)
            # Without the browser's marks (curl, scripts on this machine) the open API answers.
            assert anon.get(f"/tasks/{task['id']}").status_code == 200
        runs = await runs_of(client, task["id"])
        assert [r.expected_start_time.year for r in runs] == [2099]  # only its own run: no run-now was made
    finally:
        api.delete(f"/tasks/{task['id']}")


def test_the_retry_pattern_cannot_stall_a_worker() -> None:
    """RE2 matches in linear time: the classic catastrophic pattern returns at once on a long
    message (Python's ``re`` would take longer than the universe; pytest's timeout would fire)."""
    from bgtasks.models import RetryCondition
    from bgtasks.retry import should_retry

    condition = RetryCondition(message_pattern=r"^(a+)+$")
    assert should_retry(condition, RuntimeError("a" * 100_000 + "b")) is False
    assert should_retry(condition, RuntimeError("a" * 100_000)) is True
    with pytest.raises(ValueError, match="RE2"):
        RetryCondition(message_pattern=r"(a)\1")  # backreferences are not linear
