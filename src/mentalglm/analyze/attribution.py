"""Explanations read off the classifier itself: which clauses of the post its decision rests on.

The ``attribution`` engine explains without an LLM, from clause occlusion (instruct/occlusion.py): a clause whose
removal lowers the decided label's probability most is evidence *the model used*, so the explanation is faithful to
the decision by construction, unlike an LLM's after-the-fact justification, and it costs one extra classifier call
per clause (milliseconds), not an LLM generation.

What it is not: clinical reasoning. It reports the wording that moved a surface-level statistical model;
the explanation says so. For a task with a positive class (suicide risk), a post decided negative still names
the clause that raises the positive class most, so the wording a reviewer should look at is never hidden.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mentalglm.analyze.schema import EvidenceSpan, TaskResult
from mentalglm.instruct.grounding import Clause, quotable_part
from mentalglm.instruct.occlusion import ClauseEffect, top_effects
from mentalglm.tasks import Task

METHOD = "clause occlusion on the classifier"
RISK_MIN_RISE = 0.01  # a post decided negative names the clause raising the positive class by at least this


def _quotes(effects: Sequence[ClauseEffect]) -> str:
    """The clauses as quotations a reader (and QC) finds in the post: no nested quotation marks, no placeholders."""
    return "".join(f"“{quotable_part(e.clause.text)}”" for e in effects)


def is_none_answer(task: Task, result: TaskResult) -> bool:
    """The task's screen found nothing: its none label, or an empty decision of a screened multi-label task."""
    if task.screen is None or not result.valid:
        return False
    decided = tuple(label.id for label in result.labels)
    return decided == () or decided == (task.screen.none_label,)


def none_explanation(task: Task, result: TaskResult) -> str:
    assert task.screen is not None
    key = task.screen.none_label or "none"
    confidence = result.confidences.get(key)
    shown = f"（置信度 {confidence:.0%}）" if confidence is not None else ""
    return (f"判定为「{task.screen.none_zh}」{shown}：筛查模型没有在帖子中读到需要关注的表达。"
            "（依据是分类器对用词的判断，不是临床推理。）")


def explain(task: Task, result: TaskResult, classes: Sequence[str], pieces: Sequence[Clause],
            drops: np.ndarray) -> None:
    """Fill ``result`` (labels already decided) with the Chinese explanation and the evidence spans."""
    if is_none_answer(task, result):  # nothing found: no evidence to quote and no risk wording
        result.explanation = none_explanation(task, result)
        result.evidence = []
        return
    sentences, spans = [], []
    for label in result.labels:
        column = list(classes).index(label.id)
        effects = top_effects(pieces, drops, column)
        confidence = f"（置信度 {label.confidence:.0%}）" if label.confidence is not None else ""
        if effects:
            sentences.append(f"判定为「{label.name_zh}」{confidence}：帖子中{_quotes(effects)}最支持这一判断，"
                             "逐句去掉后该类别的概率下降最多。")
        else:
            sentences.append(f"判定为「{label.name_zh}」{confidence}：没有哪一句单独起决定作用，判断来自全文的整体用词。")
        spans += [EvidenceSpan(quote=e.clause.text, start=e.clause.start, end=e.clause.end, label=label.id,
                               weight=round(e.drop, 4)) for e in effects]
    positive = task.positive_label
    decided = {label.id for label in result.labels}
    if positive is not None and positive.id not in decided and positive.id in classes:
        risky = top_effects(pieces, drops, list(classes).index(positive.id), k=1, min_drop=RISK_MIN_RISE)
        if risky:
            sentences.append(f"需留意：{_quotes(risky)}一句使「{positive.zh}」的概率上升最多，建议人工复核。")
            spans += [EvidenceSpan(quote=e.clause.text, start=e.clause.start, end=e.clause.end, label=positive.id,
                                   weight=round(e.drop, 4)) for e in risky]
    sentences.append("（依据是分类器对字面用词的逐句归因，不是临床推理。）")
    result.explanation = "".join(sentences)
    result.evidence = sorted(spans, key=lambda s: (s.start, s.label or ""))
