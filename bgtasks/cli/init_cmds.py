"""``bgtasks init [DIR]``: a starter project for someone who has only the installed package.

It writes ``prefect.yaml`` (deployed with ``prefect deploy``) and ``handlers.py``
(one example handler) from the templates in ``bgtasks/templates/``. Existing
files are never overwritten without ``--force``; nothing is written when any of
them exists.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from string import Template
from typing import Annotated

from cyclopts import Parameter

from bgtasks.cli import _common as cli

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
#: File written -> its template.
SCAFFOLD = {"prefect.yaml": "prefect.yaml.tmpl", "handlers.py": "handlers.py.tmpl"}


def render_scaffold(directory: Path, pool: str) -> dict[str, str]:
    """The scaffold's files (name -> text) for a project in ``directory`` (absolute)."""
    try:
        prefect_version = version("prefect")
    except PackageNotFoundError:  # pragma: no cover - prefect is a dependency
        prefect_version = "3"
    values = {
        # JSON strings are YAML double-quoted scalars: any path or name is safe.
        "name": json.dumps(directory.name or "bgtasks-project"),
        "directory": json.dumps(str(directory)),
        "pool": json.dumps(pool),
        "prefect_version": prefect_version,
    }
    return {name: Template((TEMPLATES / tmpl).read_text(encoding="utf-8")).substitute(values)
            for name, tmpl in SCAFFOLD.items()}


def write_scaffold(directory: Path, pool: str, force: bool = False) -> list[Path]:
    """Write the scaffold into ``directory`` (created if missing); the paths written.

    Raises:
        FileExistsError: a file exists and ``force`` is False; nothing was written.
    """
    directory = directory.expanduser().resolve()
    files = {directory / name: text for name, text in render_scaffold(directory, pool).items()}
    existing = [p for p in files if p.exists()]
    if existing and not force:
        raise FileExistsError(", ".join(str(p) for p in existing))
    directory.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return list(files)


def prefect_command() -> str:
    """How to call the ``prefect`` installed with this bgtasks: ``prefect`` when that is the one on
    PATH, else its full path (``pipx install`` exposes only ``bgtasks``)."""
    own = Path(sys.executable).parent / "prefect"
    on_path = shutil.which("prefect")
    if on_path is not None and Path(on_path).resolve() == own.resolve():
        return "prefect"
    return shlex.quote(str(own)) if own.exists() else "prefect"


def init(
    directory: Annotated[Path, Parameter(help="Where to write the project (created if missing).")] = Path("."),
    *,
    force: Annotated[bool, Parameter(help="Overwrite prefect.yaml and handlers.py if they exist.")] = False,
) -> int:
    """Start a project: a prefect.yaml and an example handler (handlers.py) to deploy with `prefect deploy`."""
    try:
        written = write_scaffold(directory, cli.settings().worker.pool, force=force)
    except FileExistsError as exc:
        cli.fail(f"Not overwriting {exc}: pass --force to replace, or choose another directory.")
    except OSError as exc:
        cli.fail(f"Cannot write the project in {directory}: {exc}")
    for path in written:
        cli.console.print(f"Wrote {path}", markup=False, soft_wrap=True)
    cli.console.print(
        "Next, with `bgtasks up` running in another terminal:\n"
        f"  cd {shlex.quote(str(written[0].parent))}\n"
        '  eval "$(bgtasks env)"\n'
        f"  {prefect_command()} --no-prompt deploy --all\n"
        "  bgtasks task run hello --wait",
        markup=False,
        soft_wrap=True,
    )
    return 0
