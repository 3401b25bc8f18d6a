"""The layer order of docs/architecture.md, enforced: every import goes down, no module cycles.

The contracts live in pyproject.toml ([tool.importlinter]); `lint-imports` checks the same from a shell.
"""

from __future__ import annotations

import pkgutil
import re
import tomllib
from pathlib import Path

import pytest

import mentalglm

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"

importlinter_cli = pytest.importorskip("importlinter.cli", reason="import-linter is in the test extra")


def _contracts() -> list[dict]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]


def test_imports_follow_the_layers_and_have_no_cycles() -> None:
    # Fails with import-linter's report (printed above the assertion) naming each import that breaks a contract.
    assert importlinter_cli.lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True) == 0


def test_every_module_of_the_package_has_a_layer() -> None:
    """A new top-level module or subpackage outside the layers would go unchecked."""
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    placed = {name for layer in layers for name in re.split(r"\s*[|:]\s*", layer.strip())}
    children = {info.name for info in pkgutil.iter_modules(mentalglm.__path__)}
    assert children - placed == set(), "add these to [tool.importlinter] layers and docs/architecture.md"
    assert placed - children == set(), "layers name modules that do not exist"
