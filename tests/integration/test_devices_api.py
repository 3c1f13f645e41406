"""The device registry through the REST API and the CLI: shapes checked on the way in,
bad input stores nothing, scopes enforced, token rotation re-activates a device."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bgtasks.settings import Settings
from tests.fixtures import ApiProcess, make_token

pytestmark = [pytest.mark.integration, pytest.mark.postgresql]

BIN = Path(sys.executable).parent / "bgtasks"


@pytest.fixture(scope="module")
def admin(api_process: ApiProcess, settings: Settings) -> Iterator[httpx.Client]:
    token = make_token(settings, "tasks:read", "devices:write", name="devices-admin")
    with httpx.Client(base_url=api_process.base, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def _ids(admin: httpx.Client) -> set[str]:
    return {d["id"] for d in admin.get("/devices").json()}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"platform": "android", "token": "too-short"}, "token"),
        ({"platform": "ios", "token": "zz" * 32, "topic": "com.example.app"}, "token"),
        ({"platform": "ios", "token": "ab" * 31, "topic": "com.example.app"}, "token"),
        ({"platform": "ios", "token": "ab" * 32}, "topic"),
        ({"platform": "android", "transport": "apns", "token": "ab" * 32, "topic": "x.y"}, "transport"),
        ({"platform": "windows", "token": "ab" * 32}, "platform"),
        ({"platform": "ios", "token": "ab" * 32, "topic": "com.example.app", "labels": ["no spaces"]}, "labels"),
        ({"id": "bad id!", "platform": "ios", "token": "ab" * 32, "topic": "com.example.app"}, "id"),
        ({"platform": "ios", "token": "ab" * 32, "topic": "com.example.app", "colour": "red"}, "colour"),
    ],
    ids=["fcm-short", "apns-not-hex", "apns-too-short", "apns-no-topic", "android-apns", "platform",
         "label", "id", "unknown-field"],
)
def test_bad_device_input_names_the_field_and_stores_nothing(admin: httpx.Client, body: dict, field: str) -> None:
    before = _ids(admin)
    resp = admin.post("/devices", json=body)
    assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json", resp.text
    assert field in [e["field"] for e in resp.json()["errors"]], resp.json()
    assert _ids(admin) == before


def test_register_rotate_and_remove(admin: httpx.Client, api_process: ApiProcess, settings: Settings) -> None:
    token = secrets.token_hex(32).upper()
    created = admin.post("/devices", json={"id": "iphone-rot", "platform": "ios", "token": f"<{token}>",
                                           "topic": "com.example.app", "labels": ["beta", "beta"]})
    assert created.status_code == 201, created.text
    device = created.json()
    assert device["transport"] == "apns" and device["labels"] == ["beta"] and token.lower() not in json.dumps(device)
    again = admin.post("/devices", json={"platform": "ios", "token": token, "topic": "com.example.app"})
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "token"
    assert admin.post("/devices", json={"id": "iphone-rot", "platform": "ios", "token": secrets.token_hex(32),
                                        "topic": "com.example.app"}).status_code == 409

    # The device's own token may rotate its push token; another device's may not; nor may a reader.
    own = {"Authorization": f"Bearer {make_token(settings, 'devices:report', name='rot', device='iphone-rot')}"}
    other = {"Authorization": f"Bearer {make_token(settings, 'devices:report', name='x', device='someone-else')}"}
    new = secrets.token_hex(32)
    assert httpx.put(f"{api_process.base}/devices/iphone-rot", json={"token": new}, headers=other).status_code == 403
    assert httpx.put(f"{api_process.base}/devices/iphone-rot", json={"token": "nope"},
                     headers=own).json()["errors"][0]["field"] == "token"
    rotated = httpx.put(f"{api_process.base}/devices/iphone-rot", json={"token": new}, headers=own)
    assert rotated.status_code == 200 and rotated.json()["token"].startswith(new[:6])
    assert httpx.post(f"{api_process.base}/devices", headers=own,
                      json={"platform": "ios", "token": secrets.token_hex(32), "topic": "a.b"}).status_code == 403

    assert admin.delete("/devices/iphone-rot").status_code == 204
    assert admin.get("/devices/iphone-rot").status_code == 404
    assert admin.delete("/devices/iphone-rot").status_code == 404


async def test_a_new_push_token_reactivates_an_invalid_device(admin: httpx.Client, settings: Settings) -> None:
    """A device whose token the push service rejected is skipped until its app registers a new one."""
    from tests.fixtures import _in_store
    from mobile_push.registry import DeviceRegistry

    created = admin.post("/devices", json={"id": "iphone-dead", "platform": "ios", "token": secrets.token_hex(32),
                                           "topic": "com.example.app"})
    assert created.status_code == 201, created.text

    async def invalidate(store: object) -> None:
        await DeviceRegistry(store).mark_invalid("iphone-dead", "BadDeviceToken (APNs 400)")  # type: ignore[arg-type]

    _in_store(settings, invalidate)
    dead = admin.get("/devices/iphone-dead").json()
    assert dead["state"] == "invalid" and dead["invalidReason"].startswith("BadDeviceToken")
    assert "iphone-dead" in [d["id"] for d in admin.get("/devices", params={"state": "invalid"}).json()]
    revived = admin.put("/devices/iphone-dead", json={"token": secrets.token_hex(32)})
    assert revived.status_code == 200, revived.text
    body = revived.json()
    assert body["state"] == "active" and "invalidReason" not in body and "invalidAt" not in body
    assert "iphone-dead" not in [d["id"] for d in admin.get("/devices", params={"state": "invalid"}).json()]
    assert admin.delete("/devices/iphone-dead").status_code == 204


def test_cli_device_commands(prefect_server: object, tmp_path: Path) -> None:
    env = os.environ.copy()

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=120)
        assert (p.returncode == 0) == ok, p.stdout + p.stderr
        return p

    token = "e" + secrets.token_urlsafe(16)[:21]  # a Firebase installation id
    added = json.loads(cli("device", "add", "android", token, "--id", "cli-phone", "--label", "lab", "-o", "json").stdout)
    assert added["id"] == "cli-phone" and added["transport"] == "fcm"
    refused = cli("device", "add", "android", "short", ok=False)
    assert "Invalid token" in refused.stderr
    iphone = json.loads(cli("device", "add", "ios", secrets.token_hex(32), "--id", "cli-iphone", "--topic",
                            "com.example.app", "--environment", "sandbox", "-o", "json").stdout)
    assert iphone["environment"] == "sandbox"
    cli("device", "rm", "cli-iphone")
    listed = json.loads(cli("device", "ls", "--label", "lab", "-o", "json").stdout)
    assert [d["id"] for d in listed] == ["cli-phone"]
    # No FCM credentials here: the test push says which setting is missing.
    tested = cli("device", "test", "cli-phone", ok=False)
    assert "BGTASKS_PUSH_FCM_CREDENTIALS_FILE" in tested.stdout + tested.stderr
    cli("device", "rm", "cli-phone")
    assert "no device" in cli("device", "rm", "cli-phone", ok=False).stderr
