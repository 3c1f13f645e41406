"""A paused task never runs on schedule: its scheduler-made runs are dropped at submission.

Pausing deletes the task's scheduled runs, but Prefect's scheduler can make one just after
(measured: 50-175 ms later). The deployment is read fresh for each such run (the read that
starts its submission, shared with the worker's own: bgtasks.warm_worker): a pause wins at once. Run-now and triggered runs of a paused task are the user's and are not dropped here.
"""

from __future__ import annotations

from typing import Any

from bgtasks.policies.base import Policy, Worker, drop


class DropPausedRuns(Policy):
    async def before_submit(self, worker: Worker, flow_run: Any) -> bool:
        if flow_run.auto_scheduled and flow_run.deployment_id is not None and await self._paused(worker, flow_run):
            return await drop(worker, flow_run, "its task is paused")
        return True

    @staticmethod
    async def _paused(worker: Worker, flow_run: Any) -> bool:
        from prefect.exceptions import ObjectNotFound

        try:
            return bool((await worker.client.read_deployment(flow_run.deployment_id)).paused)
        except ObjectNotFound:
            return False
