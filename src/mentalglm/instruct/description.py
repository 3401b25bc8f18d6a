"""QC's second reader of explanations: which label's description an explanation's prose matches.

Why: the verifier is a classifier trained on posts (train/classical.py ``TfidfVerifier``). Posts never say "以偏概全"
or "把一次失败推及所有事情", so on cognitive distortion it reads an explanation's prose as the commonest label of
the posts (乱贴标签, 58 % of SocialCD-3K) and let through only 34.7 % of explanations written for their label
(benchmarks/verifier_judge_invented.py). This reader needs no data: it looks in what the explanation asserts for each
label's declared cues (``cues_zh``, tasks/*.yaml; ties broken by character similarity with ``definition_zh``), as a
clinician reading the explanation would, and answers the one label it matches best.

A task takes part by declaring ``cues_zh`` on its labels. It reads the explanation's own words only: not the verdict
(判断为「…」, in any brackets), not the quotation of the post (the verifier reads that), and not any label's names or
synonyms — an explanation that only says "这是典型的应该式思维" argues nothing, and the reader must recover the label
from the argument, not from the label the writer was given. A label is read only where one of its cues is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

from mentalglm.instruct.grounding import QUOTES, STATES
from mentalglm.tasks.schema import Label, Task

# The score of a label: its matched cues, plus the cosine similarity (0-1) of the reading's characters with its
# definition, which only breaks ties between labels with as many cues (it is 0.1-0.2 for unrelated prose).
# quotations and verdicts in any brackets, and the words the grounded layout writes around them
_NOT_ARGUMENT = re.compile(f"[“\"「『【《‘][^”\"」』】》’]*[”\"」』】》’]|{STATES}|{QUOTES}")


def takes_part(task: Task) -> bool:
    return any(label.cues_zh for label in task.labels)


@cache
def _model(labels: tuple[Label, ...]) -> tuple[list[str], Any, Any, list[list[re.Pattern[str]]]]:
    """The labels' ids, a character TF-IDF fitted on their descriptions, the descriptions' vectors and cues."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    descriptions = [label.definition_zh for label in labels]
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2)).fit(descriptions)
    cues = [[re.compile(p) for p in label.cues_zh] for label in labels]
    return [label.id for label in labels], vectorizer, vectorizer.transform(descriptions), cues


@cache
def _names(labels: tuple[Label, ...]) -> re.Pattern[str]:
    """Every label's names and synonyms, longest first (乱贴标签 before 标签)."""
    forms = sorted({f for label in labels for f in label.surface_forms if len(f) > 1}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, forms)))


def by_description(task: Task, readings: Sequence[str]) -> list[tuple[str, ...] | None]:
    """The label each reading (what an explanation asserts: qc.verifier_reading) describes best, or None where none
    of the labels' cues is in the explanation's own words."""
    if not takes_part(task) or not readings:
        return [None] * len(readings)
    ids, vectorizer, descriptions, cues = _model(tuple(
        label for label in task.labels if label.id in task.classifier_labels))
    names = _names(task.labels)
    texts = [names.sub(" ", _NOT_ARGUMENT.sub(" ", reading)) for reading in readings]
    similarity = (vectorizer.transform(texts) @ descriptions.T).toarray()
    hits = np.array([[sum(bool(p.search(text)) for p in patterns) for patterns in cues] for text in texts])
    score = hits + similarity
    best = score.argmax(axis=1)
    return [(ids[int(b)],) if row_hits[b] > 0 else None for b, row_hits in zip(best, hits, strict=True)]
