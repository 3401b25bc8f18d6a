"""Evaluation: run systems on a split, score their answers (``tasks.parsing``, ``tasks.metrics``), leave result files.

Names are loaded on first use so that `mentalglm --help` does not pay for scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"read_predictions": "results", "write_predictions": "results", "write_results": "results"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mentalglm.evaluate' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mentalglm.evaluate.{_EXPORTS[name]}"), name)
