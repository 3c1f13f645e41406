"""The pure parts of the doors: Host and Origin checks, the JSON pre-check, safe text, the
home's secrets and modes, the settings that decide who may connect."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from bgtasks.api.middleware import BodyLimits, TokenAuth, json_problem
from bgtasks.guard import HostOriginGuard, host_name
from bgtasks.home import check_private, ensure_home, read_or_create_secret, write_private
from bgtasks.settings import Settings, allowed_hosts, is_loopback, origins
from bgtasks.text import printable, unsafe_char


def call(app: Any, method: str = "GET", path: str = "/x", headers: dict[str, str] | None = None,
         body: bytes = b"", type_: str = "http") -> tuple[int | None, bytes, bool]:
    """Run ``app(inner)`` (a middleware around an echo app) on one request: (status, body,
    whether the inner app was reached)."""
    reached = False

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        nonlocal reached
        reached = True
        message = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message.get("body", b"")})

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": type_, "method": method, "path": path,
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    asyncio.run(app(inner)(scope, receive, send))
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    if type_ == "websocket" and sent and sent[0]["type"] == "websocket.close":
        status = 403
    return status, data, reached


def guard(inner: Any) -> HostOriginGuard:
    return HostOriginGuard(inner, ["127.0.0.1", "localhost", "::1"], ["http://127.0.0.1:4200"])


@pytest.mark.parametrize(("header", "name"), [
    ("127.0.0.1:4200", "127.0.0.1"), ("LOCALHOST", "localhost"), ("[::1]:4200", "::1"), ("::1", "::1"),
    ("evil.example:80", "evil.example"),
])
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(("headers", "status"), [
    ({"Host": "127.0.0.1:4200"}, 200),
    ({"Host": "[::1]:4200"}, 200),
    ({"Host": "evil.example:4200"}, 400),
    ({}, 400),  # no Host at all (HTTP/1.0): not ours either
    ({"Host": "localhost:4200", "Origin": "http://127.0.0.1:4200"}, 200),
    ({"Host": "localhost:4200", "Origin": "http://evil.example"}, 403),
    ({"Host": "localhost:4200", "Origin": "null"}, 403),
    ({"Host": "localhost:4200", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}, 403),
    ({"Host": "localhost:4200", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, 200),
    ({"Host": "localhost:4200", "Sec-Fetch-Site": "same-origin"}, 200),
])
def test_the_guard_refuses_foreign_hosts_and_origins(headers: dict[str, str], status: int) -> None:
    got, _, reached = call(guard, headers=headers)
    assert got == status and reached == (status == 200)


def test_a_cross_site_post_is_not_a_navigation() -> None:
    headers = {"Host": "localhost:4200", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert call(guard, method="POST", headers=headers)[0] == 403


def test_the_guard_closes_a_foreign_websocket() -> None:
    status, _, reached = call(guard, headers={"Host": "127.0.0.1:4200", "Origin": "http://evil.example"},
                              type_="websocket")
    assert status == 403 and not reached


@pytest.mark.parametrize(("body", "problem"), [
    (b'{"a": [1, 2, {"b": "x"}]}', None),
    (b"[" * 65 + b"]" * 65, "JSON nested deeper than 64 levels"),
    (b"[" * 64 + b"]" * 64, None),
    (b'{"x": NaN}', "NaN and Infinity are not JSON numbers"),
    (b'[1, -Infinity]', "NaN and Infinity are not JSON numbers"),
    (b'{"x": "NaN Infinity [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', None),
    (b'{"x": "a \\" [[[ \\\\"}', None),
])
def test_json_problem(body: bytes, problem: str | None) -> None:
    assert json_problem(body, 64) == problem


def test_json_problem_is_linear_on_a_large_body() -> None:
    # An unterminated string of 1 MiB: scanned once, not once per character.
    assert json_problem(b'"' + b"\\a" * 500_000, 64) is None


def test_body_limits_refuse_large_and_deep_bodies_and_replay_the_rest() -> None:
    limits = lambda inner: BodyLimits(inner, max_bytes=100, max_depth=4)  # noqa: E731
    json_type = {"Host": "h", "Content-Type": "application/json"}
    assert call(limits, "POST", body=b"x" * 101, headers=json_type)[:2][0] == 413
    assert call(limits, "POST", body=b"1", headers={**json_type, "Content-Length": "1000"})[0] == 413
    assert call(limits, "POST", body=b"[[[[[]]]]]", headers=json_type)[0] == 400
    status, echoed, reached = call(limits, "POST", body=b'{"ok": [1]}', headers=json_type)
    assert (status, echoed, reached) == (200, b'{"ok": [1]}', True)


def test_token_auth_answers_401_before_the_app() -> None:
    async def verify(scope: Any, secret: str) -> Any:
        return {"name": "t"} if secret == "good" else None

    auth = lambda inner: TokenAuth(inner, verify)  # noqa: E731
    assert call(auth, "POST", body=b"\x00")[0:3:2] == (401, False)
    assert call(auth, headers={"Authorization": "Bearer bad"})[0] == 401
    assert call(auth, headers={"Authorization": "Basic good"})[0] == 401
    assert call(auth, headers={"Authorization": "Bearer good"})[0:3:2] == (200, True)
    assert call(auth, path="/health")[0:3:2] == (200, True)
    assert call(lambda inner: TokenAuth(inner, verify, enabled=False))[0] == 200


@pytest.mark.parametrize(("text", "found"), [
    ("plain name", None), ("ünïcødé ✓ 日本", None), ("a\x1b[31m", "U+001B"), ("a\u202eb", "U+202E"),
    ("a\u2066b", "U+2066"), ("line\nbreak", "U+000A"), ("del\x7f", "U+007F"), ("c1\x9b", "U+009B"),
    ("para\u2029", "U+2029"),
])
def test_unsafe_characters(text: str, found: str | None) -> None:
    assert unsafe_char(text) == found


def test_printable_shows_controls_as_escapes() -> None:
    assert printable("red\x1b[31m and \u202egpj.exe\nnext") == "red\\x1b[31m and \\u202egpj.exe\nnext"
    assert printable("ok") == "ok"


def test_a_generated_secret_is_private_and_stable(tmp_path: Path) -> None:
    home = ensure_home(tmp_path / "home")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    path = home / "secrets" / "s"
    first = read_or_create_secret(path)
    assert len(first) >= 43 and read_or_create_secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["s"]  # no temporary file left
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        read_or_create_secret(path)


def test_processes_racing_to_create_the_secret_read_the_same_one(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(read_or_create_secret(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and len(got) == 8


def test_an_older_open_home_is_tightened(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    ensure_home(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_private_files_are_private_from_the_first_byte(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_private(tmp_path / "f", b"data")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o600
    check_private(tmp_path / "f", "file")


def test_allowed_hosts_and_origins() -> None:
    assert allowed_hosts("127.0.0.1", []) == ["127.0.0.1", "localhost", "::1"]
    assert allowed_hosts("10.1.2.3", ["Bgtasks.Example.com"]) == ["127.0.0.1", "localhost", "::1", "10.1.2.3",
                                                                  "bgtasks.example.com"]
    wildcard = allowed_hosts("0.0.0.0", [])
    import socket

    assert socket.gethostname().lower() in wildcard and "evil.example" not in wildcard
    assert origins(["127.0.0.1", "::1"], 4200, ["https://ui.example.com/"]) == [
        "http://127.0.0.1:4200", "http://[::1]:4200", "https://ui.example.com"]
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example.com")


def test_the_prefect_environment_carries_the_auth_string_and_the_browser_rules() -> None:
    s = Settings(home=Path("/h"), server={"auth_string": "s3cret", "port": 4201})  # type: ignore[arg-type]
    env = s.prefect_env()
    assert env["PREFECT_API_AUTH_STRING"] == env["PREFECT_SERVER_API_AUTH_STRING"] == "s3cret"
    assert env["PREFECT_SERVER_CSRF_PROTECTION_ENABLED"] == "true"
    assert env["PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"] == (
        "http://127.0.0.1:4201,http://localhost:4201,http://[::1]:4201")
    external = Settings(home=Path("/h"), server={"api_url": "https://p.example/api"})  # type: ignore[arg-type]
    assert "PREFECT_SERVER_API_AUTH_STRING" not in external.prefect_env()
    assert "PREFECT_API_AUTH_STRING" not in external.prefect_env()  # the user's own, if any, stays


@pytest.mark.parametrize(("url", "ok"), [
    ("https://api.example.com", True), ("http://127.0.0.1:4300", True), ("http://localhost:4300/", True),
    ("http://api.example.com", False), ("ftp://api.example.com", False), ("api.example.com", False),
])
def test_the_public_url_must_be_https_off_loopback(url: str, ok: bool) -> None:
    from pydantic import ValidationError

    from bgtasks.settings import PushSettings

    if ok:
        assert PushSettings(public_url=url).public_url == url.rstrip("/")
    else:
        with pytest.raises(ValidationError, match="must be https"):
            PushSettings(public_url=url)


def test_an_allowed_network_admits_its_addresses_only() -> None:
    def with_network(inner: Any) -> HostOriginGuard:
        return HostOriginGuard(inner, ["127.0.0.1", "10.192.0.0/10"], [])

    assert call(with_network, headers={"Host": "10.200.3.1:4200"})[0] == 200
    assert call(with_network, headers={"Host": "10.1.2.3:4200"})[0] == 400
    assert call(with_network, headers={"Host": "evil.example"})[0] == 400
