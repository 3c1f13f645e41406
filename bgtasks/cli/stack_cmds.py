"""``bgtasks up``: the embedded stack in the foreground."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Annotated

from cyclopts import Parameter


def up(
    *,
    port: Annotated[int | None, Parameter(help="Port of the Prefect server and UI (default 4200).")] = None,
    api_port: Annotated[int | None, Parameter(help="Port of bgtasks' REST API (default 4300).")] = None,
    database: Annotated[str | None, Parameter(help="Prefect database URL (default: SQLite under the bgtasks home).")] = None,
) -> int:
    """Start the Prefect server + UI, a worker of the background-tasks pool, the trigger daemon and the
    REST API; Ctrl-C stops them."""
    from bgtasks import cli
    from bgtasks.settings import load_settings

    s = load_settings()
    if port is not None:
        s.server.port = port
    if database is not None:
        s.server.database_url = database
    if api_port is not None:
        s.api.port = api_port
    for key, value in s.prefect_env().items():
        os.environ[key] = value  # `up` owns these: its children must agree with it
    cli._settings = s

    from bgtasks.stack import Stack, StackError

    stack = Stack(s)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        with cli.console.status("Starting bgtasks...") as status:
            stack.start(progress=lambda msg: status.update(f"bgtasks: {msg}..."))
    except StackError as exc:
        cli.fail(f"{exc}. See the logs in {s.home / 'logs'}.")
    cli.console.print(
        f"[green]bgtasks is up[/] in {time.monotonic() - started:.1f}s.\n"
        f"  Prefect UI:  [bold]{s.ui_url}[/]\n"
        f"  Prefect API: {s.api_url}\n"
        f"  REST API:    {stack.api_url} (OpenAPI at /docs; "
        + ("no authentication" if s.api.auth == "none" else "tokens from `bgtasks token create NAME`") + ")\n"
        f"  Work pool:   {s.worker.pool} (queues high, normal, low), {s.worker.type} worker, limit {s.worker.limit}\n"
        f"  Triggers:    trigger daemon running (`bgtasks daemon status`)\n"
        f"  Home:        {s.home}\n"
        "Create a task:  bgtasks task create demo --every 1m\n"
        "Press Ctrl-C to stop."
    )
    code = 0
    while not stop.wait(1.0):
        dead = stack.dead_part()
        if dead is not None:
            cli.err_console.print(f"[red]The {dead.name} exited (log: {dead.log_path}); stopping.[/]")
            code = 1
            break
    with cli.console.status("Stopping bgtasks..."):
        stack.stop()
    cli.console.print("bgtasks stopped.")
    return code


def env(*, shell: bool = True) -> None:
    """Print the Prefect environment of this bgtasks (for `prefect deploy`, `prefect worker start`)."""
    from bgtasks import cli

    s = cli.settings()
    for key, value in sorted(s.prefect_env().items()):
        print(f"export {key}={value!s}" if shell else f"{key}={value}")


def api(*, host: str | None = None, port: int | None = None) -> int:
    """Serve bgtasks' REST API (the spec's JSON shapes) against the Prefect API."""
    from bgtasks import cli
    from bgtasks.api.app import is_loopback

    s = cli.settings()
    host = host or s.api.host
    port = port or s.api.port
    if s.api.auth == "none" and not is_loopback(host):
        cli.fail(f"--host {host}: BGTASKS_API_AUTH=none is accepted only on loopback (127.0.0.1); "
                 "use tokens (`bgtasks token create`) to serve other hosts")
    import uvicorn

    from bgtasks.api import create_app

    auth = "no authentication (loopback only)" if s.api.auth == "none" else "bearer tokens"
    cli.console.print(f"bgtasks API on http://{host}:{port} (OpenAPI: /docs, {auth}), Prefect API {s.api_url}")
    uvicorn.run(create_app(s), host=host, port=port, log_level="warning")
    return 0
