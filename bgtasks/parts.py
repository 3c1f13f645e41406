"""The stack's processes, defined once: what ``bgtasks up`` runs and what the service files run.

:mod:`bgtasks.stack` starts these in the foreground, :mod:`bgtasks.service` writes them into
systemd units, launchd plists and Windows tasks; both take the argv, the order and the stop
grace from here, so a part cannot differ between a developer's ``bgtasks up`` and a server.
"""

from __future__ import annotations

from dataclasses import dataclass

from bgtasks.settings import Settings

Command = tuple[str, ...]

#: Seconds a part gets after its (graceful) stop signal before it is killed. The worker's
#: grace lets in-flight runs finish; the others only close connections and files.
STOP_GRACE_S = {"server": 20, "worker": 30, "daemon": 15, "api": 10}


@dataclass(frozen=True)
class Part:
    """One process of the stack."""

    name: str
    description: str
    argv: Command
    stop_grace_s: int
    stop_signal: str = "SIGTERM"  # what a service manager sends first; all parts stop gracefully on it
    prepare: bool = False  # wait for the server and create the pool first (the worker)


def parts(settings: Settings, python: str, bgtasks_exe: str, worker_name: str,
          with_server: bool | None = None) -> tuple[Part, ...]:
    """The parts in start order: server (unless the Prefect API is external, or ``with_server``
    says otherwise), worker, trigger daemon, REST API. ``python`` and ``bgtasks_exe`` are paths
    on the machine that runs them (a service's target may be another OS)."""
    s = settings
    out = []
    if with_server if with_server is not None else not s.server.api_url:
        out.append(Part(
            "server", f"bgtasks: Prefect server and UI ({s.server.host}:{s.server.port})",
            (python, "-m", "bgtasks.prefect_server", "server", "start", "--host", s.server.host,
             "--port", str(s.server.port)),
            STOP_GRACE_S["server"]))
    out.append(Part(
        "worker", f"bgtasks: worker of the {s.worker.pool} pool ({s.worker.type}, limit {s.worker.limit})",
        (python, "-m", "prefect", "worker", "start", "--pool", s.worker.pool, "--type", s.worker.type,
         "--limit", str(s.worker.limit), "--name", worker_name),
        STOP_GRACE_S["worker"], prepare=True))
    out.append(Part(
        "daemon", "bgtasks: trigger daemon (machine changes as Prefect events)",
        (python, "-m", "triggers.daemon"), STOP_GRACE_S["daemon"]))
    out.append(Part(
        "api", f"bgtasks: REST API ({s.api.host}:{s.api.port})",
        (bgtasks_exe, "api", "--host", s.api.host, "--port", str(s.api.port)),
        STOP_GRACE_S["api"]))
    return tuple(out)
