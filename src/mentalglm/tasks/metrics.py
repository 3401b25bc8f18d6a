"""Scores with explicit averaging, INVALID answers counted as wrong, bootstrap CIs.

Every average is named (macro / weighted / micro / samples): an ``f1`` that silently falls back
to binary averaging is the pitfall lm-evaluation-harness documents. INVALID answers are never
dropped: a single-label INVALID is a prediction outside every class (it costs the gold class
recall and gives no class a false positive), a multi-label INVALID is an empty prediction row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, multilabel_confusion_matrix

from mentalglm.tasks.counts import Encoded, RowCounts, bootstrap_ci, indicator, per_label, resample_weights
from mentalglm.tasks.parsing import Parsed
from mentalglm.tasks.pathway import pathway_scores
from mentalglm.tasks.schema import Task, TaskType

INVALID = "INVALID"
# Scalars that get a bootstrap CI besides the task's official metric.
MAIN_AVERAGES = ("accuracy", "macro_f1", "weighted_f1", "micro_f1", "f1_positive", "samples_f1", "exact_match")
DEFAULT_RESAMPLES = 1000

Prediction = Parsed | Sequence[str] | str | None


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
    are scored by ``tasks.pathway``.
    """
    names = list(dict.fromkeys([task.official_metric, *task.report_metrics]))
    header = {"task": task.id, "official_metric": task.official_metric}
    bootstrap = {"n_resamples": n_resamples, "seed": seed, "method": "percentile"}
    if task.type is TaskType.HIERARCHICAL:
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
