"""What a policy is (:class:`Policy`, its hooks) and what it may use of the worker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


class Worker(Protocol):
    """What a policy may use of the worker."""

    @property
    def client(self) -> Any: ...  # the worker's PrefectClient
    @property
    def log(self) -> Any: ...  # the worker's logger
    @property
    def pool_name(self) -> str: ...
    @property
    def running(self) -> dict[Any, Any]: ...  # flow run id -> FlowRun, while its process lives

    def run_logger(self, flow_run: Any) -> Any: ...  # the run's own logger (its logs in the UI)
    def wake_at(self, when: datetime | None) -> None: ...  # poll at ``when`` (or now)
    def is_ours(self, event: Any) -> bool: ...  # the event is about this worker's pool
    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None: ...  # logged on failure


@dataclass(frozen=True)
class Periodic:
    """``fn(worker)`` every ``every_s`` seconds (first at once when ``at_start``)."""

    every_s: float
    fn: Callable[[Worker], Awaitable[Any]]
    at_start: bool = False


class Policy:
    """One behaviour of the worker. Every hook is optional; the worker calls them in order."""

    #: Prefect event names this policy acts on (:meth:`on_event`); the worker subscribes to them.
    events: tuple[str, ...] = ()

    def periodic(self) -> list[Periodic]:
        return []

    async def start(self, worker: Worker) -> None:
        """Once, when the worker starts (before it takes a run)."""

    async def stop(self, worker: Worker) -> None:
        """Once, when the worker stops (after its runs are gone)."""

    def child_env(self) -> dict[str, str]:
        """Environment variables every run's process gets."""
        return {}

    async def before_poll(self, worker: Worker) -> None:
        """Before each look for due runs."""

    async def before_submit(self, worker: Worker, flow_run: Any) -> bool:
        """Before a run is started: False when this policy has dealt with it (dropped, made to
        wait, failed) and it must not start; the later policies are then not asked."""
        return True

    async def after_run(self, worker: Worker, flow_run: Any) -> None:
        """After a run's process is gone."""

    async def on_event(self, worker: Worker, event: Any) -> None:
        """One of :attr:`events` happened."""


async def drop(worker: Worker, flow_run: Any, why: str) -> bool:
    """Delete a run that must never start; False (not submitted)."""
    from prefect.exceptions import ObjectNotFound

    try:
        await worker.client.delete_flow_run(flow_run.id)
    except ObjectNotFound:
        pass
    worker.log.info("Dropped run %s: %s", flow_run.id, why)
    return False
