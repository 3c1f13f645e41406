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
STOP_GRACE_S = {"server": 20, "server-api": 20, "server-services": 20, "worker": 30, "daemon": 15, "api": 10}

#: The parts of the multi-host layout (docs/scaling.md), each runnable alone on its host:
#: Prefect API replicas, Prefect's background services, and the parts of every host.
ROLES = ("server-api", "server-services", "worker", "daemon", "api")


@dataclass(frozen=True)
class Part:
    """One process of the stack."""

    name: str
    description: str
    argv: Command
    stop_grace_s: int
    stop_signal: str = "SIGTERM"  # what a service manager sends first; all parts stop gracefully on it
    prepare: bool = False  # wait for the server and create the pool first (the worker)


def _server_argv(python: str, *args: str) -> Command:
    return (python, "-m", "bgtasks.prefect_server", "server", *args)


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
            _server_argv(python, "start", "--host", s.server.host, "--port", str(s.server.port)),
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


def role_parts(settings: Settings, roles: tuple[str, ...], python: str, bgtasks_exe: str,
               worker_name: str) -> tuple[Part, ...]:
    """The parts of ``roles`` on one host of the multi-host layout, in start order.

    ``server-api``: a Prefect API and UI replica without the background services
    (``server start --no-services``, bgtasks' guard in front); ``server-services``: the
    scheduler, automations, crashed-runs detection and the rest, in one process of their
    own; ``worker``, ``daemon`` and ``api`` as in :func:`parts`, with the Prefect API
    external (``BGTASKS_SERVER_API_URL``: the load balancer)."""
    s = settings
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown role {unknown[0]!r}: the roles are {', '.join(ROLES)}")
    out = []
    if "server-api" in roles:
        out.append(Part(
            "server-api", f"bgtasks: Prefect API and UI replica ({s.server.host}:{s.server.port})",
            _server_argv(python, "start", "--no-services", "--host", s.server.host, "--port", str(s.server.port)),
            STOP_GRACE_S["server-api"]))
    if "server-services" in roles:
        out.append(Part(
            "server-services", "bgtasks: Prefect background services (scheduler, automations, ...)",
            _server_argv(python, "services", "start"), STOP_GRACE_S["server-services"]))
    host_parts = parts(s, python, bgtasks_exe, worker_name, with_server=False)
    out += [p for p in host_parts if p.name in roles]
    return tuple(out)


def role_problems(settings: Settings, roles: tuple[str, ...]) -> list[str]:
    """What the settings lack for ``roles`` in the multi-host layout (empty: nothing)."""
    s = settings.server
    out = []
    if {"server-api", "server-services"} & set(roles):
        if not (s.database_url or "").startswith("postgresql"):
            out.append("BGTASKS_SERVER_DATABASE_URL: the Prefect servers of a cluster share a PostgreSQL "
                       "database (postgresql+asyncpg://...)")
        if not s.redis_url:
            out.append("BGTASKS_SERVER_REDIS_URL: the Prefect servers of a cluster share a Redis (redis://...)")
        if s.auth_string is None:
            out.append("BGTASKS_SERVER_AUTH_STRING: every Prefect server of a cluster needs the same auth string")
    if {"worker", "daemon", "api"} & set(roles) and not s.api_url:
        out.append("BGTASKS_SERVER_API_URL: the hosts reach the Prefect API replicas through their load "
                   "balancer (http(s)://.../api)")
    return out
