"""The pure generators of ``bgtasks service`` (bgtasks/service.py): systemd units, launchd
plists, Task Scheduler XML and the commands around them, plus snapshots of every file.

Snapshots live in tests/snapshots/service/<platform>-<scope>/, generated from fixed,
fake inputs (home, Python path, user, host, auth string) so they are the same on every
machine. The tests only compare; after a deliberate change regenerate them with
``make snapshots`` (tests/update_snapshots.py), never from inside ``make test``.
"""

from __future__ import annotations

import json
import os
import plistlib
import re
from pathlib import Path, PureWindowsPath
from xml.etree import ElementTree as ET

import pytest

from bgtasks import service
from bgtasks.service import Plan, Target, plan
from bgtasks.settings import ServerSettings, Settings

SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots" / "service"
#: A fixed, fake auth string: the snapshots show where the secret goes.
SNAPSHOT_AUTH = "snapshot-auth-string"
FLAVOURS = ("linux", "macos", "windows")
SCOPES = ("user", "system")
NS = {"t": service.TASK_NS}

POSIX_HOME = "/home/alice/.bgtasks"
MAC_HOME = "/Users/alice/.bgtasks"
POSIX_PY = "/opt/bgtasks/.venv/bin/python"
WIN_HOME = r"C:\Users\alice\.bgtasks"
WIN_PY = r"C:\bgtasks\.venv\Scripts\python.exe"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built here must not see the test session's BGTASKS_*/PREFECT_* variables."""
    for key in list(os.environ):
        if key.startswith(("BGTASKS_", "PREFECT_")):
            monkeypatch.delenv(key)


def settings(home: str = POSIX_HOME, **server: object) -> Settings:
    return Settings(home=Path(home), server=ServerSettings(**server))


def target(flavour: service.Flavour = "linux", scope: service.Scope = "user", **kw: object) -> Target:
    windows = flavour == "windows"
    args: dict[str, object] = {
        "flavour": flavour, "scope": scope, "python": WIN_PY if windows else POSIX_PY, "user": "alice",
        "user_home": r"C:\Users\alice" if windows else ("/Users/alice" if flavour == "macos" else "/home/alice"),
        "hostname": "host1", "uid": 501,
    }
    args.update(kw)
    return Target(**args)  # type: ignore[arg-type]


def make(flavour: service.Flavour = "linux", scope: service.Scope = "user", home: str | None = None,
         extra_env: dict[str, str] | None = None, **server: object) -> Plan:
    home = home or {"linux": POSIX_HOME, "macos": MAC_HOME, "windows": WIN_HOME}[flavour]
    return plan(settings(home, **server), target(flavour, scope), extra_env or {})


def unit(p: Plan, name: str) -> str:
    return next(f.text() for f in p.files if f.path.endswith("/" + name))


def values(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


# --------------------------------------------------------------------------- parts


def test_parts_in_start_order_with_the_argv_of_bgtasks_up() -> None:
    parts = service.parts(settings(), target())
    assert [p.name for p in parts] == ["server", "worker", "daemon", "api"]
    server, worker, daemon, api = parts
    assert server.argv == (POSIX_PY, "-m", "bgtasks.prefect_server", "server", "start", "--host", "127.0.0.1", "--port", "4200")
    assert worker.argv == (POSIX_PY, "-m", "prefect", "worker", "start", "--pool", "background-tasks",
                           "--type", "bgtasks-warm", "--limit", "4", "--name", "bgtasks-host1")
    assert daemon.argv == (POSIX_PY, "-m", "triggers.daemon")
    assert api.argv == ("/opt/bgtasks/.venv/bin/bgtasks", "api", "--host", "127.0.0.1", "--port", "4300")
    assert worker.prepare and not server.prepare
    assert {p.stop_signal for p in parts} == {"SIGTERM"}  # Prefect's worker maps it to its graceful SIGINT


def test_no_server_part_with_an_external_prefect_api() -> None:
    p = make(api_url="http://prefect.internal:4200/api")
    assert [x.name for x in p.parts] == ["worker", "daemon", "api"]
    worker = unit(p, "bgtasks-worker.service")
    assert "bgtasks-server" not in worker
    assert values(worker, "ExecStartPre") == [
        "/opt/bgtasks/.venv/bin/bgtasks service wait-server --timeout 120 --prepare"]
    assert 'Environment="PREFECT_API_URL=http://prefect.internal:4200/api"' in worker
    assert "bgtasks-server.service" not in unit(p, "bgtasks.target")


# --------------------------------------------------------------------------- systemd


def test_systemd_stops_worker_daemon_api_before_the_server() -> None:
    """systemd stops in the reverse of After=: API, daemon, worker, then the server."""
    p = make()
    after = {name: values(unit(p, f"bgtasks-{name}.service"), "After") for name in service.PART_NAMES}
    assert after["server"] == []
    assert after["worker"] == ["bgtasks-server.service"]
    assert after["daemon"] == ["bgtasks-server.service", "bgtasks-worker.service"]
    assert after["api"] == ["bgtasks-server.service", "bgtasks-worker.service", "bgtasks-daemon.service"]
    for name in ("worker", "daemon", "api"):
        text = unit(p, f"bgtasks-{name}.service")
        # Stopping or restarting the server stops or restarts them first; a failed server
        # start does not leave them "dependency failed" for good (no Requires=).
        assert values(text, "PartOf") == ["bgtasks.target", "bgtasks-server.service"]
        assert values(text, "Wants") == ["bgtasks-server.service"]
        assert not values(text, "Requires") and not values(text, "BindsTo")


def test_systemd_server_is_active_only_when_healthy_and_the_worker_prepares_the_pool() -> None:
    p = make()
    server = unit(p, "bgtasks-server.service")
    assert values(server, "ExecStartPost") == ["/opt/bgtasks/.venv/bin/bgtasks service wait-server --timeout 120"]
    assert values(server, "TimeoutStartSec") == ["150"]  # longer than the wait itself
    worker = unit(p, "bgtasks-worker.service")
    assert values(worker, "ExecStartPre") == [
        "/opt/bgtasks/.venv/bin/bgtasks service wait-server --timeout 120 --prepare"]
    assert make(start_timeout_s=300.5).files[0].text().count("--timeout 301") == 1


def test_systemd_worker_stop_is_one_signal_then_kill_after_the_grace() -> None:
    """Prefect's second signal would only make the worker SIGKILL itself: systemd's SIGKILL
    after TimeoutStopSec is the same act."""
    worker = unit(make(), "bgtasks-worker.service")
    assert values(worker, "KillSignal") == ["SIGTERM"]
    assert not values(worker, "ExecStop")
    assert values(worker, "KillMode") == ["mixed"]
    assert values(worker, "TimeoutStopSec") == ["30"]
    server = unit(make(), "bgtasks-server.service")
    assert values(server, "KillSignal") == ["SIGTERM"]


def test_systemd_every_service_restarts_on_failure_with_absolute_programs() -> None:
    p = make()
    for name in service.PART_NAMES:
        text = unit(p, f"bgtasks-{name}.service")
        assert values(text, "Restart") == ["on-failure"]
        assert values(text, "RestartSec") == ["5"]
        for key in ("ExecStart", "ExecStartPre", "ExecStartPost"):
            for line in values(text, key):
                assert line.startswith("/opt/bgtasks/.venv/bin/"), line
        assert values(text, "WorkingDirectory") == [POSIX_HOME]


def test_systemd_user_and_system_scopes() -> None:
    user, system = make(scope="user"), make(scope="system")
    assert {Path(f.path).parent.as_posix() for f in user.files} == {"/home/alice/.config/systemd/user"}
    assert {Path(f.path).parent.as_posix() for f in system.files} == {"/etc/systemd/system"}
    assert values(unit(user, "bgtasks.target"), "WantedBy") == ["default.target"]
    assert values(unit(system, "bgtasks.target"), "WantedBy") == ["multi-user.target"]
    assert values(unit(user, "bgtasks.target"), "Wants") == [f"bgtasks-{n}.service" for n in service.PART_NAMES]
    assert values(unit(system, "bgtasks-server.service"), "User") == ["alice"]
    assert not values(unit(user, "bgtasks-server.service"), "User")
    assert "After=network-online.target" in unit(system, "bgtasks-server.service")
    assert user.install[0].argv == ("systemctl", "--user", "daemon-reload")
    assert [s.argv for s in system.install] == [("systemctl", "daemon-reload"), ("systemctl", "enable", "bgtasks.target"),
                                                ("systemctl", "restart", "bgtasks.target")]
    assert user.logs_command(20, True, ("worker",)) == (
        "journalctl", "--user", "-u", "bgtasks-worker.service", "-n", "20", "--no-pager", "-f")
    assert system.logs_command(50, False)[:3] == ("journalctl", "-u", "bgtasks-server.service")


def test_systemd_environment_has_the_prefect_env_and_settings() -> None:
    s = settings()
    text = unit(make(), "bgtasks-api.service")
    for key, value in s.prefect_env().items():
        assert f'Environment="{key}={value}"' in text
    assert f'Environment="BGTASKS_HOME={POSIX_HOME}"' in text
    assert 'Environment="PATH=/opt/bgtasks/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"' in text
    env_lines = [line for line in text.splitlines() if line.startswith("Environment=")]
    assert env_lines == sorted(env_lines)


def test_shell_variables_pass_through_but_settings_win() -> None:
    p = make(extra_env={"BGTASKS_PUSH_SENDER": "memory", "PREFECT_LOGGING_LEVEL": "DEBUG",
                        "PREFECT_API_URL": "http://elsewhere/api", "HOME": "/x", "SSH_AUTH_SOCK": "/tmp/s"})
    text = unit(p, "bgtasks-worker.service")
    assert 'Environment="BGTASKS_PUSH_SENDER=memory"' in text
    assert 'Environment="PREFECT_LOGGING_LEVEL=DEBUG"' in text
    assert 'Environment="PREFECT_API_URL=http://127.0.0.1:4200/api"' in text
    assert "elsewhere" not in text and "SSH_AUTH_SOCK" not in text and "HOME=/x" not in text


def test_systemd_quoting_of_spaces_percent_quotes_backslashes_and_dollars() -> None:
    assert service.systemd_word("plain/path") == "plain/path"
    assert service.systemd_word("a b") == '"a b"'
    assert service.systemd_word("50%") == "50%%"
    assert service.systemd_word("$HOME") == "$$HOME"
    assert service.systemd_word('say "hi"') == '"say \\"hi\\""'
    assert service.systemd_word("a\\b") == '"a\\\\b"'
    assert service.systemd_word(";") == '";"'
    assert service.systemd_word("") == '""'
    assert service.systemd_env("K", 'a b%c"d\\e$f') == 'Environment="K=a b%%c\\"d\\\\e$f"'
    home = '/home/al ice/100% "bg"'
    p = make(home=home)
    server = unit(p, "bgtasks-server.service")
    assert 'Environment="BGTASKS_HOME=/home/al ice/100%% \\"bg\\""' in server
    assert values(server, "WorkingDirectory") == ['/home/al ice/100%% "bg"']
    spaced = plan(settings(), target(python="/opt/my venv/bin/python"))
    assert values(unit(spaced, "bgtasks-server.service"), "ExecStart")[0].startswith(
        '"/opt/my venv/bin/python" -m bgtasks.prefect_server server start')


def test_control_characters_are_refused() -> None:
    with pytest.raises(ValueError, match="BGTASKS_PUSH_FCM_URL"):
        make(extra_env={"BGTASKS_PUSH_FCM_URL": "http://x\nExecStartPre=/bin/evil"})


def test_files_with_secrets_are_private() -> None:
    assert {f.mode for f in make().files} == {0o644}
    secret = make(database_url="postgresql+asyncpg://bg:s3cret@db:5432/prefect", auth_string="the-auth-string")
    # Secrets go in the 0600 EnvironmentFile only: `systemctl show` prints Environment= to anyone.
    units = [f for f in secret.files if f.path.endswith(".service")]
    assert {f.mode for f in units} == {0o644}
    assert not any("s3cret" in f.text() or "the-auth-string" in f.text() for f in units)
    env_file = next(f for f in secret.files if f.path.endswith("/service/secrets.env"))
    assert env_file.mode == 0o600
    assert "BGTASKS_SERVER_DATABASE_URL='postgresql+asyncpg://bg:s3cret@db:5432/prefect'" in env_file.text()
    assert "PREFECT_SERVER_API_AUTH_STRING='the-auth-string'" in env_file.text()
    assert all(values(f.text(), "EnvironmentFile") == ["/home/alice/.bgtasks/service/secrets.env"] for f in units)
    assert service.has_secret({"PREFECT_API_AUTH_STRING": "x"}) and service.has_secret({"PREFECT_API_KEY": "x"})
    assert service.has_secret({"BGTASKS_SERVER_DATABASE_URL": "postgresql://u:pw@h/db"})
    assert not service.has_secret({"BGTASKS_PUSH_APNS_KEY_FILE": "/k.p8", "PREFECT_HOME": "/h"})
    assert not service.has_secret({"PREFECT_API_URL": "http://127.0.0.1:4200/api"})
    windows = make("windows", database_url="postgresql+asyncpg://bg:s3cret@db/prefect")
    assert next(f for f in windows.files if f.path.endswith("env.json")).mode == 0o600


# --------------------------------------------------------------------------- launchd


def plists(p: Plan) -> dict[str, dict]:
    return {Path(f.path).name: plistlib.loads(f.content) for f in p.files}


def test_launchd_plists_run_the_parts_and_wait_for_the_server() -> None:
    p = make("macos")
    docs = plists(p)
    assert sorted(docs) == sorted(f"dev.bgtasks.{n}.plist" for n in service.PART_NAMES)
    server = docs["dev.bgtasks.server.plist"]
    assert server["Label"] == "dev.bgtasks.server"
    assert server["ProgramArguments"] == list(service.parts(settings(), target("macos"))[0].argv)
    assert server["RunAtLoad"] is True and server["KeepAlive"] == {"SuccessfulExit": False}
    assert server["StandardOutPath"] == server["StandardErrorPath"] == f"{MAC_HOME}/logs/server.log"
    worker = docs["dev.bgtasks.worker.plist"]["ProgramArguments"]
    sep = worker.index("--")
    assert worker[:sep] == ["/opt/bgtasks/.venv/bin/bgtasks", "service", "run", "--wait-server", "120", "--prepare"]
    assert worker[sep + 1:sep + 6] == [POSIX_PY, "-m", "prefect", "worker", "start"]
    assert docs["dev.bgtasks.worker.plist"]["ExitTimeOut"] == 30
    api = docs["dev.bgtasks.api.plist"]["ProgramArguments"]
    assert "--prepare" not in api and api[api.index("--") + 1:][:2] == ["/opt/bgtasks/.venv/bin/bgtasks", "api"]
    assert docs["dev.bgtasks.api.plist"]["EnvironmentVariables"]["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert all(Path(f.path).parent.as_posix() == "/Users/alice/Library/LaunchAgents" for f in p.files)


def test_launchd_scopes_domains_and_stop_order() -> None:
    user, system = make("macos", "user"), make("macos", "system")
    assert ("launchctl", "bootstrap", "gui/501", "/Users/alice/Library/LaunchAgents/dev.bgtasks.server.plist") in [
        s.argv for s in user.install]
    sys_docs = plists(system)
    assert all(d["UserName"] == "alice" for d in sys_docs.values())
    assert sys_docs["dev.bgtasks.server.plist"]["EnvironmentVariables"]["HOME"] == "/Users/alice"
    assert all(f.path.startswith("/Library/LaunchDaemons/") for f in system.files)
    assert [s.argv[-1] for s in system.uninstall] == [f"system/dev.bgtasks.{n}" for n in ("api", "daemon", "worker", "server")]
    bootstraps = [s.argv[-1] for s in user.install if s.argv[1] == "bootstrap"]
    assert [Path(b).stem for b in bootstraps] == [f"dev.bgtasks.{n}" for n in service.PART_NAMES]
    assert user.logs_command(10, False) is None
    assert user.log_files == tuple(f"{MAC_HOME}/logs/{n}.log" for n in service.PART_NAMES)


# --------------------------------------------------------------------------- Windows


def task(p: Plan, part: str) -> ET.Element:
    f = next(f for f in p.files if f.path.endswith(f"bgtasks-{part}.xml"))
    assert f.content.startswith(b"\xff\xfe")  # UTF-16 LE with BOM, as schtasks /XML expects
    text = f.content[2:].decode("utf-16-le")
    assert text.startswith('<?xml version="1.0" encoding="UTF-16"?>\r\n')
    return ET.fromstring(text.split("\r\n", 1)[1])


def test_windows_tasks_are_task_scheduler_xml() -> None:
    p = make("windows")
    root = task(p, "worker")
    assert root.tag == f"{{{service.TASK_NS}}}Task"
    assert root.findtext("t:RegistrationInfo/t:URI", namespaces=NS) == "\\bgtasks\\worker"
    assert root.find("t:Triggers/t:LogonTrigger", NS) is not None
    assert root.findtext("t:Principals/t:Principal/t:LogonType", namespaces=NS) == "InteractiveToken"
    assert root.findtext("t:Settings/t:ExecutionTimeLimit", namespaces=NS) == "PT0S"
    assert root.findtext("t:Settings/t:DisallowStartIfOnBatteries", namespaces=NS) == "false"
    action = root.find("t:Actions/t:Exec", NS)
    assert action is not None
    assert action.findtext("t:Command", namespaces=NS) == r"C:\bgtasks\.venv\Scripts\pythonw.exe"
    args = action.findtext("t:Arguments", namespaces=NS) or ""
    assert args.startswith(f'-c "{service.CLI_BOOTSTRAP}" service run --env-file C:\\Users\\alice\\.bgtasks\\service\\env.json')
    assert "--restart-s 5 --wait-server 120 --prepare -- " in args
    assert args.endswith("--name bgtasks-host1")
    assert action.findtext("t:WorkingDirectory", namespaces=NS) == WIN_HOME
    system = task(make("windows", "system"), "server")
    assert system.find("t:Triggers/t:BootTrigger", NS) is not None
    assert system.findtext("t:Principals/t:Principal/t:LogonType", namespaces=NS) == "S4U"
    assert "--wait-server" not in (system.findtext("t:Actions/t:Exec/t:Arguments", namespaces=NS) or "")


def test_windows_env_file_paths_and_commands() -> None:
    p = make("windows")
    env_file = next(f for f in p.files if f.path.endswith("env.json"))
    assert env_file.path == r"C:\Users\alice\.bgtasks\service\env.json"
    env = json.loads(env_file.content)
    assert env["PREFECT_HOME"] == r"C:\Users\alice\.bgtasks\prefect"
    assert env["BGTASKS_HOME"] == WIN_HOME and "PATH" not in env
    assert p.install[0].argv == ("schtasks", "/Create", "/XML", r"C:\Users\alice\.bgtasks\service\bgtasks-server.xml",
                                 "/TN", "bgtasks\\server", "/F")
    assert [s.argv[3] for s in p.uninstall if s.argv[1] == "/End"] == [
        "bgtasks\\api", "bgtasks\\daemon", "bgtasks\\worker", "bgtasks\\server"]
    assert p.log_files[1] == r"C:\Users\alice\.bgtasks\logs\worker.log"
    assert str(PureWindowsPath(p.dirs[2])) == r"C:\Users\alice\.bgtasks\prefect"


# --------------------------------------------------------------------------- all platforms


@pytest.mark.parametrize("flavour", ["linux", "macos", "windows"])
@pytest.mark.parametrize("scope", ["user", "system"])
def test_generation_is_deterministic(flavour: service.Flavour, scope: service.Scope) -> None:
    a, b = make(flavour, scope), make(flavour, scope)
    assert a == b
    assert [f.content for f in a.files] == [f.content for f in b.files]
    for f in a.files:
        assert not re.search(rb"20\d\d-\d\d-\d\d", f.content.replace(b"\x00", b""))  # no timestamps


@pytest.mark.parametrize("flavour", ["linux", "macos", "windows"])
def test_stop_order_is_api_daemon_worker_server(flavour: service.Flavour) -> None:
    p = make(flavour, "system")
    if flavour == "linux":  # one `systemctl stop` transaction: systemd orders it by After=
        stop = next(s for s in p.uninstall if s.argv[1] == "stop")
        assert set(stop.argv[2:]) == {"bgtasks.target", *p.units}
        return
    first_four = [s.argv for s in p.uninstall][:4]  # launchctl bootout / schtasks /End
    names = [next(n for n in service.PART_NAMES if any(a.endswith(n) for a in argv)) for argv in first_four]
    assert names == ["api", "daemon", "worker", "server"]


def test_status_parsers() -> None:
    assert service.parse_systemctl_show("Id=bgtasks-server.service\nActiveState=active\nMainPID=42\n") == {
        "Id": "bgtasks-server.service", "ActiveState": "active", "MainPID": "42"}
    launchctl = ("gui/501/dev.bgtasks.server = {\n\tactive count = 1\n\tstate = running\n\tpid = 812\n"
                 "\tenvironment = {\n\t\tstate = nested\n\t}\n\tlast exit code = 0\n}\n")
    assert service.parse_launchctl_print(launchctl) == {
        "active count": "1", "state": "running", "pid": "812", "last exit code": "0"}
    assert service.parse_schtasks_csv('"\\bgtasks\\server","N/A","Running"\r\n') == {
        "TaskName": "\\bgtasks\\server", "Next Run Time": "N/A", "Status": "Running"}
    assert service.parse_schtasks_csv("") == {}


# --------------------------------------------------------------------------- snapshots


def _snapshot_name(path: str, flavour: str) -> str:
    return PureWindowsPath(path).name if flavour == "windows" else Path(path).name


def _commands(p: Plan) -> str:
    f = p.target.flavour
    out = []
    for title, steps in (("install", p.install), ("uninstall", p.uninstall), ("after_remove", p.after_remove),
                         ("status", p.status)):
        out.append(f"# {title}")
        out += [("" if s.check else "(may fail) ") + service.command_line(s.argv, f) for s in steps]
    logs = p.logs_command(50, True)
    out += ["# logs", service.command_line(logs, f) if logs else "tail: " + " ".join(p.log_files)]
    out += ["# modes"] + [f"{f_.mode:04o} {_snapshot_name(f_.path, f)}" for f_ in p.files]
    return "\n".join(out) + "\n"


def expected_snapshots(flavour: service.Flavour, scope: service.Scope) -> dict[str, bytes]:
    """The snapshot files of one platform and scope, by name."""
    p = make(flavour, scope, extra_env={"BGTASKS_PUSH_SENDER": "memory"}, auth_string=SNAPSHOT_AUTH)
    expected = {_snapshot_name(f.path, flavour): f.content for f in p.files}
    expected["commands.txt"] = _commands(p).encode()
    return expected


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("scope", SCOPES)
def test_snapshots(flavour: service.Flavour, scope: service.Scope) -> None:
    expected = expected_snapshots(flavour, scope)
    directory = SNAPSHOTS / f"{flavour}-{scope}"
    have = {x.name for x in directory.iterdir()} if directory.is_dir() else set()
    assert have == set(expected), (f"snapshot files differ in {directory}; after a deliberate change "
                                   "regenerate with `make snapshots`")
    for name, content in expected.items():
        assert (directory / name).read_bytes() == content, (
            f"{directory / name} differs from the generated file; after a deliberate change regenerate "
            "with `make snapshots`")
