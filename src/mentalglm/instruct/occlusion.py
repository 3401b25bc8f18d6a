"""Clause occlusion: which clauses of a post a classifier's decision rests on.

The post is cut into clauses (at punctuation and line breaks); each clause is removed in turn and the classifier
reads the rest (occlusion, also called erasure or leave-one-out). A clause whose removal lowers a label's
probability most is evidence the model used. The analyzer's attribution explanations read it (analyze/attribution.py),
and so does the builder to offer the teacher the clauses worth quoting for the gold label (instruct/generate.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mentalglm.instruct.grounding import Clause, clauses

MIN_DROP = 0.02  # a clause counts as evidence when removing it lowers the label's probability by this much
TOP_K = 3


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


def supporting_clauses(pieces: Sequence[Clause], drops: np.ndarray, classes: Sequence[str],
                       labels: Sequence[str], per_label: int = 2) -> list[str]:
    """Up to ``TOP_K`` clauses supporting the given labels (``per_label`` each, at least ``MIN_DROP``), in post
    order: what a grounded explanation of those labels should quote. Each label's strongest clause comes first, so
    a label whose evidence sits late in the post keeps some when several labels share the budget."""
    ranked = [top_effects(pieces, drops, list(classes).index(label), k=per_label) for label in labels if label in classes]
    chosen: list[Clause] = []
    for rank in range(per_label):
        for effects in ranked:
            if rank < len(effects) and effects[rank].clause not in chosen and len(chosen) < TOP_K:
                chosen.append(effects[rank].clause)
    return [c.text for c in sorted(chosen, key=lambda c: c.start)]
