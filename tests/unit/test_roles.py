"""The multi-host roles (bgtasks.parts.role_parts) and the settings they need."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from bgtasks.parts import role_parts, role_problems
from bgtasks.settings import ServerSettings, Settings, redis_env

PG = "postgresql+asyncpg://prefect@db:5432/prefect"


def _cluster_settings(**server: object) -> Settings:
    s = Settings()
    s.server = ServerSettings(database_url=PG, redis_url="redis://redis:6379/0", api_url="http://lb:4200/api",
                              auth_string=SecretStr("s3cret"), **server)
    return s


def test_each_role_runs_alone_with_its_argv() -> None:
    s = _cluster_settings()
    parts = {p.name: p for p in role_parts(s, ("server-api", "server-services", "worker", "daemon", "api"),
                                             "/py", "/bgtasks", "bgtasks-h1")}
    assert list(parts) == ["server-api", "server-services", "worker", "daemon", "api"]
    assert parts["server-api"].argv[1:6] == ("-m", "bgtasks.prefect_server", "server", "start", "--no-services")
    assert parts["server-services"].argv[1:] == ("-m", "bgtasks.prefect_server", "server", "services", "start")
    assert parts["worker"].argv[-1] == "bgtasks-h1"
    only = role_parts(s, ("daemon",), "/py", "/bgtasks", "w")
    assert [p.name for p in only] == ["daemon"]
    with pytest.raises(ValueError, match="unknown role 'server'"):
        role_parts(s, ("server",), "/py", "/bgtasks", "w")


def test_the_roles_name_what_their_settings_lack() -> None:
    assert role_problems(_cluster_settings(), ("server-api", "worker")) == []
    bare = Settings()
    bare.server = ServerSettings()
    problems = role_problems(bare, ("server-api", "worker"))
    assert [p.split(":")[0] for p in problems] == ["BGTASKS_SERVER_DATABASE_URL", "BGTASKS_SERVER_REDIS_URL",
                                                   "BGTASKS_SERVER_AUTH_STRING", "BGTASKS_SERVER_API_URL"]


def test_server_processes_share_redis_and_serve_with_the_auth_string_clients_do_not() -> None:
    s = _cluster_settings()
    serving = s.prefect_env(serving=True)
    assert {k: serving[k] for k in redis_env("x")} == redis_env("redis://redis:6379/0")
    assert serving["PREFECT_SERVER_API_AUTH_STRING"] == "s3cret"
    assert serving["PREFECT_SERVER_CSRF_PROTECTION_ENABLED"] == "true"
    client = s.prefect_env()  # api_url set: a host of the cluster, not a server
    assert "PREFECT_SERVER_API_AUTH_STRING" not in client and "PREFECT_MESSAGING_BROKER" not in client
    assert client["PREFECT_API_URL"] == "http://lb:4200/api"


def test_bad_redis_settings_are_refused_naming_the_reason() -> None:
    with pytest.raises(ValidationError, match="redis_url"):
        ServerSettings(redis_url="http://redis:6379")
    with pytest.raises(ValidationError, match="PostgreSQL"):
        ServerSettings(redis_url="redis://redis:6379/0")  # on SQLite


def test_service_install_with_roles_writes_the_roles_units_and_one_private_environment_file() -> None:
    from bgtasks.service import Target, plan

    s = _cluster_settings()
    target = Target("linux", "system", "/opt/bgtasks/bin/python", "bgtasks", "/home/bgtasks", "node1",
                    roles=("server-api", "worker"))
    p = plan(s, target)
    assert p.units == ("bgtasks-server-api.service", "bgtasks-worker.service")
    files = {f.path.rsplit("/", 1)[-1]: f for f in p.files}
    env = files["bgtasks.env"]
    assert env.mode == 0o600
    text = env.text()
    for line in ("PREFECT_MESSAGING_BROKER='prefect_redis.messaging'", "BGTASKS_HOST_NAME='node1'",
                 "PREFECT_SERVER_API_AUTH_STRING='s3cret'", "PREFECT_API_URL='http://lb:4200/api'"):
        assert line in text
    for unit in p.units:
        body = files[unit].text()
        assert "Environment=" not in body.replace("EnvironmentFile=", "") and "s3cret" not in body
    assert "--no-services" in files["bgtasks-server-api.service"].text()
    with pytest.raises(ValueError, match="systemd"):
        plan(s, Target("macos", "user", "/py", "u", "/Users/u", "node1", roles=("worker",)))
