"""Regenerate the service-file snapshots (``make snapshots``) after a deliberate change.

The snapshot test (tests/unit/test_service.py) only compares; this writes what it expects.
Review the diff before committing it.
"""

from __future__ import annotations

import os

from tests.unit.test_service import FLAVOURS, SCOPES, SNAPSHOTS, expected_snapshots


def main() -> None:
    for key in [k for k in os.environ if k.startswith(("BGTASKS_", "PREFECT_"))]:
        del os.environ[key]  # as the test's clean_env fixture
    for flavour in FLAVOURS:
        for scope in SCOPES:
            expected = expected_snapshots(flavour, scope)  # type: ignore[arg-type]
            directory = SNAPSHOTS / f"{flavour}-{scope}"
            directory.mkdir(parents=True, exist_ok=True)
            for stale in {x.name for x in directory.iterdir()} - set(expected):
                (directory / stale).unlink()
            for name, content in expected.items():
                (directory / name).write_bytes(content)
            print(f"{directory}: {len(expected)} files")


if __name__ == "__main__":
    main()
