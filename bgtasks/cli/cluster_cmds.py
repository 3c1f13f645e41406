"""``bgtasks cluster up``: the multi-host layout of docs/scaling.md on this machine.

:mod:`bgtasks.cluster` starts the parts; this prints where they are, restarts a part that
dies (as a service manager would) and stops everything on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import cyclopts
from cyclopts import Parameter

from bgtasks.cli import _common as cli

cluster_app = cyclopts.App(
    name="cluster",
    help="Try the multi-host layout on this machine: Prefect API replicas behind HAProxy, the services "
         "apart, PostgreSQL and Redis, two worker hosts, two REST API replicas.",
)


def _host_env(values: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for value in values:
        host, sep, assignment = value.partition(":")
        key, eq, val = assignment.partition("=")
        if not sep or not eq or not host or not key.startswith("BGTASKS_"):
            cli.fail(f"--host-env {value!r}: give HOST:BGTASKS_NAME=VALUE")
        out.setdefault(host, {})[key] = val
    return out


@cluster_app.command
def up(
    *,
    dir: Annotated[Path | None, Parameter(help="Where the cluster keeps its homes, logs and "
                                               "state (default <home>/cluster; emptied first).")] = None,
    postgres: Annotated[str, Parameter(help="PostgreSQL server where a new database is created "
                                            "(dropped at the stop unless --keep).")] = "postgresql://postgres@127.0.0.1:5432",
    prefect_port: Annotated[int, Parameter(help="HAProxy's port for the Prefect API and UI (0: any free).")] = 4300,
    api_port: Annotated[int, Parameter(help="HAProxy's port for the REST API (0: any free).")] = 8300,
    hosts: Annotated[int, Parameter(help="Worker hosts (each a worker and a trigger daemon).")] = 2,
    api_replicas: Annotated[int, Parameter(help="Prefect API replicas.")] = 2,
    rest_replicas: Annotated[int, Parameter(help="REST API replicas.")] = 2,
    host_env: Annotated[list[str] | None, Parameter(
        help="HOST:BGTASKS_NAME=VALUE: a setting of one host only (e.g. host-b:BGTASKS_DAEMON_POWER_ROOT=...); "
             "repeatable.")] = None,
    keep: Annotated[bool, Parameter(negative=(), help="Keep the database and the directory at the stop.")] = False,
) -> int:
    """Start the cluster, print its addresses, restart parts that die; Ctrl-C stops it."""
    from bgtasks.cluster import Cluster, free_port
    from bgtasks.stack import StackError

    for name, n, low in (("--hosts", hosts, 1), ("--api-replicas", api_replicas, 1), ("--rest-replicas", rest_replicas, 1)):
        if not low <= n <= 8:
            cli.fail(f"{name} {n}: from {low} to 8")
    s = cli.settings()
    where = (dir or s.home / "cluster").absolute()
    _clear(where)
    names = tuple(f"host-{chr(ord('a') + i)}" for i in range(hosts))
    extra = _host_env(host_env or [])
    for host in extra:
        if host not in names:
            cli.fail(f"--host-env: no host {host!r}; the hosts are {', '.join(names)}")
    cluster = Cluster(s, where, postgres=postgres, prefect_port=prefect_port or free_port(),
                      api_port=api_port or free_port(), hosts=names, api_replicas=api_replicas,
                      rest_replicas=rest_replicas, host_env=extra, keep=keep)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = time.monotonic()
    try:
        with cli.console.status("Starting the cluster...") as status:
            cluster.start(progress=lambda msg: status.update(f"bgtasks cluster: {msg}..."))
    except StackError as exc:
        cli.fail(f"{exc}. See the logs in {where / 'logs'}.")
    parts = cluster.parts
    replicas = ", ".join(parts[f"server-api-{i}"].address for i in range(1, api_replicas + 1))
    rest = ", ".join(parts[f"api-{i}"].address for i in range(1, rest_replicas + 1))
    cli.console.print(
        f"[green]The cluster is up[/] in {time.monotonic() - started:.1f}s.\n"
        f"  Prefect UI and API: [bold]{cluster.prefect_url.removesuffix('/api')}[/] (HAProxy; replicas {replicas})\n"
        f"  REST API:           [bold]{cluster.api_url}[/] (HAProxy; replicas {rest}); token in "
        f"{where / 'secrets' / 'api-token'}\n"
        f"  Services:           one process (scheduler, automations, crash detection)\n"
        f"  Hosts:              {', '.join(f'{h} ({cluster.host_home(h)})' for h in names)}: a worker and a "
        "trigger daemon each\n"
        f"  PostgreSQL:         {cli.shown(cluster.database.rsplit('@', 1)[-1])}"
        f"{'' if keep else ' (dropped at the stop)'}\n"
        f"  Redis:              {parts['redis'].address}\n"
        f"  Shared settings:    {cluster.env_file} (0600; the Prefect auth string is in it)\n"
        f"  Parts, PIDs, logs:  {cluster.state_file}\n"
        "A part that dies is started again after 2 s. Press Ctrl-C to stop."
    )
    while not stop.wait(0.5):
        cluster.supervise(say=lambda msg: cli.err_console.print(f"[yellow]{cli.shown(msg)}[/]"))
    with cli.console.status("Stopping the cluster..."):
        cluster.stop()
    cli.console.print("The cluster stopped.")
    return 0


def _clear(where: Path) -> None:
    """Empty ``where`` for a new cluster: only an earlier cluster's directory, not while it runs."""
    import json
    import shutil

    if not where.exists() or not any(where.iterdir()):
        return
    state = where / "cluster.json"
    if not state.exists():
        cli.fail(f"--dir {where}: not empty and not a cluster's directory; choose another")
    try:
        pid = int(json.loads(state.read_text())["pid"])
        os.kill(pid, 0)
        cli.fail(f"a cluster (pid {pid}) runs in {where}; stop it first (Ctrl-C in its terminal)")
    except (ValueError, KeyError, TypeError, ProcessLookupError):
        pass
    except PermissionError:
        cli.fail(f"a cluster of another user runs in {where}")
    shutil.rmtree(where)
