"""Training recipe of a screened task: the task's own classifier behind its screen (train/screen.py).

Kept apart from artifacts.py so that the screen's data (tasks/*.yaml ``screen``, data/splits.py
``screen_data``), its gate and the measurements the model card reports live in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mentalglm.data.records import Post
from mentalglm.data.splits import ScreenData
from mentalglm.tasks import Task
from mentalglm.train.classical import Classifier
from mentalglm.train.screen import GatedClassifier, fit_gate


def flags(task: Task, posts: Sequence[Post]) -> list[bool]:
    """A post is "flagged" when it carries any label but the task's none label ("*" = some label)."""
    assert task.screen is not None
    return [bool(p.labels) and p.labels != (task.screen.none_label,) for p in posts]


@dataclass(frozen=True)
class GateInputs:
    """What the gate learns from and is tuned on: the task's own posts count as flagged."""

    flag: list[str]
    clear: list[str]
    validation: list[str]
    validation_flag: list[bool]
    # the task's ``also_flag`` second reader: (label, its posts, every other training post, validation carries it)
    also: tuple[str, list[str], list[str], list[bool]] | None = None


def gate_inputs(task: Task, own_train: Sequence[Post], own_validation: Sequence[Post], data: ScreenData) -> GateInputs:
    assert task.screen is not None
    train_flags = flags(task, data.train)
    validation = [*own_validation, *data.validation]
    also = None
    if task.screen.also_flag is not None:
        label = task.screen.also_flag
        every = [*own_train, *data.train]
        also = (label, [p.text for p in every if label in p.labels], [p.text for p in every if label not in p.labels],
                [label in p.labels for p in validation])
    return GateInputs(
        flag=[p.text for p in own_train] + [p.text for p, f in zip(data.train, train_flags, strict=True) if f],
        clear=[p.text for p, f in zip(data.train, train_flags, strict=True) if not f],
        validation=[p.text for p in validation],
        validation_flag=[True] * len(own_validation) + flags(task, data.validation), also=also)


def fit_screened(task: Task, inner: Classifier, own_train: Sequence[Post], own_validation: Sequence[Post],
                 data: ScreenData, log: Callable[[str], None] = print,
                 use_embedding: bool = True, encoders: Sequence[str] | None = None,
                 ) -> tuple[GatedClassifier, dict[str, Any]]:
    """The task's gate in front of ``inner``; ``encoders`` replaces the YAML's ``screen.encoders`` (experiments)."""
    assert task.screen is not None
    given = gate_inputs(task, own_train, own_validation, data)
    gate, record = fit_gate(given.flag, given.clear, given.validation, given.validation_flag,
                            task.screen.max_negative_flagged, name=task.id, use_embedding=use_embedding, log=log,
                            also=given.also, encoders=tuple(encoders or task.screen.encoders))
    record["sources"] = [{"name": s.name, "dataset": f"{s.dataset}/{s.part}", "loaded": s.loaded,
                          "dropped_as_contaminated": s.contaminated, "dropped_as_duplicate": s.duplicates,
                          "kept": s.kept} for s in data.sources]
    shown = record["validation_with_cascade"]  # as the analyzer decides: cascade and second reader included
    log(f"{task.id}: screen weight on TF-IDF {record['weight_on_tfidf']}, validation recall "
        f"{shown['recall']:.1%} with {shown['negatives_flagged']:.1%} of negatives flagged")
    return GatedClassifier(gate, inner, task.screen.none_label), record


def flagged_rate(classifier: Classifier, task: Task, texts: Sequence[str]) -> float:
    """Share of posts given any label but the none answer."""
    assert task.screen is not None
    if not texts:
        return 0.0
    decided = classifier.predict(list(texts))
    return round(float(np.mean([bool(d) and d != (task.screen.none_label,) for d in decided])), 4)


def screening_card(task: Task, classifier: Classifier, test: Sequence[Post], data: ScreenData) -> dict[str, Any]:
    """How often held-out posts get any answer but none: the task's test split (its recall of the population
    the task is about) and the screen's held-out sources; for tasks with crisis labels, the crisis rate too."""
    sets = {"task_test": [p.text for p in test], **{name: [p.text for p in posts] for name, posts in data.test.items()}}
    out: dict[str, Any] = {"posts": {name: len(texts) for name, texts in sets.items()},
                           "flagged": {name: flagged_rate(classifier, task, texts) for name, texts in sets.items()}}
    crisis = set(task.notice_labels("crisis"))
    if crisis:
        out["crisis"] = {name: round(float(np.mean([bool(crisis & set(d)) for d in classifier.predict(texts)])), 4)
                         for name, texts in sets.items() if texts}
    return out
