"""Character n-gram TF-IDF + logistic regression: the fast baseline and the QC verifier.

Characters, not words: Weibo text is short, informal and full of slang that a segmenter
splits badly, and published Chinese baselines use character features too. Multi-label tasks
use one-vs-rest with one decision threshold tuned on the validation split, and at least one
label per post (every SocialCD-3K post has one). Per-label thresholds were tried and overfit:
rare labels have a handful of validation posts (test micro-F1 0.58 against 0.67 with one threshold).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mentalglm.data.records import Post
from mentalglm.files import OwnPickle
from mentalglm.tasks.metrics import score
from mentalglm.tasks.schema import Task

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 3)
C_GRID = (1.0, 4.0, 16.0)  # the inverse regularisation strengths tried on validation


def decide(proba: np.ndarray, classes: Sequence[str], multi_label: bool,
           thresholds: Sequence[float] = ()) -> list[tuple[str, ...]]:
    """Labels from probabilities: argmax, or every label at or above its threshold (at least the top one).

    The one decision rule of every classifier here (TF-IDF, encoder, their ensemble); it lives in this torch-free
    module so that the default analyzer does not import torch to decide.
    """
    if not multi_label:
        return [(classes[int(i)],) for i in np.asarray(proba).argmax(axis=1)]
    limits = np.asarray(thresholds if len(thresholds) else [0.5] * len(classes))
    out = []
    for row in np.asarray(proba):
        chosen = [c for c, p, t in zip(classes, row, limits, strict=True) if p >= t]
        out.append(tuple(chosen) if chosen else (classes[int(row.argmax())],))
    return out


class Classifier(Protocol):
    """What the analyzer needs of a task's classifier: its classes, probabilities and decision rule.

    Implemented by TfidfClassifier, the fine-tuned EncoderClassifier (train/encoder_classifier.py), the Ensemble of the two
    (analyze/ensemble.py) and the screened GatedClassifier (train/screen.py); TaskModel takes any of them.
    """

    @property
    def classes(self) -> list[str]: ...

    @property
    def multi_label(self) -> bool: ...

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...

    def decide(self, proba: np.ndarray) -> list[tuple[str, ...]]: ...

    def predict(self, texts: Sequence[str]) -> list[tuple[str, ...]]: ...


@dataclass
class TfidfClassifier(OwnPickle):
    task_id: str
    classes: list[str]
    multi_label: bool
    ngram_range: tuple[int, int] = (1, 3)
    C: float = 4.0
    max_features: int = 300_000
    thresholds: list[float] = field(default_factory=list)
    model: Any = None

    @classmethod
    def for_task(cls, task: Task, **kwargs: Any) -> TfidfClassifier:
        return cls(task.id, list(task.classifier_labels), task.is_multi_label, **kwargs)

    def _pipeline(self) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.pipeline import make_pipeline

        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=self.ngram_range, sublinear_tf=True, min_df=2,
                                     max_features=self.max_features)
        linear = LogisticRegression(C=self.C, max_iter=1000, class_weight="balanced")
        return make_pipeline(vectorizer, OneVsRestClassifier(linear) if self.multi_label else linear)

    def _targets(self, labels: Sequence[Sequence[str]]) -> np.ndarray:
        if self.multi_label:
            index = {c: i for i, c in enumerate(self.classes)}
            y = np.zeros((len(labels), len(self.classes)), dtype=int)
            for row, names in enumerate(labels):
                for name in names:
                    y[row, index[name]] = 1
            return y
        return np.array([self.classes.index(names[0]) for names in labels])

    def fit(self, texts: Sequence[str], labels: Sequence[Sequence[str]],
            val_texts: Sequence[str] = (), val_labels: Sequence[Sequence[str]] = ()) -> TfidfClassifier:
        self.model = self._pipeline()
        y = self._targets(labels)
        if self.multi_label:
            present = y.sum(axis=0) > 0  # a label absent from training cannot be learned; keep it predictable as 0
            if not present.all():
                y[0, ~present] = 1  # one-vs-rest needs two classes per column
        self.model.fit(list(texts), y)
        self.thresholds = [0.5] * len(self.classes)
        if self.multi_label and len(val_texts):
            self._tune_thresholds(val_texts, val_labels)
        return self

    def _tune_thresholds(self, texts: Sequence[str], labels: Sequence[Sequence[str]]) -> None:
        """The one threshold that maximises micro-F1 on validation, shared by all labels."""
        from sklearn.metrics import f1_score

        proba = self.predict_proba(texts)
        y = self._targets(labels)
        scores = []
        for t in THRESHOLD_GRID:
            self.thresholds = [float(t)] * len(self.classes)
            scores.append(f1_score(y, self._targets(self.decide(proba)), average="micro", zero_division=0))
        self.thresholds = [float(THRESHOLD_GRID[int(np.argmax(scores))])] * len(self.classes)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("classifier is not trained: call fit() or load()")
        proba = np.asarray(self.model.predict_proba(list(texts)))
        if self.multi_label or proba.shape[1] == len(self.classes):
            return proba
        # A class without training posts (the none level of suicide risk when trained on the forum alone) is
        # never predicted: probability 0 in its column, so columns always follow ``classes``.
        full = np.zeros((len(proba), len(self.classes)))
        full[:, self.model.classes_.astype(int)] = proba
        return full

    def predict(self, texts: Sequence[str]) -> list[tuple[str, ...]]:
        return self.decide(self.predict_proba(texts))

    def decide(self, proba: np.ndarray) -> list[tuple[str, ...]]:
        return decide(proba, self.classes, self.multi_label, self.thresholds)



@runtime_checkable
class BuiltOnTfidf(Protocol):
    """A classifier with a TF-IDF model inside it (a screen in front of one, an ensemble with one)."""

    @property
    def tfidf(self) -> TfidfClassifier | None: ...


def tfidf_part(classifier: Classifier) -> TfidfClassifier | None:
    """The TF-IDF model a classifier is built on: itself, the one inside it, or None (an encoder alone)."""
    if isinstance(classifier, TfidfClassifier):
        return classifier
    return classifier.tfidf if isinstance(classifier, BuiltOnTfidf) else None


def fit_on_posts(task: Task, train: Sequence[Post], validation: Sequence[Post] = (), **kwargs: Any) -> TfidfClassifier:
    return TfidfClassifier.for_task(task, **kwargs).fit(
        [p.text for p in train], [p.labels for p in train],
        [p.text for p in validation], [p.labels for p in validation])


def fit_best_c(task: Task, train: Sequence[Post], validation: Sequence[Post], c_grid: Sequence[float] = C_GRID,
               log: Callable[[str], None] | None = None) -> tuple[TfidfClassifier, dict[float, float]]:
    """One model per C, the one with the best official metric on validation kept (the first of equals), with the
    metric at every C. Without validation posts there is nothing to choose on: the class default C, metric NaN."""
    tuning: dict[float, float] = {}
    best: TfidfClassifier | None = None
    for c in c_grid if validation else [TfidfClassifier.C]:
        model = fit_on_posts(task, train, validation, C=c)
        tuning[c] = (score(task, [p.labels for p in validation], model.predict([p.text for p in validation]),
                           n_resamples=0)[task.official_metric] if validation else math.nan)
        if log is not None:
            log(f"{task.id}: C={c} validation {task.official_metric}={tuning[c]:.4f}")
        if best is None or tuning[c] > tuning[best.C]:
            best = model
    assert best is not None
    return best, tuning


class TfidfVerifier:
    """QC verifier: a TF-IDF classifier trained on the task's posts reads the label from an explanation."""

    def __init__(self, classifier: TfidfClassifier) -> None:
        self.classifier = classifier
        self.name = f"tfidf-verifier({classifier.task_id})"

    def predict(self, task: Task, explanations: Sequence[str]) -> list[tuple[str, ...]]:
        if task.id != self.classifier.task_id:
            raise ValueError(f"verifier trained for {self.classifier.task_id}, asked about {task.id}")
        return self.classifier.predict(explanations)
