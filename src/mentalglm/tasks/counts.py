"""Gold and predictions as arrays, per-row counts, and the bootstrap that all scores share.

Flat (``tasks.metrics``) and hierarchical (``tasks.pathway``) scoring both build on this module,
so neither has to import the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer


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


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """2TP / (2TP + FP + FN), 0 where undefined: scikit-learn's F1 with ``zero_division=0``."""
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator, dtype=float), where=denominator > 0)


class RowCounts:
    """Per-row TP/FP/FN (and row correctness) whose weighted sums give every scalar metric.

    The bootstrap needs each metric on a thousand resamples; scikit-learn's input checks make that
    seconds per metric, while a resample is just a row of weights (how often each row was drawn), so
    all resamples are scored with a few matrix products. ``tests/tasks/test_scoring.py`` checks that these equal
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
