"""prefect.yaml: `prefect --no-prompt deploy --all` creates bgtasks tasks that agree with themselves."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgtasks.models import TaskType
from bgtasks import stored

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("dep", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_each_deployment_is_a_consistent_task(dep: dict[str, Any]) -> None:
    opts = stored.read(dep["parameters"])
    assert opts is not None and opts.name == dep["name"]
    assert dep["tags"] == stored.tags_for(opts, opts.handler)
    assert dep["work_pool"]["work_queue_name"] == opts.priority.value
    assert dep["entrypoint"].startswith("flows.") and opts.handler.replace("-", "_") in dep["entrypoint"]
    if opts.schedule.type == TaskType.PERIODIC:
        [sched] = dep["schedules"]
        if opts.schedule.cron:
            assert sched["cron"] == opts.schedule.cron
        else:
            assert sched["interval"] * 1000 == opts.schedule.interval
    else:
        assert not dep.get("schedules")


async def test_prefect_deploy_all_creates_runnable_tasks(manager: Any) -> None:
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {d["name"] for d in DEPLOYMENTS}
    try:
        tasks = {t.name: t for t in await manager.list() if t.name in names}
        assert set(tasks) == names
        cleanup = tasks["nightly-cleanup"]
        assert cleanup.priority.value == "low" and cleanup.type == TaskType.PERIODIC
        from uuid import UUID

        [sched] = (await manager.client.read_deployment(UUID(cleanup.id))).schedules
        assert sched.active and sched.schedule.cron == "0 3 * * *"
        assert tasks["hourly-data-sync"].constraints.requires_storage_not_low
        demo = tasks["demo-on-demand"]
        result = await manager.wait_for_run(await manager.run_now(demo.id), timeout_s=120)
        assert result.success and result.data["message"] == "Hello from prefect.yaml"
    finally:
        for t in await manager.list():
            if t.name in names:
                await manager.delete(t.id)
