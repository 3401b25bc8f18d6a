"""Does a post resemble the posts a task's classifier was trained on? A warning, never a changed decision.

Used by forum-only tasks without a screen (suicide_level). The measurements below were made for suicide_risk
before it got its screen (analyze/screened.py), with the since-removed benchmarks/domain_check.py.

The suicide-risk sets all come from one suicide "tree hole" forum, so the risk classifier has never seen an
ordinary post: it decides *high* for 44 % of ordinary Weibo posts (TF-IDF default) and 81 % (accurate tier),
often with high confidence. A second TF-IDF classifier, trained to tell the task's own training posts from
ordinary Weibo posts, says how much a post resembles the training domain; below ``OUTSIDE_BELOW`` the result
carries ``outside_training_domain`` and a notice to read the post.

Why a warning and not a gate that sets such posts to low risk (benchmarks/domain_check.py, validation splits and
invented posts; docs/analyze.md): a gate left the SOS-HL validation decisions unchanged and cut high-risk decisions
on ordinary SMP2020 posts from 44 % to 1.2 %, but it also silenced 6 (TF-IDF) and 10 (tier) of 84 invented posts written to
be high risk, those that state a plan in ordinary words ("把猫托付给朋友了……今晚就去做那件准备了很久的事":
similarity 0.02). A missed crisis costs more than a false alarm, so the decision and the crisis notice stay; the
user learns the model is outside what it knows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mentalglm.train.classical import TfidfClassifier

# 50k n-grams: benchmarks/domain_check.py gave the same outside rates as with 300k (within 0.4 points on every
# set), and the model is 2.2 MB instead of 9.9, so the default analyzer's memory and cold start barely move
MAX_FEATURES = 50_000
OUTSIDE_BELOW = 0.1  # P(in domain) under this: outside; 1 % of SOS-HL validation posts, 95-96 % of ordinary ones
IN_DOMAIN, ORDINARY = "in_domain", "ordinary"


@dataclass
class DomainCheck:
    """P(a post resembles the task's training posts) from char TF-IDF + logistic regression (balanced classes)."""

    classifier: TfidfClassifier
    threshold: float = OUTSIDE_BELOW

    @classmethod
    def fit(cls, task_id: str, in_domain: Sequence[str], ordinary: Sequence[str], *, C: float = 4.0,
            max_features: int = MAX_FEATURES, threshold: float = OUTSIDE_BELOW) -> DomainCheck:
        if not in_domain or not ordinary:
            raise ValueError("a domain check needs posts from the training domain and ordinary posts")
        classifier = TfidfClassifier(f"{task_id}.domain", [ORDINARY, IN_DOMAIN], multi_label=False, C=C,
                                     max_features=max_features)
        texts = [*in_domain, *ordinary]
        labels = [(IN_DOMAIN,)] * len(in_domain) + [(ORDINARY,)] * len(ordinary)
        return cls(classifier.fit(texts, labels), threshold)

    def similarity(self, texts: Sequence[str]) -> np.ndarray:
        """P(in domain) per post, read on the same classifier input the task's model reads."""
        if not texts:
            return np.zeros(0)
        return self.classifier.predict_proba(list(texts))[:, self.classifier.classes.index(IN_DOMAIN)]

    def outside(self, texts: Sequence[str]) -> np.ndarray:
        return self.similarity(texts) < self.threshold

    def outside_rate(self, texts: Sequence[str]) -> float:
        return round(float(self.outside(texts).mean()), 4) if texts else 0.0
