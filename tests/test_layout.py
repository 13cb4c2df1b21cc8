"""Where code lives: what users run never depends on the test aids."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mtfleet"
TESTING = PACKAGE / "testing"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_nothing_outside_the_test_aids_imports_them() -> None:
    importers = [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if not path.is_relative_to(TESTING)
        for module in sorted(imported_modules(path))
        if module == "mtfleet.testing" or module.startswith("mtfleet.testing.")
    ]
    assert importers == []


def test_the_random_model_builder_keeps_its_test_name() -> None:
    from mtfleet import random_models
    from mtfleet.testing import tiny_model

    assert tiny_model.main is random_models.main
    assert tiny_model.build_tiny_model is random_models.build_tiny_model
