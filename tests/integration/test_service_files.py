"""``bgtasks service``'s files checked by real tools, and its commands run against fakes.

- The systemd units pass ``systemd-analyze verify`` (Debian's ``systemd`` package; no
  running systemd needed): it parses every line, checks the dependencies and that the
  ``Exec*=`` programs exist, so the units are generated with this environment's real
  Python. Missing ``systemd-analyze`` fails under CI and skips elsewhere.
- launchd plists load with ``plistlib`` and name existing programs; Task Scheduler XML
  parses with ElementTree in its namespace.
- ``install`` refuses in one line when the service manager is missing, ``--dry-run``
  writes nothing, and install/status/uninstall run the expected ``systemctl`` commands
  (a fake ``systemctl`` on PATH records them).
- The hidden helpers the services call: ``wait-server`` against a local HTTP server,
  ``run`` execs its program (same PID), ``supervise`` restarts on failure and forwards
  SIGTERM.

No Prefect server is needed.
"""

from __future__ import annotations

import getpass
import http.server
import json
import os
import plistlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from bgtasks import cli, service
from bgtasks.cli import _common as cli_common
from bgtasks.cli import service_cmds
from bgtasks.cli.service_cmds import service_app
from bgtasks.settings import ServerSettings, Settings

PY = str(Path(sys.executable).absolute())
BGTASKS = str(Path(PY).with_name("bgtasks"))
NS = {"t": service.TASK_NS}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("BGTASKS_", "PREFECT_")):
            monkeypatch.delenv(key)


def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        msg = ("systemd-analyze is missing: apt-get install -y --no-install-recommends systemd "
               "(Debian's systemd package; it need not run)")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def verify(p: service.Plan, tmp_path: Path) -> None:
    """Write ``p``'s units into a directory and run ``systemd-analyze verify`` on them: no output allowed
    (it reports bad lines as warnings with exit code 0)."""
    units = tmp_path / f"units-{p.target.scope}"
    units.mkdir()
    for f in p.files:
        if f.path.endswith((".service", ".target")):
            (units / Path(f.path).name).write_bytes(f.content)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    cmd = [systemd_analyze(), *(["--user"] if p.target.scope == "user" else []), "verify", "--man=no",
           *sorted(x.name for x in units.iterdir())]
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_COLOR": "0"}
    r = subprocess.run(cmd, cwd=units, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), (
        f"systemd-analyze verify ({p.target.scope}):\n{r.stdout}{r.stderr}")


def real_target(scope: service.Scope, tmp_path: Path, python: str = PY, flavour: service.Flavour = "linux") -> service.Target:
    return service.Target(flavour=flavour, scope=scope, python=python, user=getpass.getuser(),
                          user_home=str(tmp_path / "userhome"), hostname="testhost", uid=os.getuid())


# --------------------------------------------------------------------------- systemd-analyze verify


@pytest.mark.parametrize("scope", ["user", "system"])
def test_units_pass_systemd_analyze_verify(scope: service.Scope, tmp_path: Path, clean_env: None) -> None:
    s = Settings(home=tmp_path / "bg")
    verify(service.plan(s, real_target(scope, tmp_path), {"BGTASKS_PUSH_SENDER": "memory"}), tmp_path)


def test_units_with_awkward_paths_and_values_pass_verify(tmp_path: Path, clean_env: None) -> None:
    """Spaces, %, quotes, backslashes and $ in the home, the Python path and the environment."""
    venv = tmp_path / "my venv 100%" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(PY)
    (venv / "bgtasks").symlink_to(BGTASKS)
    s = Settings(home=tmp_path / 'home with "quotes" and 50% \\ $HOME',
                 server=ServerSettings(database_url="postgresql+asyncpg://bg:p%40ss$word@db:5432/prefect"))
    p = service.plan(s, real_target("system", tmp_path, python=str(venv / "python")),
                     {"BGTASKS_PUSH_FCM_URL": "http://fake:1/v1/%s?a=1&b=\"2\""})
    # The password in the URL goes to the 0600 EnvironmentFile, not into the units.
    assert {f.mode for f in p.files if f.path.endswith(".service")} == {0o644}
    assert next(f for f in p.files if f.path.endswith("secrets.env")).mode == 0o600
    assert not any("p%40ss" in f.text() for f in p.files if f.path.endswith(".service"))
    verify(p, tmp_path)


def test_units_for_an_external_prefect_api_pass_verify(tmp_path: Path, clean_env: None) -> None:
    s = Settings(home=tmp_path / "bg", server=ServerSettings(api_url="http://prefect.internal:4200/api"))
    p = service.plan(s, real_target("user", tmp_path))
    assert [x.name for x in p.parts] == ["worker", "daemon", "api"]
    verify(p, tmp_path)


def test_verify_catches_a_broken_unit(tmp_path: Path, clean_env: None) -> None:
    """The check above can fail: a missing program and a bad escape are reported."""
    p = service.plan(Settings(home=tmp_path / "bg"), real_target("system", tmp_path, python="/nonexistent/python"))
    with pytest.raises(AssertionError, match="not executable"):
        verify(p, tmp_path)


# --------------------------------------------------------------------------- launchd and Task Scheduler


@pytest.mark.parametrize("scope", ["user", "system"])
def test_launchd_plists_parse_and_name_existing_programs(scope: service.Scope, tmp_path: Path,
                                                         clean_env: None) -> None:
    s = Settings(home=tmp_path / "bg")
    p = service.plan(s, real_target(scope, tmp_path, flavour="macos"))
    parts = {x.name: x for x in p.parts}
    for f in p.files:
        doc = plistlib.loads(f.content)
        assert plistlib.loads(plistlib.dumps(doc, sort_keys=True)) == doc
        name = doc["Label"].removeprefix("dev.bgtasks.")
        args = doc["ProgramArguments"]
        assert Path(args[0]).exists(), args[0]
        if name == "server":
            assert args == list(parts["server"].argv)
        else:
            assert args[:3] == [BGTASKS, "service", "run"]
            assert args[args.index("--") + 1:] == list(parts[name].argv)
            assert Path(args[args.index("--") + 1]).exists()
        assert doc["EnvironmentVariables"]["BGTASKS_HOME"] == str(tmp_path / "bg")
        assert ("UserName" in doc) == (scope == "system")


@pytest.mark.parametrize("scope", ["user", "system"])
def test_task_scheduler_xml_is_well_formed(scope: service.Scope, clean_env: None) -> None:
    s = Settings(home=Path(r"C:\Users\bob\.bgtasks"))
    t = service.Target("windows", scope, r"C:\Program Files\bgtasks\Scripts\python.exe", "bob",
                       r"C:\Users\bob", "pc")
    p = service.plan(s, t)
    xmls = [f for f in p.files if f.path.endswith(".xml")]
    assert len(xmls) == 4
    for f, part in zip(xmls, p.parts, strict=True):
        root = ET.fromstring(f.content.decode("utf-16").split("\n", 1)[1])  # the BOM selects the byte order
        assert root.tag == f"{{{service.TASK_NS}}}Task" and root.get("version") == "1.2"
        trigger = "LogonTrigger" if scope == "user" else "BootTrigger"
        assert root.find(f"t:Triggers/t:{trigger}/t:Enabled", NS).text == "true"  # type: ignore[union-attr]
        exec_ = root.find("t:Actions/t:Exec", NS)
        assert exec_ is not None
        assert exec_.findtext("t:Command", namespaces=NS) == r"C:\Program Files\bgtasks\Scripts\pythonw.exe"
        args = exec_.findtext("t:Arguments", namespaces=NS) or ""
        # The part's argv, quoted as Windows parses command lines, ends the arguments.
        assert args.endswith(subprocess.list2cmdline(["--", *part.argv]))
        assert '"C:\\Program Files\\bgtasks\\Scripts\\python.exe"' in args or part.name == "api"
    env = json.loads(next(f for f in p.files if f.path.endswith("env.json")).content)
    assert env["PREFECT_HOME"] == r"C:\Users\bob\.bgtasks\prefect"


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home, a bgtasks home and fresh CLI settings; nothing outside tmp_path is touched."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("BGTASKS_HOME", str(tmp_path / "bg"))
    monkeypatch.setattr(cli_common, "_settings", None)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("SUDO_USER", raising=False)
    # Ports where nothing listens, whatever else this test session runs (its Prefect server).
    from tests.conftest import free_port

    monkeypatch.setenv("BGTASKS_SERVER_PORT", str(free_port()))
    monkeypatch.setenv("BGTASKS_API_PORT", str(free_port()))
    for key in [k for k in os.environ if k.startswith("PREFECT_")]:
        monkeypatch.delenv(key)
    return tmp_path


def call(*argv: str) -> object:
    return service_app(list(argv), exit_on_error=False, result_action="return_value")


def files_under(path: Path) -> list[Path]:
    return sorted(x for x in path.rglob("*") if x.is_file())


def fake_systemctl(sandbox: Path, monkeypatch: pytest.MonkeyPatch, fail_on: str = "") -> Path:
    """A `systemctl` that records its arguments; systemd 'running' and a user bus present."""
    bin_dir = sandbox / "fakebin"
    bin_dir.mkdir()
    log = sandbox / "systemctl.log"
    script = bin_dir / "systemctl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{log}"\n'
        f'case "$*" in *"{fail_on or "@@none@@"}"*) echo "Failed to connect to bus: No medium found" >&2; exit 1;; esac\n'
        'case "$1 $2" in *show*) unit=$(eval echo \\${$#}); '
        'printf "Id=%s\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\nMainPID=4242\\n'
        'NRestarts=0\\nResult=success\\n" "$unit";; esac\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    runtime = sandbox / "run"
    runtime.mkdir(mode=0o700)
    (runtime / "bus").touch()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setattr(service_cmds, "SYSTEMD_RUNTIME_DIR", runtime)  # "systemd is PID 1"
    return log


def test_install_refuses_without_systemctl_and_writes_nothing(sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (sandbox / "empty").mkdir()
    monkeypatch.setenv("PATH", str(sandbox / "empty"))
    with pytest.raises(cli.CliError, match=r"^systemctl not found: .*needs systemd.*bgtasks up.*--dry-run"):
        call("install", "--user")
    assert files_under(sandbox) == [] and not (sandbox / "bg").exists()


def test_install_refuses_when_systemd_is_not_running(sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_systemctl(sandbox, monkeypatch)
    monkeypatch.setattr(service_cmds, "SYSTEMD_RUNTIME_DIR", sandbox / "no-such-dir")
    with pytest.raises(cli.CliError, match="systemd is not running on this machine"):
        call("install", "--user")


def test_install_refuses_without_a_user_bus(sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_systemctl(sandbox, monkeypatch)
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    with pytest.raises(cli.CliError, match=r"no user service manager for `systemctl --user`.*--system"):
        call("install", "--user")


def test_install_refuses_another_platform_and_a_missing_launchctl(sandbox: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(cli.CliError, match=r"--platform windows: this machine is linux.*--dry-run"):
        call("install", "--platform", "windows")
    (sandbox / "empty").mkdir()
    monkeypatch.setenv("PATH", str(sandbox / "empty"))
    monkeypatch.setattr(service_cmds, "current_platform", lambda: "macos")
    with pytest.raises(cli.CliError, match="^launchctl not found: .*needs launchd"):
        call("install", "--user", "--platform", "macos")
    assert files_under(sandbox) == []


def test_system_services_never_run_as_root(sandbox: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`sudo bgtasks service install --system` without a user to run as is refused (root stays
    root under sudo when SUDO_USER is root, or without sudo); --run-as a user is accepted."""
    monkeypatch.setattr(service_cmds.getpass, "getuser", lambda: "root")
    monkeypatch.setattr(service_cmds, "_is_root", lambda: True)
    for argv in (("install", "--system", "--dry-run"), ("install", "--system", "--run-as", "root", "--dry-run")):
        with pytest.raises(cli.CliError, match="would run as root.*--run-as"):
            call(*argv)
    call("install", "--system", "--run-as", "bgtasks", "--dry-run")
    assert "User=bgtasks" in capsys.readouterr().out


def test_user_and_system_exclude_each_other(sandbox: Path) -> None:
    with pytest.raises(cli.CliError, match="--user and --system exclude each other"):
        call("install", "--user", "--system", "--dry-run")


@pytest.mark.parametrize("platform", ["linux", "macos", "windows"])
@pytest.mark.parametrize("scope", ["--user", "--system"])
def test_dry_run_prints_everything_and_writes_nothing(platform: str, scope: str, sandbox: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run_as = ["--run-as", "alice"] if scope == "--system" else []  # never root
    call("install", scope, *run_as, "--platform", platform, "--dry-run")
    text = capsys.readouterr().out
    call("install", scope, *run_as, "--platform", platform, "--dry-run", "-o", "json")
    doc = json.loads(capsys.readouterr().out)
    call("uninstall", scope, *run_as, "--platform", platform, "--dry-run")
    removal = capsys.readouterr().out
    assert files_under(sandbox) == [] and not (sandbox / "bg").exists()
    assert doc["platform"] == platform and doc["scope"] == scope[2:]
    assert len(doc["files"]) == {"linux": 6, "macos": 4, "windows": 5}[platform]
    # No auth string was generated, and the secrets' places are masked.
    assert "<secret, not shown>" in text
    for f in doc["files"]:
        assert f"# {f['path']} (mode {f['mode']})" in text
        assert f["content"].replace("\r\n", "\n").strip() in text
    assert all(" ".join(c[:2]) in text for c in doc["install"])
    assert "# Commands (install):" in text and "# Files to remove:" in removal
    assert all(f["path"] in removal for f in doc["files"])


def test_install_status_uninstall_with_a_fake_systemctl(sandbox: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    log = fake_systemctl(sandbox, monkeypatch)
    call("install", "--user")
    unit_dir = sandbox / "home" / ".config" / "systemd" / "user"
    names = ["bgtasks-api.service", "bgtasks-daemon.service", "bgtasks-server.service",
             "bgtasks-worker.service", "bgtasks.target"]
    assert sorted(x.name for x in unit_dir.iterdir()) == names
    assert all(oct((unit_dir / n).stat().st_mode & 0o777) == "0o644" for n in names)
    # The server's auth string: generated into the home (0600) and given to the units only
    # through their 0600 EnvironmentFile, never in a unit.
    secret = (sandbox / "bg" / "secrets" / "prefect-auth-string").read_text().strip()
    env_file = sandbox / "bg" / "service" / "secrets.env"
    assert (sandbox / "bg" / "secrets" / "prefect-auth-string").stat().st_mode & 0o777 == 0o600
    assert env_file.stat().st_mode & 0o777 == 0o600 and f"PREFECT_API_AUTH_STRING='{secret}'" in env_file.read_text()
    assert all(secret not in (unit_dir / n).read_text() for n in names)
    assert all(f"EnvironmentFile={env_file}" in (unit_dir / n).read_text() for n in names[:4])
    assert (sandbox / "bg" / "logs").is_dir() and (sandbox / "bg" / "prefect").is_dir()
    assert log.read_text().splitlines() == [
        "--user daemon-reload", "--user enable bgtasks.target", "--user restart bgtasks.target"]
    assert "bgtasks installed" in capsys.readouterr().out
    # A reinstall is byte-identical (deterministic) and restarts the target again.
    before = {n: (unit_dir / n).read_bytes() for n in names}
    call("install", "--user")
    assert {n: (unit_dir / n).read_bytes() for n in names} == before
    capsys.readouterr()

    log.write_text("")
    assert call("status", "--user", "-o", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["part"] for r in doc["parts"]] == ["server", "worker", "daemon", "api"]
    assert all(r["running"] and r["pid"] == 4242 for r in doc["parts"])
    assert doc["prefect_api"]["healthy"] is False  # nothing listens in this test
    assert all(line.startswith("--user show --property=") for line in log.read_text().splitlines())

    log.write_text("")
    call("uninstall", "--user")
    assert log.read_text().splitlines() == [
        "--user disable bgtasks.target",
        "--user stop bgtasks.target bgtasks-server.service bgtasks-worker.service bgtasks-daemon.service "
        "bgtasks-api.service",
        "--user reset-failed bgtasks.target bgtasks-server.service bgtasks-worker.service "
        "bgtasks-daemon.service bgtasks-api.service",
        "--user daemon-reload",
    ]
    assert list(unit_dir.iterdir()) == []
    assert (sandbox / "bg").is_dir()  # the data stays
    with pytest.raises(cli.CliError, match="not installed as user services"):
        call("status", "--user")


def test_install_reports_a_failing_systemctl_in_one_line(sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_systemctl(sandbox, monkeypatch, fail_on="restart")
    with pytest.raises(cli.CliError) as err:
        call("install", "--user")
    assert str(err.value) == ("`systemctl --user restart bgtasks.target` failed (exit 1): "
                              "Failed to connect to bus: No medium found")
    assert "\n" not in str(err.value)


def test_logs_uses_journalctl(sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(tuple(cmd)) or 0)
    assert call("logs", "--user", "--part", "worker", "-n", "5", "-f") == 0
    assert calls == [("journalctl", "--user", "-u", "bgtasks-worker.service", "-n", "5", "--no-pager", "-f")]


def test_tail_of_log_files(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_bytes(b"".join(f"line {i}\n".encode() for i in range(100_000)))
    lines, size = service_cmds._tail_lines(log, 3)
    assert lines == ["line 99997", "line 99998", "line 99999"] and size == log.stat().st_size


# --------------------------------------------------------------------------- what the services run


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wait_for_server(health_server: int, sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert service_cmds.wait_for_server(f"http://127.0.0.1:{health_server}/api", 5)
    started = time.monotonic()
    assert not service_cmds.wait_for_server(f"http://127.0.0.1:{free_port()}/api", 0.3, poll_s=0.1)
    assert time.monotonic() - started < 5
    monkeypatch.setenv("BGTASKS_SERVER_PORT", str(health_server))
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{health_server}/api")
    call("wait-server", "--timeout", "5")
    monkeypatch.setattr(cli_common, "_settings", None)
    monkeypatch.setenv("BGTASKS_SERVER_PORT", str(free_port()))
    with pytest.raises(cli.CliError, match=r"The Prefect API at http://127.0.0.1:\d+/api was not healthy after 0.3s"):
        call("wait-server", "--timeout", "0.3")


RUN = "import sys; from bgtasks.cli.service_cmds import service_app; " \
      "raise SystemExit(service_app(sys.argv[1:], exit_on_error=False, result_action='return_value') or 0)"


def test_run_waits_then_execs_the_part(health_server: int, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "part.log"
    env = {**os.environ, "BGTASKS_SERVER_PORT": str(health_server), "BGTASKS_HOME": str(tmp_path)}
    env.pop("BGTASKS_SERVER_API_URL", None)
    proc = subprocess.Popen([PY, "-c", RUN, "run", "--log", str(log), "--wait-server", "10", "--",
                             PY, "-c", "import os; print('pid', os.getpid(), os.environ['PATH'].split(os.pathsep)[0])"],
                            env=env)
    assert proc.wait(60) == 0
    assert log.read_text().split() == ["pid", str(proc.pid), str(Path(PY).parent)]  # exec'd: the same process


def test_run_gives_up_when_the_server_never_answers(tmp_path: Path) -> None:
    log = tmp_path / "part.log"
    env = {**os.environ, "BGTASKS_SERVER_PORT": str(free_port()), "BGTASKS_HOME": str(tmp_path)}
    r = subprocess.run([PY, "-c", RUN, "run", "--log", str(log), "--wait-server", "0.5", "--", "/bin/true"],
                       env=env, timeout=60)
    assert r.returncode == 1
    assert "was not healthy after 0.5s" in log.read_text()


def test_supervise_restarts_on_failure_until_success(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    script = (f"import pathlib, sys; p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) if p.exists() else 0; "
              "p.write_text(str(n + 1)); sys.exit(0 if n >= 2 else 3)")
    said: list[str] = []
    assert service_cmds.supervise([PY, "-c", script], 0.05, said.append) == 0
    assert counter.read_text() == "3"
    assert len(said) == 2 and "exited with 3; restarting in 0.05s" in said[0]


def test_supervise_forwards_sigterm_and_stops(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    child = (f"import os, pathlib, time; pathlib.Path({str(marker)!r}).write_text(str(os.getpid())); "
             "time.sleep(120)")
    code = (f"import sys; from bgtasks.cli.service_cmds import supervise; "
            f"sys.exit(supervise([sys.executable, '-c', {child!r}], 0.1, print))")
    proc = subprocess.Popen([PY, "-c", code])
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    child_pid = int(marker.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)
