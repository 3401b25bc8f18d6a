"""Cognitive pathway extraction: hierarchical multi-label sentence classification, evaluation only.

Files follow the public hierarchical text classification layout (one ``sentence<TAB>labels`` line,
labels comma-separated, a child written ``parent##child``) plus a ``label.txt`` with one label a
line. The four parents come from the ``cognitive_pathway`` task declaration; the children are not
published to us, so they come only from the user's ``label.txt``.

Scores are given at three levels: ``parent_*`` (a child implies its parent), ``child_*`` (the
``parent##child`` labels only) and plain ``micro_f1``/``macro_f1`` over all labels with parents
implied, the flat view reported by the dataset's authors.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.errors import MentalGLMError
from mentalglm.tasks.counts import Encoded, RowCounts, bootstrap_ci, indicator, per_label
from mentalglm.tasks.registry import get_task

PATHWAY_TASK_ID = "cognitive_pathway"
SEPARATOR = "##"
_LABEL_SPLIT = re.compile("[,，]")
# metric-name prefix of each level; "" is the flat view over all labels
LEVELS = {"parent": "parent_", "child": "child_", "all": ""}


class PathwayFileError(MentalGLMError):
    def __init__(self, path: Path | str, line: int, reason: str) -> None:
        self.path, self.line = Path(path), line
        super().__init__(f"{path}:{line}: {reason}")


def pathway_parents() -> tuple[str, ...]:
    return get_task(PATHWAY_TASK_ID).label_ids


def parent_of(label: str) -> str:
    return label.split(SEPARATOR, 1)[0]


def _lines(path: Path | str) -> Iterator[tuple[int, str]]:
    with Path(path).open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line.rstrip("\r\n")


def read_label_file(path: Path | str) -> tuple[str, ...]:
    """All labels of label.txt in file order; each must be a known parent or ``parent##child``."""
    parents = pathway_parents()
    labels: list[str] = []
    for number, line in _lines(path):
        label = line.strip()
        child = label.split(SEPARATOR, 1)[1] if SEPARATOR in label else None
        if parent_of(label) not in parents or child == "":
            raise PathwayFileError(
                path, number, f"label {label!r} is neither a parent nor parent##child; parents: {', '.join(parents)}"
            )
        if label in labels:
            raise PathwayFileError(path, number, f"label {label!r} is listed twice")
        labels.append(label)
    if not labels:
        raise PathwayFileError(path, 1, "the label file lists no labels")
    return tuple(labels)


def read_pathway_file(path: Path | str, label_file: Path | str) -> list[tuple[str, tuple[str, ...]]]:
    """(sentence, labels) rows; any row that cannot be read stops with its file and line."""
    known = set(read_label_file(label_file)) | set(pathway_parents())
    rows = []
    for number, line in _lines(path):
        if "\t" not in line:
            raise PathwayFileError(path, number, "no TAB between the sentence and its comma-separated labels")
        sentence, field = line.rsplit("\t", 1)
        labels = tuple(dict.fromkeys(filter(None, (part.strip() for part in _LABEL_SPLIT.split(field)))))
        if not labels:
            raise PathwayFileError(path, number, "no labels after the TAB")
        for label in labels:
            if label not in known:
                close = difflib.get_close_matches(label, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PathwayFileError(path, number, f"label {label!r} is not in {label_file}{hint}")
        rows.append((sentence.strip(), labels))
    return rows


def _level(row: Sequence[str], level: str) -> set[str]:
    parents = {parent_of(label) for label in row}
    children = {label for label in row if SEPARATOR in label}
    return {"parent": parents, "child": children, "all": parents | children}[level]


def _check(rows: Sequence[Sequence[str]], allowed_children: set[str] | None, what: str) -> None:
    parents = set(pathway_parents())
    for i, row in enumerate(rows):
        for label in row:
            child_unknown = allowed_children is not None and SEPARATOR in label and label not in allowed_children
            if parent_of(label) not in parents or child_unknown:
                raise ValueError(f"{what} row {i}: unknown pathway label {label!r}")


def pathway_scores(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str] | None],
    labels: Sequence[str] | None = None,
    *,
    n_resamples: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Micro and macro F1 per level; ``pred`` None is INVALID (an empty row, counted in ``n_invalid``).

    Macro averages run over the four parents and over the children of ``labels`` (label.txt), a
    child never seen scoring 0 as in scikit-learn; without ``labels``, over the children that
    occur in gold or predictions. ``labels`` in the result says which classes were averaged.
    """
    if len(gold) != len(pred) or not gold:
        raise ValueError(f"need aligned, non-empty rows: {len(gold)} gold rows, {len(pred)} predictions")
    pred_rows = [row or () for row in pred]
    allowed = None if labels is None else {label for label in labels if SEPARATOR in label}
    _check(gold, allowed, "gold")
    _check(pred_rows, allowed, "prediction")
    invalid = np.array([row is None for row in pred], dtype=bool)
    observed = sorted(set().union(*(_level(row, "child") for row in [*gold, *pred_rows])))
    children = [label for label in labels if SEPARATOR in label] if labels is not None else observed
    classes = {"parent": list(pathway_parents()), "child": children}
    classes["all"] = classes["parent"] + children
    encoded = {
        level: Encoded(
            tuple(names),
            indicator([_level(row, level) for row in gold], names),
            indicator([_level(row, level) for row in pred_rows], names),
            invalid,
            multi=True,
        )
        for level, names in classes.items()
        if names
    }

    counts = {level: RowCounts(enc) for level, enc in encoded.items()}

    def resampled(weights: np.ndarray) -> dict[str, np.ndarray | None]:
        out: dict[str, np.ndarray | None] = {}
        for level, prefix in LEVELS.items():
            values = counts[level].scores(weights) if level in counts else {}
            for average in ("micro_f1", "macro_f1"):
                out[prefix + average] = values.get(average)
        return out

    points = {
        prefix + average: encoded[level].f1(average.removesuffix("_f1")) if level in encoded else None
        for level, prefix in LEVELS.items()
        for average in ("micro_f1", "macro_f1")
    }
    return {
        "n": len(gold),
        "n_invalid": int(invalid.sum()),
        "invalid_rate": float(invalid.mean()),
        **points,
        "labels": {level: names for level, names in classes.items() if level != "all"},
        "per_label": {
            level: per_label(enc.y_true, enc.y_pred, enc.classes) for level, enc in encoded.items() if level != "all"
        },
        "ci95": bootstrap_ci(resampled, len(gold), n_resamples, seed),
    }
