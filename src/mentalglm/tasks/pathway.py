"""Cognitive pathway extraction: hierarchical multi-label sentence classification, evaluation only.

Files follow the public hierarchical text classification layout (one ``sentence<TAB>labels`` line,
labels comma-separated, a child written ``parent##child``) plus a ``label.txt`` with one label a
line. The four parents come from the ``cognitive_pathway`` task declaration; the children are not
published to us, so they come only from the user's ``label.txt``. The files are read by the data
loader (``data/loaders/cognitive_pathway.py``); this module holds what a label means and how
predictions are scored, so that data, training, evaluation and the analyzer share one rule.

Scores are given at three levels: ``parent_*`` (a child implies its parent), ``child_*`` (the
``parent##child`` labels only) and plain ``micro_f1``/``macro_f1`` over all labels with parents
implied, the flat view reported by the dataset's authors.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.errors import ConfigError, MentalGLMError
from mentalglm.tasks.counts import Encoded, RowCounts, bootstrap_ci, indicator, per_label
from mentalglm.tasks.registry import get_task
from mentalglm.tasks.schema import Label, Task, TaskType

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


def child_name(label: str) -> str:
    """``认知歪曲##以偏概全`` -> ``以偏概全``; a parent is its own name."""
    return label.split(SEPARATOR, 1)[-1]


def with_parents(labels: Iterable[str]) -> tuple[str, ...]:
    """The labels with every child's parent added (a child implies its parent), parents first, in file order."""
    labels = tuple(labels)
    return tuple(dict.fromkeys([*(parent_of(label) for label in labels), *labels]))


def _parentless_hint(label: str, known: Collection[str]) -> str:
    owners = [k for k in known if SEPARATOR in k and child_name(k) == label]
    if owners:
        return f"; a child is written with its parent: {' or '.join(map(repr, owners))}"
    return f"; write a child as PARENT{SEPARATOR}CHILD with PARENT one of {', '.join(pathway_parents())}"


def label_line_problem(label: str, listed: Collection[str]) -> str | None:
    """Why one line of label.txt is wrong (``listed``: the labels on the lines above it), or None."""
    parents = pathway_parents()
    if not label:
        return "empty line; delete it (label.txt lists one label a line)"
    if parent_of(label) not in parents or child_name(label) == "":
        return f"label {label!r} is neither a parent nor parent{SEPARATOR}child" + _parentless_hint(label, ())
    if label in listed:
        return f"label {label!r} is listed twice; delete one of the two lines"
    return None


def label_list_problem(labels: Sequence[str]) -> str | None:
    """Why a whole label.txt does not describe these files (a parent missing), or None."""
    missing = [parent for parent in pathway_parents() if parent not in labels]
    if missing:
        return (f"label.txt does not list the parent(s) {', '.join(missing)}; the cognitive pathway files have the "
                f"four parents {', '.join(pathway_parents())}: add a line for each (is this the right label.txt?)")
    return None


def parse_label_field(field: str, known: Collection[str], label_file: Path | str = "label.txt") -> tuple[str, ...]:
    """The labels of one ``sentence<TAB>labels`` line, duplicates dropped; ValueError names what is wrong."""
    labels = tuple(dict.fromkeys(filter(None, (part.strip() for part in _LABEL_SPLIT.split(field)))))
    if not labels:
        raise ValueError("no labels after the TAB; every sentence carries at least one comma-separated label")
    for label in labels:
        if label in known:
            continue
        if SEPARATOR not in label and label not in pathway_parents():
            owners = [k for k in known if SEPARATOR in k and child_name(k) == label]
            if owners:
                raise ValueError(f"label {label!r} has no parent" + _parentless_hint(label, known))
        raise ValueError(f"label {label!r} is not in {label_file}{_did_you_mean(label, known)}; add it there if "
                         "it is a label of these files")
    return labels


def refuse_hierarchical(task_id: str, command: str) -> None:
    """Commands made for flat tasks name the pathway command that does the job instead of failing deep inside."""
    task = get_task(task_id)
    if task.type is TaskType.HIERARCHICAL:
        raise ConfigError(f"task {task.id!r} is hierarchical (its children come from your label.txt): use "
                          f"`{command}` (docs/pathway.md)")


def _did_you_mean(label: str, known: Collection[str]) -> str:
    """A close known label: among the children of the same parent by child name (the shared ``parent##`` prefix
    would make every child look close), else among all labels."""
    siblings = {child_name(k): k for k in known if SEPARATOR in k and parent_of(k) == parent_of(label)}
    if SEPARATOR in label and siblings:
        close = [siblings[c] for c in difflib.get_close_matches(child_name(label), list(siblings), n=1)]
    else:
        close = difflib.get_close_matches(label, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def pathway_task(labels: Sequence[str]) -> Task:
    """The declared task with label.txt's children as labels of their own, so that an LLM can name them.

    A child's id is ``parent##child`` and its name the child's own (its full id when two parents share the
    name); the instruction lists the children under their parents. Answers then render and parse with the
    C-IMHI layout and parsers like any other task, and a child read back implies its parent when scored.
    """
    task = get_task(PATHWAY_TASK_ID)
    children = [label for label in labels if SEPARATOR in label]
    unknown = [label for label in children if parent_of(label) not in task.label_ids]
    if unknown:
        raise ValueError(f"unknown pathway parents in {unknown}")
    counts = Counter(child_name(label) for label in children)
    taken = {form.lower() for label in task.labels for form in label.surface_forms}
    extra = []
    for label in children:
        parent, name = task.label(parent_of(label)), child_name(label)
        shown = name if counts[name] == 1 and name.lower() not in taken else label
        extra.append(Label(id=label, zh=shown, en=f"{parent.en}: {name}", synonyms=(label,),
                           definition_zh=f"{parent.zh}的子类：{name}"))
    if not extra:
        return task
    listing = "；".join(f"{parent}：{'、'.join(e.zh for e in extra if parent_of(e.id) == parent)}"
                       for parent in task.label_ids if any(parent_of(e.id) == parent for e in extra))
    return replace(task, labels=task.labels + tuple(extra),
                   instruction=f"{task.instruction}能判断子类时，把子类也写进标签（{listing}）。")


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
