"""Files and services: a private home after `bgtasks up`, and sandboxed systemd units.

- The home of a stack started on a new home is 0700 and everything in it is its owner's
  alone (databases, results, logs, the auth string), created so by the umask of every
  part; the auth string appears in no log and not in `bgtasks up`'s output.
- The generated units pass ``systemd-analyze verify`` and ``systemd-analyze security``
  rates each "OK" or better (the scores are printed); secrets are in no unit.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bgtasks import service
from bgtasks.settings import ServerSettings, Settings
from tests.e2e.up import Up

PY = str(Path(sys.executable).absolute())
#: ``systemd-analyze security``'s verdicts at or better than "OK".
GOOD_ENOUGH = {"PERFECT", "SAFE", "OK"}


@pytest.mark.e2e
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


def _systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        msg = "systemd-analyze is missing: `make test` installs Debian's systemd package"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


@pytest.mark.parametrize("scope", ["system", "user"])
def test_units_are_sandboxed_and_rated_ok(scope: service.Scope, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith(("BGTASKS_", "PREFECT_"))]:
        monkeypatch.delenv(key)
    exe = _systemd_analyze()
    settings = Settings(home=tmp_path / "home" / ".bgtasks", server=ServerSettings(auth_string="unit-test-secret"))
    user = "bgtasks" if scope == "system" else getpass.getuser()
    target = service.Target(flavour="linux", scope=scope, python=PY, user=user,
                            user_home=str(tmp_path / "home"), hostname="testhost", uid=os.getuid())
    plan = service.plan(settings, target)
    units = tmp_path / "units"
    units.mkdir()
    for f in plan.files:
        if f.path.endswith((".service", ".target")):
            (units / Path(f.path).name).write_bytes(f.content)
            assert "unit-test-secret" not in f.text()
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_COLOR": "0"}
    flag = ["--user"] if scope == "user" else []
    names = sorted(x.name for x in units.iterdir())
    verify = subprocess.run([exe, *flag, "verify", "--man=no", *names], cwd=units, env=env, capture_output=True,
                            text=True, timeout=120)
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), verify.stdout + verify.stderr
    scores = {}
    for name in names:
        if not name.endswith(".service"):
            continue
        text = (units / name).read_text()
        for line in ("UMask=0077", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only",
                     f"ReadWritePaths={settings.home}"):
            assert line in text.splitlines(), (name, line)
        rated = subprocess.run([exe, *flag, "security", "--offline=yes", f"./{name}"], cwd=units, env=env,
                               capture_output=True, text=True, timeout=120)
        found = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", rated.stdout)
        if found is None and scope == "user":
            pytest.skip(f"systemd-analyze --user security cannot run here: {rated.stderr.strip()}")
        assert found is not None, rated.stdout + rated.stderr
        scores[name] = (float(found.group(1)), found.group(2))
    with capsys.disabled():
        print(f"\nsystemd-analyze security ({scope}): "
              + ", ".join(f"{n} {s:.1f} {w}" for n, (s, w) in scores.items()))
    assert {w for _, w in scores.values()} <= GOOD_ENOUGH, scores
    if scope == "system":
        assert all(f"User={user}" in (units / n).read_text() for n in scores)
