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

importlinter = pytest.importorskip("importlinter", reason="import-linter is in the test extra")
from importlinter import configuration  # noqa: E402
from importlinter.application import use_cases  # noqa: E402


def _contracts() -> list[dict]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]


def test_imports_follow_the_layers_and_have_no_cycles() -> None:
    # The use case, not importlinter.cli.lint_imports: the CLI's dictConfig disables every logger that already
    # exists, and later tests read this package's log records. On failure the report above names each import.
    configuration.configure()
    assert use_cases.lint_imports(config_filename=str(PYPROJECT), cache_dir=None, no_logo=True, is_debug_mode=True)


def test_every_module_of_the_package_has_a_layer() -> None:
    """A new top-level module or subpackage outside the layers would go unchecked."""
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    placed = {name for layer in layers for name in re.split(r"\s*[|:]\s*", layer.strip())}
    children = {info.name for info in pkgutil.iter_modules(mentalglm.__path__)}
    assert children - placed == set(), "add these to [tool.importlinter] layers and docs/architecture.md"
    assert placed - children == set(), "layers name modules that do not exist"
