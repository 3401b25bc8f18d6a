"""The report's figures as PNG bytes (matplotlib, drawn off-screen): per-label F1 of every system, and a confusion
matrix per system. Knows result dicts and tasks; where a figure goes is report.py's."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from mentalglm.tasks.schema import Task, TaskType


def _png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; label ids keep the axes free of CJK font issues
    import matplotlib.pyplot as plt

    return plt


def per_label_figure(task: Task, results: Sequence[dict[str, Any]]) -> bytes:
    """Grouped bars: F1 of every label (headline mode) for every system."""
    plt = _pyplot()
    labels = list(task.label_ids)
    width = 0.8 / max(1, len(results))
    figure, axes = plt.subplots(figsize=(max(6.0, 0.7 * len(labels) * max(1, len(results)) ** 0.5 + 2), 3.6))
    for i, r in enumerate(results):
        per = r["metrics"][r["metrics"]["headline"]["mode"]]["per_label"]
        if task.type is TaskType.HIERARCHICAL:  # parents here; the children get a table of their own
            per = per.get("parent", {})
        # a label the results were scored without (written before the task gained it): no bar, not a zero
        axes.bar([x + i * width for x in range(len(labels))],
                 [per[label]["f1"] if label in per else float("nan") for label in labels], width,
                 label=r["run"]["system"])
    ticks = [task.label(label).en if task.type is TaskType.HIERARCHICAL else label for label in labels]  # ids are CJK
    axes.set_xticks([x + width * (len(results) - 1) / 2 for x in range(len(labels))], ticks, rotation=35, ha="right")
    axes.set_ylim(0, 1)
    axes.set_ylabel("F1")
    axes.set_title(f"{task.id}: per-label F1")
    axes.legend(fontsize=7, loc="upper right")
    return _png(figure)


def confusion_figure(task: Task, result: dict[str, Any]) -> bytes:
    """Gold rows by predicted columns (INVALID last), counts written in the cells."""
    plt = _pyplot()
    confusion = result["metrics"][result["metrics"]["headline"]["mode"]]["confusion_matrix"]
    matrix = confusion["matrix"]
    figure, axes = plt.subplots(figsize=(1.0 + 0.6 * len(confusion["columns"]), 0.8 + 0.55 * len(matrix)))
    axes.imshow(matrix, cmap="Blues")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axes.text(j, i, str(value), ha="center", va="center", fontsize=8,
                      color="white" if value > peak / 2 else "black")
    axes.set_xticks(range(len(confusion["columns"])), confusion["columns"], rotation=35, ha="right")
    axes.set_yticks(range(len(confusion["rows"])), confusion["rows"])
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    axes.set_title(f"{task.id} · {result['run']['system']}", fontsize=9)
    return _png(figure)
