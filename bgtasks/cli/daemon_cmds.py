"""``bgtasks daemon``: the trigger daemon; ``bgtasks daemon status``: what it sees."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import cyclopts
from rich.table import Table

from bgtasks.cli.task_cmds import Output, _print_json

daemon_app = cyclopts.App(name="daemon", help="The trigger daemon: machine changes as Prefect events.")


@daemon_app.default
def run() -> int:
    """Run the trigger daemon in the foreground until Ctrl-C or SIGTERM (one per host)."""
    import logging

    from bgtasks import cli
    from triggers.daemon import TriggerDaemon

    s = cli.settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "prefect"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    pidfile = s.home / "daemon.pid"
    if pidfile.exists():
        try:
            other = int(pidfile.read_text())
            os.kill(other, 0)
            cli.fail(f"a trigger daemon already runs on this host (PID {other}); one per host")
        except (ValueError, ProcessLookupError, PermissionError):
            pass  # stale
    daemon = TriggerDaemon(s)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        pidfile.write_text(str(os.getpid()))
        try:
            await daemon.run(stop)
        finally:
            pidfile.unlink(missing_ok=True)

    asyncio.run(main())
    return 0


@daemon_app.command
def status(*, output: Output = "table") -> None:
    """The snapshot the daemon's sensors see now, its file rules, and whether it runs."""
    from bgtasks import cli
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
        _print_json({"running": running is not None, "pid": running, "host": daemon.host, "sensors": snap})
        return
    cli.console.print(f"Trigger daemon on {daemon.host}: "
                      + (f"[green]running[/] (PID {running})" if running else "[yellow]not running[/]"))
    table = Table("SENSOR", "STATE")
    for name, value in snap.items():
        table.add_row(name, json.dumps(value, default=str))
    cli.console.print(table)
