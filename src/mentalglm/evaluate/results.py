"""Result files of an evaluation: the results JSON and the per-sample predictions JSONL."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.files import atomic_write_text, read_jsonl
from mentalglm.tasks.parsing import Parsed
from mentalglm.tasks.schema import Task


def jsonable(value: Any) -> Any:
    """Plain JSON types; NaN/inf become null so that a finished run never fails at the last write."""
    if isinstance(value, Parsed):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return [jsonable(v) for v in sorted(value, key=str)]  # a stable order keeps result files diffable
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def package_version() -> str:
    try:
        return metadata.version("mentalglm")
    except metadata.PackageNotFoundError:
        return "unknown"


def write_results(path: str | Path, task: Task, metrics: Mapping[str, Any], run_meta: Mapping[str, Any]) -> Path:
    """The results JSON of one evaluation: task identity and version, metrics, and how it was run."""
    payload = {
        "task": task.id,
        "task_version": task.version,
        "language": task.language,
        "official_metric": task.official_metric,
        "metrics": metrics,
        "run": run_meta,
        "mentalglm_version": package_version(),
    }
    text = json.dumps(jsonable(payload), ensure_ascii=False, indent=2, allow_nan=False) + "\n"
    return atomic_write_text(Path(path), text)


def write_predictions(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Per-sample JSONL beside the results, so a run can be re-scored without re-running the model."""
    lines = (json.dumps(jsonable(row), ensure_ascii=False, allow_nan=False) for row in rows)
    return atomic_write_text(Path(path), "".join(line + "\n" for line in lines))


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    return [row for _, row in read_jsonl(Path(path))]
