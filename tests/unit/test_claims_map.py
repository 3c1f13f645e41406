"""docs/claims.md maps each claim of the README and docs to the tests that prove it: every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAP = ROOT / "docs" / "claims.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_the_claims_map_names_exists() -> None:
    refs = REFERENCE.findall(MAP.read_text())
    assert len(refs) >= 50, "docs/claims.md names too few tests to be the map of the claims"
    missing = []
    cache: dict[str, set[str]] = {}
    for file, name in refs:
        path = ROOT / file
        if not path.is_file():
            missing.append(f"{file} (no such file)")
            continue
        functions = cache.setdefault(file, _test_functions(path))
        if name not in functions:
            missing.append(f"{file}::{name}")
    assert missing == [], "docs/claims.md names tests that do not exist: " + ", ".join(sorted(set(missing)))


def test_the_checker_catches_a_missing_test(tmp_path: Path) -> None:
    """The check above can fail: a name that is not in the file is reported."""
    assert "test_every_test_the_claims_map_names_exists" in _test_functions(Path(__file__))
    assert "no_such_test" not in _test_functions(Path(__file__))
