"""Evaluation: parse answers (strict and flexible filters), score them, and leave result files.

Names are loaded on first use so that `mentalglm --help` does not pay for scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "INVALID": "metrics", "KNOWN_METRICS": "metrics", "bootstrap_ci": "metrics", "read_predictions": "metrics",
    "score": "metrics", "write_predictions": "metrics", "write_results": "metrics",
    "MODES": "parsing", "Parsed": "parsing", "parse": "parsing", "parse_all_modes": "parsing",
    "register_parser": "parsing",
    "PathwayFileError": "pathway", "pathway_scores": "pathway", "read_label_file": "pathway",
    "read_pathway_file": "pathway",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mentalglm.evaluate' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mentalglm.evaluate.{_EXPORTS[name]}"), name)
