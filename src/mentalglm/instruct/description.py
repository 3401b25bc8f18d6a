"""QC's second reader of explanations: which label's description an explanation's prose matches.

Why: the verifier is a classifier trained on posts (train/classical.py ``TfidfVerifier``). Posts never say "以偏概全"
or "把一次失败推及所有事情", so on cognitive distortion it reads an explanation's prose as the commonest label of
the posts (乱贴标签, 58 % of SocialCD-3K) and let through only 34.7 % of explanations written for their label
(benchmarks/verifier_judge_invented.py). This reader needs no data: it compares what the explanation asserts with
each label's declared description (its names, ``definition_zh`` and ``cues_zh``, tasks/*.yaml), as a clinician
reading the explanation would, and answers the one label it matches best (nothing for an empty reading).

A task takes part by declaring ``cues_zh`` on its labels. The stated verdict (判断为「…」) is not read: the reader
must recover the label from the argument, not from the label the writer was given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

from mentalglm.instruct.grounding import QUOTES, STATES
from mentalglm.tasks.schema import Label, Task

# Each matched cue adds this to the cosine similarity (0-1) of the reading's characters with the label's description:
# a few cues outweigh a shared vocabulary of common characters, and the similarity decides where no cue matches.
CUE_WEIGHT = 0.1
_LETTER = re.compile(r"[A-Za-z\u4e00-\u9fff]")
# the verdicts in corner brackets and the words the grounded layout writes around them and the quote
_NOT_ARGUMENT = re.compile(f"「[^」]*」|{STATES}|{QUOTES}")


def takes_part(task: Task) -> bool:
    return any(label.cues_zh for label in task.labels)


@cache
def _model(labels: tuple[Label, ...]) -> tuple[list[str], Any, Any, list[list[re.Pattern[str]]]]:
    """The labels' ids, a character TF-IDF fitted on their descriptions, the descriptions' vectors and cues."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    descriptions = [f"{label.zh} {' '.join(label.synonyms)}：{label.definition_zh}" for label in labels]
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2)).fit(descriptions)
    cues = [[re.compile(p) for p in label.cues_zh] for label in labels]
    return [label.id for label in labels], vectorizer, vectorizer.transform(descriptions), cues


def by_description(task: Task, readings: Sequence[str]) -> list[tuple[str, ...] | None]:
    """The label each reading (what an explanation asserts: qc.verifier_reading) describes best, None for a reading
    with nothing left once the verdicts in corner brackets and the layout's own words are taken out."""
    if not takes_part(task) or not readings:
        return [None] * len(readings)
    ids, vectorizer, descriptions, cues = _model(tuple(
        label for label in task.labels if label.id in task.classifier_labels))
    texts = [_NOT_ARGUMENT.sub("", reading) for reading in readings]
    similarity = (vectorizer.transform(texts) @ descriptions.T).toarray()
    hits = np.array([[sum(bool(p.search(text)) for p in patterns) for patterns in cues] for text in texts])
    score = similarity + CUE_WEIGHT * hits
    return [(ids[int(row.argmax())],) if _LETTER.search(text) and row.max() > 0 else None
            for text, row in zip(texts, score, strict=True)]
