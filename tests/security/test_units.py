"""The generated systemd units: sandboxed, secrets out of them, rated by ``systemd-analyze``.

They pass ``systemd-analyze verify`` and ``systemd-analyze security`` rates each "OK" or
better (the scores are printed); no secret is in a unit.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bgtasks import service
from bgtasks.settings import ServerSettings, Settings

PY = str(Path(sys.executable).absolute())
#: ``systemd-analyze security``'s verdicts at or better than "OK".
GOOD_ENOUGH = {"PERFECT", "SAFE", "OK"}


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
