"""What every ``bgtasks`` command shares: the consoles, the invocation's settings, errors,
and how user text, JSON and times are printed. Command modules import this, never the
package (whose ``__init__`` imports them to register their commands)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Annotated, Any, Literal

from cyclopts import Parameter
from rich.console import Console
from rich.markup import escape

from bgtasks.settings import Settings, load_settings

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

Output = Annotated[Literal["table", "json"], Parameter(name=["--output", "-o"], help="Output format.")]

_settings: Settings | None = None


def settings() -> Settings:
    """The settings of this invocation (read once), with Prefect's environment applied."""
    global _settings
    if _settings is None:
        _settings = load_settings()
        for key, value in _settings.prefect_env().items():
            os.environ.setdefault(key, value)
    return _settings


def use_settings(s: Settings) -> None:
    """Make ``s`` this invocation's settings (``bgtasks up`` reads them with its flags applied)."""
    global _settings
    _settings = s


class CliError(Exception):
    """One red line for the user, then exit 1."""


def fail(message: str) -> None:
    raise CliError(message)


def shown(value: object) -> str:
    """``value`` as text for Rich: markup escaped, control and bidi characters made visible.

    Every name, message or datum that came from a user or a run goes through this
    before it is printed: ``[red]`` in a task name is text, ``ESC[2J`` is ``\\x1b[2J``.
    """
    from bgtasks.text import printable

    return escape(printable(str(value)))


def print_json(value: Any) -> None:
    # ASCII only: a bidi override in a task's data cannot reorder what the terminal shows.
    console.print_json(json.dumps(value), ensure_ascii=True)


def when(t: datetime | None) -> str:
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S") if t else "-"
