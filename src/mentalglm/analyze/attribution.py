"""Explanations read off the classifier itself: which clauses of the post its decision rests on.

The ``attribution`` engine explains without an LLM. The post is cut into clauses (at punctuation and line
breaks); each clause is removed in turn and the classifier reads the rest (occlusion, also called erasure or
leave-one-out). A clause whose removal lowers the decided label's probability most is evidence *the model
used*: the explanation is faithful to the decision by construction, unlike an LLM's after-the-fact
justification, and it costs one extra classifier call per clause (milliseconds), not an LLM generation.

What it is not: clinical reasoning. It reports the wording that moved a surface-level statistical model;
the explanation says so. For a task with a positive class (suicide risk), a post decided negative still names
the clause that raises the positive class most, so the wording a reviewer should look at is never hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mentalglm.analyze.schema import EvidenceSpan, TaskResult
from mentalglm.instruct.grounding import Clause, clauses, quotable_part
from mentalglm.tasks import Task

MIN_DROP = 0.02  # a clause counts as evidence when removing it lowers the label's probability by this much
RISK_MIN_RISE = 0.01  # a post decided negative names the clause raising the positive class by at least this
TOP_K = 3
METHOD = "clause occlusion on the classifier"


@dataclass(frozen=True)
class ClauseEffect:
    """How much the label's probability falls when this clause is removed (negative: it rises)."""

    clause: Clause
    drop: float


def without(text: str, clause: Clause) -> str:
    return text[:clause.start] + text[clause.end:]


# Per post: its clauses and a (clauses x labels) matrix of probability drops when each clause is removed.
Effects = list[tuple[list[Clause], np.ndarray]]


@dataclass(frozen=True)
class Occlusions:
    """Posts cut into clauses, with the classifier input of each post and of each post less one clause.

    Built once per batch: every task's classifier then reads the same texts (``effects``), so the input
    pipeline (injection stripping, spelling normalisation) runs once per variant, not once per task.
    """

    clauses: list[list[Clause]]
    texts: list[str]  # per post: the whole post, then the post without each of its clauses

    @classmethod
    def of(cls, posts: Sequence[str], prepare: Callable[[str], str]) -> Occlusions:
        """``prepare`` is the input pipeline the classifier reads, so a clause is judged as the decision was made."""
        cut = [clauses(post) for post in posts]
        texts: list[str] = []
        for post, pieces in zip(posts, cut, strict=True):
            texts.append(prepare(post))
            texts.extend(prepare(without(post, clause)) for clause in pieces)
        return cls(cut, texts)

    def effects(self, predict_proba: Callable[[Sequence[str]], np.ndarray]) -> Effects:
        """One batched classifier call for every post and every variant."""
        proba = predict_proba(self.texts) if self.texts else np.zeros((0, 0))
        out, row = [], 0
        for pieces in self.clauses:
            occluded = proba[row + 1: row + 1 + len(pieces)]
            out.append((pieces, proba[row][None, :] - occluded if pieces else np.zeros((0, proba.shape[1]))))
            row += 1 + len(pieces)
        return out


def top_effects(pieces: Sequence[Clause], drops: np.ndarray, column: int, k: int = TOP_K,
                min_drop: float = MIN_DROP) -> list[ClauseEffect]:
    """The clauses that support a label most (largest drop first), at most ``k``, each at least ``min_drop``."""
    if not len(pieces):
        return []
    order = np.argsort(-drops[:, column], kind="stable")
    return [ClauseEffect(pieces[i], float(drops[i, column])) for i in order[:k] if drops[i, column] >= min_drop]


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
