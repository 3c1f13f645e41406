"""The TypeScript client (clients/typescript) against the live REST API: type-checked
against docs/openapi.json, then its Node test suite (node --test) run for real."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bgtasks.settings import Settings
from tests.fixtures import ApiProcess, WorkerHandle, make_token

pytestmark = pytest.mark.integration

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "typescript"


def test_typescript_client_passes_against_the_live_api(
    api_process: ApiProcess, worker: WorkerHandle, settings: Settings
) -> None:
    npm = shutil.which("npm")
    assert npm, "Node.js and npm are needed for the TypeScript client's test"
    if not (CLIENT / "node_modules").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=CLIENT, check=True, timeout=600)
    token = make_token(settings, "tasks:read", "tasks:write", name="ts-client")
    env = {**os.environ, "BGTASKS_API_URL": api_process.base, "BGTASKS_API_TOKEN": token}
    run = subprocess.run([npm, "test"], cwd=CLIENT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "# fail 0" in run.stdout and "# skipped 0" in run.stdout, run.stdout[-3000:]
