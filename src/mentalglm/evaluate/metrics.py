"""Scores with explicit averaging, INVALID answers counted as wrong, bootstrap CIs, result files.

Every average is named (macro / weighted / micro / samples): an ``f1`` that silently falls back
to binary averaging is the pitfall lm-evaluation-harness documents. INVALID answers are never
dropped: a single-label INVALID is a prediction outside every class (it costs the gold class
recall and gives no class a false positive), a multi-label INVALID is an empty prediction row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
)
from sklearn.preprocessing import MultiLabelBinarizer

from mentalglm.evaluate.parsing import Parsed
from mentalglm.files import atomic_write_text, read_jsonl
from mentalglm.tasks.schema import Task, TaskType

INVALID = "INVALID"
# Scalars that get a bootstrap CI besides the task's official metric.
MAIN_AVERAGES = ("accuracy", "macro_f1", "weighted_f1", "micro_f1", "f1_positive", "samples_f1", "exact_match")
DEFAULT_RESAMPLES = 1000

Prediction = Parsed | Sequence[str] | str | None


@dataclass(frozen=True)
class Encoded:
    """Gold and predictions as arrays: class indices (single-label) or indicator rows (multi-label).

    A single-label INVALID is the extra index ``len(classes)``, outside the ``labels=`` given to
    scikit-learn; a multi-label INVALID is an all-zero row.
    """

    classes: tuple[str, ...]
    y_true: np.ndarray
    y_pred: np.ndarray
    invalid: np.ndarray
    multi: bool

    def one_hot(self) -> tuple[np.ndarray, np.ndarray]:
        """Gold and predictions as indicator rows for both task kinds (an INVALID row is all zero)."""
        if self.multi:
            return self.y_true.astype(float), self.y_pred.astype(float)
        eye = np.eye(len(self.classes) + 1)[:, : len(self.classes)]
        return eye[self.y_true], eye[self.y_pred]

    @property
    def class_indices(self) -> list[int]:
        return list(range(len(self.classes)))

    def f1(self, average: str, classes: list[int] | None = None) -> float:
        labels = self.class_indices if classes is None else classes
        return float(f1_score(self.y_true, self.y_pred, labels=labels, average=average, zero_division=0))


def indicator(rows: Sequence[Iterable[str]], classes: Sequence[str]) -> np.ndarray:
    """Multi-label rows as a 0/1 matrix with one column per class, in ``classes`` order."""
    return np.asarray(MultiLabelBinarizer(classes=list(classes)).fit_transform([set(r) for r in rows]))


def per_label(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, float]]:
    p, r, f, s = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(classes))), average=None, zero_division=0
    )
    return {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(classes)
    }


def _positive_index(task: Task, enc: Encoded) -> int:
    positive = task.positive_label
    if positive is None:
        raise ValueError(f"task {task.id!r} asks for f1_positive but marks no label positive: true")
    return enc.classes.index(positive.id)


_SCALARS: dict[str, Callable[[Task, Encoded], float]] = {
    "accuracy": lambda task, enc: float(accuracy_score(enc.y_true, enc.y_pred)),
    "exact_match": lambda task, enc: float(accuracy_score(enc.y_true, enc.y_pred)),
    "macro_f1": lambda task, enc: enc.f1("macro"),
    "weighted_f1": lambda task, enc: enc.f1("weighted"),
    "micro_f1": lambda task, enc: enc.f1("micro"),
    "samples_f1": lambda task, enc: enc.f1("samples"),
    "f1_positive": lambda task, enc: enc.f1("macro", [_positive_index(task, enc)]),
    "invalid_rate": lambda task, enc: float(np.mean(enc.invalid)),
}


def _confusion(task: Task, enc: Encoded) -> dict[str, Any]:
    if enc.multi:
        matrices = multilabel_confusion_matrix(enc.y_true, enc.y_pred, labels=enc.class_indices)
        per_class = {name: m.tolist() for name, m in zip(enc.classes, matrices, strict=True)}
        return {"layout": "per label [[tn, fp], [fn, tp]]", "per_label": per_class}
    k = len(enc.classes)
    matrix = confusion_matrix(enc.y_true, enc.y_pred, labels=list(range(k + 1)))[:k]
    return {"rows": list(enc.classes), "columns": [*enc.classes, INVALID], "matrix": matrix.tolist()}


_STRUCTURED: dict[str, Callable[[Task, Encoded], Any]] = {
    "per_label": lambda task, enc: per_label(enc.y_true, enc.y_pred, enc.classes),
    "confusion_matrix": _confusion,
}
KNOWN_METRICS = (*_SCALARS, *_STRUCTURED)


def _as_labels(value: Parsed | Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(value, Parsed):
        return value.labels
    return (value,) if isinstance(value, str) else tuple(value)


def normalise_predictions(task: Task, pred: Sequence[Prediction]) -> list[tuple[str, ...] | None]:
    """Label tuples, or None for INVALID: an invalid Parsed, None, an empty tuple (unless the task has a screen
    and is multi-label), or several labels on a single-label task. Unknown label ids are a caller bug and raise."""
    rows: list[tuple[str, ...] | None] = []
    for i, value in enumerate(pred):
        if value is None or (isinstance(value, Parsed) and not value.valid):
            rows.append(None)
            continue
        labels = _as_labels(value)
        if task.type is not TaskType.HIERARCHICAL:
            _check_known(task, labels, f"prediction {i}")
        # a screened multi-label task may answer nothing (未见明显认知歪曲): empty is then a decision, not INVALID
        empty_allowed = task.is_multi_label and task.screen is not None
        cardinal = (bool(labels) or empty_allowed) and (task.is_multi_label or len(set(labels)) == 1)
        rows.append(labels if cardinal else None)
    return rows


def _check_known(task: Task, labels: Iterable[str], where: str) -> None:
    unknown = [label for label in labels if label not in task.label_ids]
    if unknown:
        raise ValueError(f"{where}: unknown labels {unknown} for task {task.id!r}; labels: {', '.join(task.label_ids)}")


def encode(task: Task, gold: Sequence[Sequence[str] | str], pred: Sequence[Prediction]) -> Encoded:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold rows but {len(pred)} predictions: they must be aligned one to one")
    if not gold:
        raise ValueError("nothing to score: no gold rows")
    gold_rows = [_as_labels(g) for g in gold]
    for i, row in enumerate(gold_rows):
        _check_known(task, row, f"gold row {i}")
        if not task.is_multi_label and len(set(row)) != 1:
            raise ValueError(f"gold row {i}: task {task.id!r} is {task.type.value} but the row has labels {row}")
    pred_rows = normalise_predictions(task, pred)
    invalid = np.array([row is None for row in pred_rows], dtype=bool)
    classes = task.label_ids
    if task.is_multi_label:
        y_true = indicator(gold_rows, classes)
        y_pred = indicator([row or () for row in pred_rows], classes)
    else:
        index = {label_id: i for i, label_id in enumerate(classes)}
        y_true = np.array([index[row[0]] for row in gold_rows])
        y_pred = np.array([len(classes) if row is None else index[row[0]] for row in pred_rows])
    return Encoded(classes, y_true, y_pred, invalid, task.is_multi_label)


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """2TP / (2TP + FP + FN), 0 where undefined: scikit-learn's F1 with ``zero_division=0``."""
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator, dtype=float), where=denominator > 0)


class RowCounts:
    """Per-row TP/FP/FN (and row correctness) whose weighted sums give every scalar metric.

    The bootstrap needs each metric on a thousand resamples; scikit-learn's input checks make that
    seconds per metric, while a resample is just a row of weights (how often each row was drawn), so
    all resamples are scored with a few matrix products. ``tests/evaluate`` checks that these equal
    scikit-learn's values on the unweighted sample.
    """

    def __init__(self, enc: Encoded, positive: int | None = None) -> None:
        gold, pred = enc.one_hot()
        self.tp, self.fp, self.fn = gold * pred, pred * (1 - gold), gold * (1 - pred)
        self.exact = (gold == pred).all(axis=1).astype(float)
        self.row_f1 = _f1(self.tp.sum(axis=1), self.fp.sum(axis=1), self.fn.sum(axis=1))
        self.invalid = enc.invalid.astype(float)
        self.positive = positive

    def scores(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Scalar metrics for each row of ``weights`` (shape resamples x rows)."""
        tp, fp, fn = weights @ self.tp, weights @ self.fp, weights @ self.fn
        per_class, support, total = _f1(tp, fp, fn), tp + fn, weights.sum(axis=1)
        weighted = (per_class * support).sum(axis=1)
        support_sum = support.sum(axis=1)
        values = {
            "accuracy": weights @ self.exact / total,
            "exact_match": weights @ self.exact / total,
            "macro_f1": per_class.mean(axis=1),
            "weighted_f1": np.divide(weighted, support_sum, out=np.zeros_like(weighted), where=support_sum > 0),
            "micro_f1": _f1(tp.sum(axis=1), fp.sum(axis=1), fn.sum(axis=1)),
            "samples_f1": weights @ self.row_f1 / total,
            "invalid_rate": weights @ self.invalid / total,
        }
        if self.positive is not None:
            values["f1_positive"] = per_class[:, self.positive]
        return values


def resample_weights(n: int, n_resamples: int, seed: int, chunk: int = 200) -> Iterator[np.ndarray]:
    """Bootstrap resamples as draw counts per row, a chunk at a time to bound memory."""
    rng = np.random.default_rng(seed)
    for first in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - first)
        draws = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        yield np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(float)


def bootstrap_ci(
    statistic: Callable[[np.ndarray], Mapping[str, np.ndarray | None]], n: int, n_resamples: int, seed: int
) -> dict[str, list[float]]:
    """95% percentile-bootstrap intervals: resample rows with replacement, recompute, take 2.5/97.5%.

    ``statistic`` maps resample weights (resamples x rows) to one value per resample and metric,
    so single-label, multi-label and pathway scores share this.
    """
    draws: dict[str, list[np.ndarray]] = {}
    for weights in resample_weights(n, n_resamples, seed):
        for name, values in statistic(weights).items():
            if values is not None:
                draws.setdefault(name, []).append(values)
    return {
        name: [float(v) for v in np.percentile(np.concatenate(chunks), [2.5, 97.5])] for name, chunks in draws.items()
    }


def paired_win_rate(task: Task, gold: Sequence[Sequence[str] | str], better: Sequence[Prediction],
                    than: Sequence[Prediction], *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> float:
    """Share of bootstrap resamples (the same rows drawn for both) on which ``better`` scores above ``than``
    by the task's official metric: a paired test of one system against another on the same posts."""
    metric = task.official_metric
    counts = []
    for pred in (better, than):
        enc = encode(task, gold, pred)
        counts.append(RowCounts(enc, _positive_index(task, enc) if metric == "f1_positive" else None))
    wins = 0
    for weights in resample_weights(len(gold), n_resamples, seed):
        wins += int((counts[0].scores(weights)[metric] > counts[1].scores(weights)[metric]).sum())
    return wins / n_resamples


def ci_metrics(task: Task, available: Iterable[str]) -> list[str]:
    """The official metric and the main averages the task reports, in that order."""
    wanted = [task.official_metric, *(m for m in task.report_metrics if m in MAIN_AVERAGES)]
    return [m for m in dict.fromkeys(wanted) if m in set(available)]


def score(
    task: Task,
    gold: Sequence[Sequence[str] | str],
    pred: Sequence[Prediction],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    label_list: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every metric in ``task.report_metrics`` plus the official one, ``n``, ``n_invalid`` and ``ci95``.

    ``label_list`` is the label.txt of a hierarchical task (ignored otherwise); hierarchical tasks
    are scored by ``evaluate.pathway``.
    """
    names = list(dict.fromkeys([task.official_metric, *task.report_metrics]))
    header = {"task": task.id, "official_metric": task.official_metric}
    bootstrap = {"n_resamples": n_resamples, "seed": seed, "method": "percentile"}
    if task.type is TaskType.HIERARCHICAL:
        from mentalglm.evaluate.pathway import pathway_scores  # pathway builds on this module

        gold_rows, pred_rows = [_as_labels(g) for g in gold], normalise_predictions(task, pred)
        scores = pathway_scores(gold_rows, pred_rows, label_list, n_resamples=n_resamples, seed=seed)
        missing = [name for name in names if name not in scores]
        if missing:
            raise ValueError(f"task {task.id!r} reports {missing}, which pathway scoring does not compute")
        extra = {key: scores[key] for key in ("n", "n_invalid", "labels", "ci95")}
        return {**header, **extra, **{name: scores[name] for name in names}, "bootstrap": bootstrap}
    unknown = [name for name in names if name not in KNOWN_METRICS]
    if unknown:
        raise ValueError(f"task {task.id!r}: unknown metrics {unknown}; known metrics: {', '.join(KNOWN_METRICS)}")
    if "samples_f1" in names and not task.is_multi_label:
        raise ValueError(f"task {task.id!r}: samples_f1 is only defined for multi-label tasks")
    enc = encode(task, gold, pred)
    scalars = [name for name in names if name in _SCALARS]
    result: dict[str, Any] = {**header, "n": len(enc.y_true), "n_invalid": int(enc.invalid.sum())}
    result.update({name: _SCALARS[name](task, enc) for name in scalars})
    result.update({name: _STRUCTURED[name](task, enc) for name in names if name in _STRUCTURED})
    with_ci = ci_metrics(task, scalars)
    counts = RowCounts(enc, _positive_index(task, enc) if "f1_positive" in with_ci else None)

    def resampled(weights: np.ndarray) -> dict[str, np.ndarray | None]:
        values = counts.scores(weights)
        return {name: values[name] for name in with_ci}

    result["ci95"] = bootstrap_ci(resampled, len(enc.y_true), n_resamples, seed)
    result["bootstrap"] = bootstrap
    return result


# --- result files -----------------------------------------------------------------------------------


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
