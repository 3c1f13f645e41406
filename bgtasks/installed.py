"""bgtasks' rooms are installed as top-level packages; another package of the same name
earlier on the import path must not silently stand in for one of them.

`flows`, `deployments`, `triggers` and `mobile_push` keep the names the project was
specified with, and stored deployments, service units and users' handler modules refer to
them by those names. A user's own `flows/` folder (a common name in Prefect projects) on
``PYTHONPATH``, or another distribution's package of that name, would be imported instead:
:func:`shadowed` finds that without importing anything, so ``bgtasks up`` can say so.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOMS = ("flows", "deployments", "triggers", "mobile_push")


def _home() -> Path:
    """The folder bgtasks' own packages are installed in (site-packages, or the checkout)."""
    return Path(__file__).resolve().parent.parent


def shadowed() -> list[str]:
    """One line per room that the import path resolves to something other than bgtasks' own."""
    home, problems = _home(), []
    for name in ROOMS:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if spec is None or not locations:
            problems.append(f"the package '{name}' of bgtasks is missing (reinstall bgtasks)")
            continue
        found = Path(locations[0]).resolve()
        if found != home / name:
            problems.append(f"'{name}' is imported from {found}, not from bgtasks ({home / name}): another "
                            f"package of that name comes first on the import path (PYTHONPATH or the "
                            f"current directory); rename it or take it off the path")
    return problems
