"""The ``bgtasks`` command line, in Prefect's dialect.

Noun-verb groups (``bgtasks task ls``), Rich tables, ``-o json`` on every listing,
errors as one red line with the fix, exit code 1 on failure.

Settings are read once per invocation (:func:`bgtasks.cli._common.settings`), and the Prefect
environment they imply is put in place before Prefect is imported (it reads them at import).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import cyclopts

from bgtasks.cli._common import CliError, console, err_console, fail, settings, shown

app = cyclopts.App(
    name="bgtasks",
    help="Background tasks for desktop and mobile apps, on Prefect.",
    version=lambda: _version(),
)


def _version() -> str:
    from importlib.metadata import version

    return version("bgtasks")


from bgtasks.cli import (  # noqa: E402  (registers the commands)
    cluster_cmds,
    daemon_cmds,
    device_cmds,
    emulator_cmds,
    init_cmds,
    service_cmds,
    stack_cmds,
    task_cmds,
    token_cmds,
)

app.command(task_cmds.task_app)
app.command(daemon_cmds.daemon_app)
app.command(service_cmds.service_app)
app.command(cluster_cmds.cluster_app)
app.command(device_cmds.device_app)
app.command(token_cmds.token_app)
app.command(stack_cmds.up)
app.command(stack_cmds.env)
app.command(stack_cmds.ui)
app.command(stack_cmds.api)
app.command(init_cmds.init)
app.command(emulator_cmds.emulator)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    from pydantic import ValidationError

    from bgtasks.errors import InvalidTask, TaskError
    from bgtasks.home import private_umask

    private_umask()  # what bgtasks writes in its home (databases, secrets, logs) is private
    try:
        result = app(argv if argv is not None else sys.argv[1:], exit_on_error=False, result_action="return_value")
    except InvalidTask as exc:
        for e in exc.errors:
            err_console.print(f"[red]Invalid {shown(e['field'] or 'input')}: {shown(e['message'])}[/red]")
        return 1
    except (CliError, TaskError) as exc:
        err_console.print(f"[red]{shown(str(exc))}[/red]")
        return 1
    except cyclopts.CycloptsError as exc:
        err_console.print(f"[red]{shown(str(exc))}[/red]")
        return 1
    except ValidationError as exc:  # a setting (BGTASKS_*) out of its bounds, or a stored value
        setting = exc.title.endswith("Settings")
        for e in exc.errors():
            where = "_".join(str(p).upper() for p in e["loc"]) if setting else ".".join(map(str, e["loc"]))
            what = "setting" if setting else f"stored {exc.title}"
            err_console.print(f"[red]Invalid {what} {shown(where)}: {shown(e['msg'])}[/red]")
        return 1
    except PermissionError as exc:  # a secret or credential file open to others
        err_console.print(f"[red]{shown(str(exc))}[/red]")
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if _is_connection_error(exc):
            api = os.environ.get("PREFECT_API_URL", "the Prefect API")
            err_console.print(f"[red]Cannot reach the Prefect API at {api}: start it with `bgtasks up`.[/red]")
            return 1
        raise
    return result if isinstance(result, int) else 0


def _is_connection_error(exc: BaseException) -> bool:
    import httpx

    while exc is not None:
        if isinstance(exc, httpx.TransportError | ConnectionError):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


__all__ = ["app", "main", "Annotated", "CliError", "console", "err_console", "fail", "settings", "shown"]
