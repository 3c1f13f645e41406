"""The package on its own: a wheel built from this checkout, installed into a fresh venv
outside the repository, runs the whole stack with no repository around.

Slow (marked ``slow``): building the sdist and the wheel takes ~10 s, creating the
venv and installing the wheel with Prefect and every dependency ~35-65 s here (pip
reads the machine's wheel mirror; from PyPI it is longer), the stack ~20 s. The
test prints each step's duration (``pytest -s`` shows them).

Checks: the wheel and sdist hold the run-time data files; the installed package (not
the checkout) is what runs, in every process of the stack; ``bgtasks --version``;
``bgtasks up`` from a ``bgtasks init`` project serves the UI and runs the demo task;
the scaffold deploys with ``prefect deploy`` and its handler runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e import up as up_module
from tests.e2e.up import Up

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
#: Files read at run time, which must ship in the wheel.
RUNTIME_FILES = [
    "bgtasks/templates/prefect.yaml.tmpl",
    "bgtasks/templates/handlers.py.tmpl",
    "bgtasks/store/migrations/env.py",
    "bgtasks/store/migrations/script.py.mako",
    "bgtasks/store/migrations/versions/0001_api_tokens.py",
    "flows/demo.py",
    "deployments/controls.py",
    "triggers/daemon.py",
    "mobile_push/payload.py",
    # the task panel, built (no Node.js at install time)
    "bgtasks/api/panel/static/index.html",
    "bgtasks/api/panel/static/panel.js",
    "bgtasks/api/panel/static/panel.css",
]


def _timed(what: str, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    print(f"{what}: {time.monotonic() - started:.1f}s")
    assert proc.returncode == 0, f"{what} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _clean_env(venv: Path) -> dict[str, str]:
    """This environment without anything that points at the checkout or its venv."""
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH"}
    env = {k: v for k, v in os.environ.items()
           if k not in drop and not k.startswith(("PREFECT_", "BGTASKS_"))}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not Path(p).resolve().is_relative_to(ROOT)]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    return env


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory outside the repository; removed at the end (the venv is ~0.5 GB)."""
    base = tmp_path_factory.mktemp("package")
    assert not base.resolve().is_relative_to(ROOT)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def venv(outside: Path) -> Path:
    """A fresh venv with the wheel built from this checkout, and nothing else of ours."""
    dist = outside / "dist"
    _timed("python -m build (sdist, then the wheel from the sdist)",
           [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], cwd=outside, timeout=900)
    [wheel] = dist.glob(f"bgtasks-{VERSION}-*.whl")
    [sdist] = dist.glob(f"bgtasks-{VERSION}.tar.gz")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not [f for f in RUNTIME_FILES if f not in names]
    entry_points = zipfile.ZipFile(wheel).read(f"bgtasks-{VERSION}.dist-info/entry_points.txt").decode()
    for group in ("[console_scripts]", "[bgtasks.handlers]", "[prefect.collections]"):
        assert group in entry_points
    in_sdist = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    assert {"CHANGELOG.md", "README.md", "prefect.yaml", *RUNTIME_FILES} <= in_sdist

    env = outside / "venv"
    _timed("python -m venv", [sys.executable, "-m", "venv", str(env)], cwd=outside, timeout=300)
    _timed("pip install <wheel> (with every dependency)",
           [str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
           cwd=outside, env=_clean_env(env), timeout=1500)
    _timed("pip check", [str(env / "bin" / "python"), "-m", "pip", "check"], cwd=outside, env=_clean_env(env),
           timeout=300)
    return env


def _wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout_s:g}s")
        time.sleep(0.5)


@pytest.mark.timeout(2400)
def test_the_wheel_in_a_fresh_venv_runs_up_init_and_the_demo_task(
    venv: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _clean_env(venv)
    bin_ = venv / "bin"

    version = _timed("bgtasks --version", [str(bin_ / "bgtasks"), "--version"], cwd=outside, env=env)
    assert version.stdout.strip() == VERSION

    where = _timed("import check", [str(bin_ / "python"), "-c", (
        "import json, sys, bgtasks.cli, flows, deployments, triggers, mobile_push;"
        "print(json.dumps({'files': [m.__file__ for m in (bgtasks.cli, flows, deployments, triggers, mobile_push)],"
        " 'path': sys.path}))")], cwd=outside, env=env)
    found = json.loads(where.stdout)
    assert all(Path(f).resolve().is_relative_to(venv.resolve()) for f in found["files"]), found["files"]
    assert not [p for p in found["path"] if p and Path(p).resolve().is_relative_to(ROOT)], found["path"]

    project = outside / "project"
    init = _timed("bgtasks init", [str(bin_ / "bgtasks"), "init", str(project)], cwd=outside, env=env)
    assert {p.name for p in project.iterdir()} >= {"prefect.yaml", "handlers.py"}
    assert "Wrote" in init.stdout

    # Up runs `bgtasks` from its module's BIN, in the current directory: this venv, the project.
    monkeypatch.setattr(up_module, "BIN", bin_)
    monkeypatch.chdir(project)
    up = Up(outside / "home")
    up.env = {**env, **{k: v for k, v in up.env.items() if k.startswith("BGTASKS_") or k == "COLUMNS"}}
    started = time.monotonic()
    try:
        up.start()
        print(f"bgtasks up: {time.monotonic() - started:.1f}s")
        assert up.children
        for child in up.children:  # every part of the stack runs this venv's Python
            cmd = child.cmdline()
            assert any(arg.startswith(str(bin_)) for arg in cmd[:2]), cmd

        ui = httpx.get(up.ui, timeout=30)
        assert ui.status_code == 200 and "<html" in ui.text.lower()
        assert httpx.get(f"{up.ui}/api/health", timeout=30).json() is True
        # The task panel is served from the installed wheel.
        panel_js = httpx.get(f"{up.api}/ui/assets/panel.js", timeout=30)
        assert panel_js.status_code == 200 and panel_js.content == (
            ROOT / "bgtasks/api/panel/static/panel.js").read_bytes()

        # The demo task, created to run now; polled until it has finished.
        started = time.monotonic()
        task = up.cli_json("task", "create", "package-demo", "--handler", "demo",
                           "--data", '{"message": "from the wheel"}')
        done = _wait_for(lambda: (t := up.cli_json("task", "show", task["id"]))["status"] not in ("pending", "running")
                         and t, 180, "the demo task's run")
        print(f"demo task, create to completed: {time.monotonic() - started:.1f}s")
        assert done["status"] == "completed", done
        assert done["result"]["success"] and done["result"]["data"]["message"] == "from the wheel"

        # The scaffold, deployed as its comments say, runs its own handler from the project.
        prefect_env = dict(line.split("=", 1) for line in up.cli("env", "--no-shell").splitlines() if "=" in line)
        _timed("prefect deploy --all (the init project)",
               [str(bin_ / "prefect"), "--no-prompt", "deploy", "--all"],
               cwd=project, env={**up.env, **prefect_env}, timeout=300)
        ran = up.cli_json("task", "run", "hello", "--wait")
        assert ran["result"]["success"] and ran["result"]["data"] == {"message": "Hello, world!"}, ran
    finally:
        code = up.stop()
    assert code == 0
    gone, alive = psutil.wait_procs(up.children, timeout=30)
    assert not alive, alive

