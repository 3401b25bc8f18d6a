"""Inter-rater agreement on one rubric scale: Cohen's kappa for two raters, Fleiss' kappa for more, and
Krippendorff's alpha for any number (it tolerates missing ratings)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from mentalglm.instruct.rubric import Level, Scale


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def cohen_kappa(a: Sequence[int], b: Sequence[int], *, ordinal: bool, labels: Sequence[int]) -> float | None:
    """Two raters; quadratic weights for ordinal scales. ``labels`` fixes the distances to the full scale."""
    from sklearn.metrics import cohen_kappa_score

    if not a:
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return _finite(cohen_kappa_score(a, b, labels=list(labels), weights="quadratic" if ordinal else None))


def fleiss_kappa(table: np.ndarray | Sequence[Sequence[int]]) -> float | None:
    """Fleiss (1971): ``table[i][j]`` raters who put item i in category j; every item has as many raters."""
    counts = np.asarray(table, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0:
        return None
    raters = counts.sum(axis=1)
    if not np.all(raters == raters[0]) or raters[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (at least 2) of ratings for every item")
    m = raters[0]
    p_category = counts.sum(axis=0) / counts.sum()
    p_item = ((counts**2).sum(axis=1) - m) / (m * (m - 1))
    p_bar, p_expected = p_item.mean(), float((p_category**2).sum())
    return None if p_expected == 1 else _finite((p_bar - p_expected) / (1 - p_expected))


def fleiss_table(matrix: np.ndarray, categories: Sequence[int]) -> np.ndarray:
    """Category counts per item from a raters x items matrix, keeping items that every rater rated."""
    complete = matrix[:, ~np.isnan(matrix).any(axis=0)]
    return np.array([[int((complete[:, i] == c).sum()) for c in categories] for i in range(complete.shape[1])])


def krippendorff_alpha(matrix: np.ndarray, *, level: Level, domain: Sequence[int]) -> float | None:
    """Raters x items with NaN for missing ratings; None when undefined (e.g. a single value everywhere)."""
    import krippendorff

    if (np.sum(~np.isnan(matrix), axis=0) >= 2).sum() == 0:
        return None
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return _finite(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level,
                                              value_domain=list(domain)))
    except (ValueError, ZeroDivisionError):
        return None


def agreement(matrix: np.ndarray, scale: Scale) -> dict[str, Any]:
    """Cohen's kappa for two raters, Fleiss' kappa for more; Krippendorff's alpha for any number >= 2."""
    raters = matrix.shape[0]
    if raters < 2:
        return {}
    ordinal = scale.level == "ordinal"
    result: dict[str, Any] = {}
    if raters == 2:
        both = ~np.isnan(matrix).any(axis=0)
        a, b = (matrix[r, both].astype(int).tolist() for r in (0, 1))
        result["cohen_kappa"] = cohen_kappa(a, b, ordinal=ordinal, labels=scale.codes)
        result["cohen_weights"] = "quadratic" if ordinal else "none"
        result["items"] = int(both.sum())
    else:
        table = fleiss_table(matrix, scale.codes)
        result["fleiss_kappa"] = fleiss_kappa(table) if len(table) else None
        result["items"] = len(table)
    result["krippendorff_alpha"] = krippendorff_alpha(matrix, level=scale.level, domain=scale.codes)
    result["krippendorff_level"] = scale.level
    return result
