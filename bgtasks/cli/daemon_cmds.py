"""``bgtasks daemon``: the trigger daemon; ``bgtasks daemon status``: what it sees."""

from __future__ import annotations

import asyncio
import json
import os

import cyclopts
from rich.table import Table

from bgtasks.cli import _common as cli
from bgtasks.cli._common import Output

daemon_app = cyclopts.App(name="daemon", help="The trigger daemon: machine changes as Prefect events.")


@daemon_app.default
def run() -> int:
    """Run the trigger daemon in the foreground until Ctrl-C or SIGTERM (one per host)."""
    import sys

    cli.settings()  # the Prefect environment (API URL) for the daemon
    # Exec a lean process: the daemon runs all day and needs neither the CLI nor Prefect.
    os.execv(sys.executable, [sys.executable, "-m", "triggers.daemon"])
    return 0  # not reached


@daemon_app.command
def status(*, output: Output = "table") -> None:
    """The snapshot the daemon's sensors see now, its file rules, and whether it runs."""
    from triggers.daemon import TriggerDaemon

    s = cli.settings()
    daemon = TriggerDaemon(s, emit=lambda event: None)

    async def read() -> dict:
        try:
            await daemon.refresh_rules()
            return daemon.snapshot()  # the file sensor is not started here: rules only
        finally:
            await daemon.api.aclose()

    snap = asyncio.run(read())
    pidfile = s.home / "daemon.pid"
    running = None
    if pidfile.exists():
        try:
            pid = int(pidfile.read_text())
            os.kill(pid, 0)
            running = pid
        except (ValueError, ProcessLookupError, PermissionError):
            running = None
    if output == "json":
        cli.print_json({"running": running is not None, "pid": running, "host": daemon.host, "sensors": snap})
        return
    cli.console.print(f"Trigger daemon on {daemon.host}: "
                      + (f"[green]running[/] (PID {running})" if running else "[yellow]not running[/]"))
    table = Table("SENSOR", "STATE")
    for name, value in snap.items():
        table.add_row(cli.shown(name), cli.shown(json.dumps(value, default=str)))
    cli.console.print(table)
