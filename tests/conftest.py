"""Shared fixtures. Real-data tests skip with a reason when no data directory is configured."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data directory from $MENTALGLM_DATA_DIR (CI sets it to ../shared/data)."""
    value = os.environ.get("MENTALGLM_DATA_DIR")
    if not value:
        pytest.skip("MENTALGLM_DATA_DIR is not set: real-data test skipped")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"MENTALGLM_DATA_DIR={value} is not a directory: real-data test skipped")
    return path
