"""The C-IMHI answer layout: label(s) first, then "推理：" and the explanation.

This is the one place that decides how an assistant answer is written; the strict parser
(``tasks.parsing``) reads exactly this layout back.
"""

from __future__ import annotations

from collections.abc import Sequence

from mentalglm.tasks.schema import Task

LABEL_PREFIX = "标签："
REASON_PREFIX = "推理："
LABEL_SEPARATOR = "、"
NO_LABEL_ZH = "无"


def render_labels(task: Task, label_ids: Sequence[str]) -> str:
    """Chinese names of the labels in the task's declared order (stable, so answers are deterministic)."""
    order = {label_id: i for i, label_id in enumerate(task.label_ids)}
    unknown = [label_id for label_id in label_ids if label_id not in order]
    if unknown:
        raise KeyError(f"task {task.id!r} has no labels {unknown}; labels: {', '.join(task.label_ids)}")
    names = [task.label(label_id).zh for label_id in sorted(set(label_ids), key=order.__getitem__)]
    return LABEL_SEPARATOR.join(names) if names else NO_LABEL_ZH


def label_names(task: Task, label_ids: Sequence[str]) -> str:
    """Chinese names of ``label_ids`` in the order given: how prompts and the grounded label sentence name the
    gold or decided labels (unsorted, so that a cached prompt stays byte-identical)."""
    return LABEL_SEPARATOR.join(task.label(label_id).zh for label_id in label_ids)


def render_answer(task: Task, label_ids: Sequence[str], explanation: str | None) -> str:
    """``标签：<names>`` and, when there is an explanation, ``\\n推理：<explanation>``."""
    answer = LABEL_PREFIX + render_labels(task, label_ids)
    if explanation and explanation.strip():
        answer += "\n" + REASON_PREFIX + explanation.strip()
    return answer
