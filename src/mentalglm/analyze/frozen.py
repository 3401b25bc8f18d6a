"""The task's TF-IDF classifier averaged with logistic regressions on frozen sentence encoders (e5, USE).

Why: on the suicide task the classifier behind the screen decides low against high, and which posts get the crisis
panel. Frozen encoders cost nothing to train and read a post in milliseconds, but 100 validation posts cannot tell
a two-point gain from noise, so the weights are chosen by 5-fold cross-validation over train + validation (every
post scored by a model that did not see it) and the average is kept only when it beats TF-IDF alone on
``MIN_WIN_RATE`` of paired bootstrap resamples of those out-of-fold answers. The final readers are fitted on
train, like the TF-IDF model. Declared per task (``frozen_encoders`` in the task's YAML); single-label tasks only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mentalglm.analyze.ensemble import MIN_WIN_RATE, Ensemble
from mentalglm.data.records import Post
from mentalglm.files import OwnPickle
from mentalglm.tasks.schema import Task
from mentalglm.train.classical import TfidfClassifier
from mentalglm.train.embedding import EmbeddingCache, EmbeddingClassifier, default_cache_path, embed
from mentalglm.train.screen import weightings

FOLDS = 5
SEED = 13
MIN_GAIN = 0.01  # of the official metric, out of fold, besides the paired win rate


@dataclass
class EncoderAverage(OwnPickle):
    """Frozen encoders' classifiers averaged with weights summing to one: a scorer of the task's classes."""

    readers: list[EmbeddingClassifier]
    weights: list[float]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        return sum(w * r.predict_proba(texts) for r, w in zip(self.readers, self.weights, strict=True))


def _embeddings(kind: str, texts: Sequence[str]) -> np.ndarray:
    return embed(list(texts), cache=EmbeddingCache(default_cache_path(kind)), encoder_name=kind)


def fit_frozen_ensemble(task: Task, tfidf: TfidfClassifier, train: Sequence[Post], validation: Sequence[Post],
                        encoders: Sequence[str], log: Callable[[str], None] = print,
                        ) -> tuple[Ensemble | None, dict[str, Any]]:
    """The average and its record, or None and the record when TF-IDF alone is kept."""
    from sklearn.model_selection import StratifiedKFold

    from mentalglm.tasks.metrics import paired_win_rate, score

    if task.is_multi_label:
        raise ValueError(f"{task.id}: frozen_encoders is for single-label tasks")
    classes = list(tfidf.classes)
    # one copy of each post: a source repeated for weight (the invented posts) would sit in both folds
    pool = list({p.text: p for p in [*train, *validation]}.values())
    texts = [p.text for p in pool]
    y = np.array([classes.index(p.labels[0]) for p in pool])
    vectors = {kind: _embeddings(kind, texts) for kind in encoders}
    log(f"{task.id}: {FOLDS}-fold cross-validation of TF-IDF + {' + '.join(encoders)} over {len(pool)} posts")
    out_of_fold = {name: np.zeros((len(pool), len(classes))) for name in ["tfidf", *encoders]}
    for fit_rows, read_rows in StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(texts, y):
        fold = TfidfClassifier(task.id, classes, multi_label=False, C=tfidf.C).fit(
            [texts[i] for i in fit_rows], [(classes[y[i]],) for i in fit_rows])
        out_of_fold["tfidf"][read_rows] = fold.predict_proba([texts[i] for i in read_rows])
        for kind in encoders:
            reader = EmbeddingClassifier(classes, encoder=kind).fit_embeddings(vectors[kind][fit_rows], y[fit_rows])
            out_of_fold[kind][read_rows] = reader.proba_from_embeddings(vectors[kind][read_rows])
    gold = [p.labels for p in pool]

    def decided(weights: tuple[float, ...]) -> list[tuple[str, ...]]:
        proba = sum(w * out_of_fold[name] for name, w in zip(["tfidf", *encoders], weights, strict=True))
        return tfidf.decide(proba)

    metric = task.official_metric
    tried = {w: float(score(task, gold, decided(w), n_resamples=0)[metric]) for w in weightings(len(encoders))}
    alone = (1.0,) + (0.0,) * len(encoders)
    best = max(tried, key=lambda w: (round(tried[w], 4), w))
    win = paired_win_rate(task, gold, decided(best), decided(alone), n_resamples=1000) if best != alone else 0.0
    kept = best != alone and tried[best] - tried[alone] >= MIN_GAIN and win >= MIN_WIN_RATE
    record = {"encoders": list(encoders), "folds": FOLDS, "posts": len(pool), "weights": dict(zip(
        ["tfidf", *encoders], best, strict=True)), f"cv_{metric}": round(tried[best], 4),
        f"cv_{metric}_tfidf_alone": round(tried[alone], 4), "cv_win_rate_over_tfidf": round(win, 4), "kept": kept,
        f"cv_{metric}_by_weights": {", ".join(f"{n} {w}" for n, w in zip(["tfidf", *encoders], ws, strict=True)):
                                    round(v, 4) for ws, v in tried.items()}}
    log(f"{task.id}: out of fold {metric} {tried[alone]:.4f} (TF-IDF) -> {tried[best]:.4f} with weights "
        f"{record['weights']}, ahead on {win:.0%} of paired resamples: {'kept' if kept else 'TF-IDF alone kept'}")
    if not kept:
        return None, record
    row = {text: i for i, text in enumerate(texts)}  # the pool holds every training post once: no second read
    train_rows = [row[p.text] for p in train]
    train_y = np.array([classes.index(p.labels[0]) for p in train])
    used = [(kind, w) for kind, w in zip(encoders, best[1:], strict=True) if w > 0.0]
    readers = [EmbeddingClassifier(classes, encoder=kind).fit_embeddings(vectors[kind][train_rows], train_y)
               for kind, _ in used]
    total = sum(w for _, w in used)
    return Ensemble(tfidf, EncoderAverage(readers, [w / total for _, w in used]), best[0]), record
