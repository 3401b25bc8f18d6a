"""How a classifier's raw probabilities become the confidence a user reads, and how that map is chosen.

The logistic regression uses ``class_weight="balanced"``, which inflates rare classes' probabilities, so raw
probabilities are not taken on trust. Multi-label tasks get per-label Platt scaling (a 1-D logistic fit on the
log-odds, the ``sigmoid`` method of sklearn's CalibratedClassifierCV), single-label tasks one temperature, both
fitted on validation. Raw and calibrated are measured by 2-fold cross-fitting on validation (Brier score, ECE)
and the better one by Brier is kept; the card records which, with the numbers. Labels are always decided on the
raw probabilities (that is what the thresholds were tuned on); only the reported confidence is calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mentalglm.seeds import DEFAULT_SEED

_EPS = 1e-6


@dataclass(frozen=True)
class Calibration:
    """How raw probabilities become the confidence a user reads.

    ``platt``: per-label ``sigmoid(a * logit(p) + b)`` (multi-label tasks). ``temperature``: ``softmax(log(p) / T)``
    (single-label tasks): one scalar, so the order of the labels, and with it the decided label, never changes.
    Per-label Platt renormalised (what single-label cards before this used, still read) could reorder labels: the
    label shown was then not the most confident one shown on 4.7 % of emotion test posts. ``none``: raw.
    """

    method: str = "none"
    coef: tuple[tuple[float, float], ...] = ()
    normalise: bool = False
    temperature: float = 1.0

    def apply(self, proba: np.ndarray) -> np.ndarray:
        if self.method == "none":
            return proba
        p = np.clip(proba, _EPS, 1 - _EPS)
        if self.method == "temperature":
            from scipy.special import softmax

            return softmax(np.log(p) / self.temperature, axis=1)
        a, b = np.array(self.coef).T
        out = 1.0 / (1.0 + np.exp(-(a * np.log(p / (1 - p)) + b)))
        return out / out.sum(axis=1, keepdims=True) if self.normalise else out

    def to_dict(self) -> dict[str, Any]:
        if self.method == "temperature":
            return {"method": self.method, "temperature": self.temperature}
        return {"method": self.method, "coef": [list(c) for c in self.coef], "normalise": self.normalise}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Calibration:
        return cls(raw.get("method", "none"), tuple(tuple(c) for c in raw.get("coef", ())),
                   bool(raw.get("normalise", False)), float(raw.get("temperature", 1.0)))


def fit_platt(proba: np.ndarray, y: np.ndarray, normalise: bool = False) -> Calibration:
    from sklearn.linear_model import LogisticRegression

    p = np.clip(proba, _EPS, 1 - _EPS)
    coef = []
    for j in range(p.shape[1]):
        if len(set(y[:, j])) < 2:  # a label absent from validation: leave it as it is
            coef.append((1.0, 0.0))
            continue
        model = LogisticRegression(C=1e4).fit(np.log(p[:, j] / (1 - p[:, j]))[:, None], y[:, j])
        coef.append((float(model.coef_[0, 0]), float(model.intercept_[0])))
    return Calibration("platt", tuple(coef), normalise)


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> Calibration:
    """The temperature with the lowest negative log-likelihood of the gold labels (one-hot rows ``y``)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    log_p = np.log(np.clip(proba, _EPS, 1.0))
    rows, gold = np.arange(len(y)), y.argmax(axis=1)

    def nll(log_t: float) -> float:
        return float(-log_softmax(log_p / np.exp(log_t), axis=1)[rows, gold].mean())

    best = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return Calibration("temperature", temperature=float(np.exp(best.x)))


def brier(proba: np.ndarray, y: np.ndarray, multi_label: bool) -> float:
    """Multi-class Brier (sum over classes, mean over posts) or mean per-label binary Brier."""
    squared = (proba - y) ** 2
    return float(squared.mean() if multi_label else squared.sum(axis=1).mean())


def ece(proba: np.ndarray, y: np.ndarray, multi_label: bool, bins: int = 10) -> float:
    """Expected calibration error: top-label confidence (single-label) or every label cell (multi-label)."""
    if multi_label:
        conf, hit = proba.ravel(), y.ravel()
    else:
        top = proba.argmax(axis=1)
        conf, hit = proba[np.arange(len(top)), top], y[np.arange(len(top)), top]
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum(abs(conf[which == b].mean() - hit[which == b].mean()) * (which == b).sum()
                     for b in range(bins) if (which == b).any()) / len(conf))


def choose_calibration(proba: np.ndarray, y: np.ndarray, multi_label: bool,
                       seed: int = DEFAULT_SEED) -> tuple[Calibration, dict[str, Any]]:
    """Raw probabilities or the task's calibration map (per-label Platt for multi-label tasks, a temperature for
    single-label ones), whichever has the lower 2-fold cross-fitted validation Brier."""
    fit = fit_platt if multi_label else fit_temperature
    name = "platt_2fold" if multi_label else "temperature_2fold"
    order = np.random.default_rng(seed).permutation(len(y))
    folds = (order[: len(y) // 2], order[len(y) // 2:])
    crossed = np.empty_like(proba)
    for fit_on, apply_to in (folds, folds[::-1]):
        crossed[apply_to] = fit(proba[fit_on], y[fit_on]).apply(proba[apply_to])
    measured = {
        "raw": {"brier": brier(proba, y, multi_label), "ece": ece(proba, y, multi_label)},
        name: {"brier": brier(crossed, y, multi_label), "ece": ece(crossed, y, multi_label)},
    }
    chosen = fit(proba, y) if measured[name]["brier"] < measured["raw"]["brier"] else Calibration()
    return chosen, {**{k: {m: round(v, 4) for m, v in d.items()} for k, d in measured.items()},
                    "chosen": chosen.method, "criterion": "lower 2-fold cross-fitted Brier on validation"}
