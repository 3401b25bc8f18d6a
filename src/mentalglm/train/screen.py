"""The screen: does a post show anything the task is about? A gate in front of the task's own classifier.

The clinical sets hold only people already in distress, so their classifiers give every ordinary post a label
(67 % of ordinary Weibo posts called high suicide risk; a distortion on 100 % of them). The gate is trained on
the task's posts ("flag") against posts of people who are not in that population ("clear": ordinary Weibo
posts, CogDis's undistorted sentences, invented hard negatives), declared per task in its YAML ``screen``.

It averages char TF-IDF and frozen e5 (train/embedding.py), with the weight chosen on validation, and clears a
post when P(flag) is under a threshold set on validation so that at most ``max_negative_flagged`` of the negative
validation posts are flagged. A cascade keeps the stream fast: a post whose TF-IDF P(flag) is below
``read_embedding_from`` (set under 98 % of the positive validation posts), or so low that even an e5 P(flag) of 1
could not lift the average to the threshold, is cleared without the e5 read (the second rule changes no decision).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mentalglm.files import OwnPickle
from mentalglm.train.classical import Classifier, TfidfClassifier, decide, tfidf_part
from mentalglm.train.embedding import EmbeddingCache, EmbeddingClassifier, default_cache_path, embed

CLEAR, FLAG = "clear", "flag"
NO_LABEL = "none"  # the confidence key of "nothing evident" for a task without a none label (multi-label tasks)
WEIGHT_GRID = tuple(round(w, 2) for w in np.arange(0.0, 1.001, 0.1))
# The cascade reads e5 from half the TF-IDF P(flag) of the 2nd-percentile positive validation post: the lowest one
# alone (cognitive distortion: 0.017) sent 88 % of ordinary posts through e5, 29 posts/s for the three tasks.
CASCADE_QUANTILE, CASCADE_MARGIN = 0.02, 0.5
# e5 is kept only when it adds this much validation recall at the declared false-flag rate (it costs ~20 ms a post
# it reads); 5-fold CV of the suicide gate on SOS-HL: 90.2 % recall with e5 at weight 0.3, 89.0 % without
MIN_EMBEDDING_GAIN = 0.01


@dataclass
class ScreenGate(OwnPickle):
    tfidf: TfidfClassifier  # classes [CLEAR, FLAG]
    embedding: EmbeddingClassifier | None
    weight: float  # on TF-IDF
    threshold: float  # flag when P(flag) >= threshold
    read_embedding_from: float = 0.0


    @property
    def embedding_floor(self) -> float:
        """TF-IDF P(flag) under which e5 is not read: the cascade's floor, or higher where even an e5 P(flag)
        of 1 could not lift the average to the threshold (skipping those posts changes no decision)."""
        if self.weight <= 0.0:
            return self.read_embedding_from
        return max(self.read_embedding_from, (self.threshold - (1.0 - self.weight)) / self.weight)

    def flag_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(flag) for each post; a post cleared without the e5 read keeps its TF-IDF P(flag)."""
        texts = list(texts)
        p = self.tfidf.predict_proba(texts)[:, 1] if texts else np.zeros(0)
        if self.embedding is None or self.weight >= 1.0 or not texts:
            return p
        read = np.flatnonzero(p >= self.embedding_floor)
        out = p.copy()
        if len(read):
            e = self.embedding.predict_proba([texts[i] for i in read])[:, 1]
            out[read] = self.weight * p[read] + (1.0 - self.weight) * e
        return out


@dataclass
class GatedClassifier:
    """The gate, then the task's classifier on flagged posts. Probabilities: ``P(flag) * P(label | flag)`` per
    label and ``1 - P(flag)`` in a last column named ``none_label`` (or NO_LABEL), so they still sum to one for a
    single-label task whose none label is one of its labels."""

    gate: ScreenGate
    inner: Classifier
    none_label: str | None = None

    @property
    def classes(self) -> list[str]:
        return [*self.inner.classes, self.none_label or NO_LABEL]

    @property
    def multi_label(self) -> bool:
        return self.inner.multi_label

    @property
    def tfidf(self) -> TfidfClassifier | None:
        """The TF-IDF model of the classifier behind the screen (the gate's own reads another question)."""
        return tfidf_part(self.inner)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        flag = self.gate.flag_proba(texts)
        inner = self.inner.predict_proba(texts) if texts else np.zeros((0, len(self.inner.classes)))
        return np.column_stack([inner * flag[:, None], 1.0 - flag])

    def decide(self, proba: np.ndarray) -> list[tuple[str, ...]]:
        proba = np.asarray(proba)
        flag = 1.0 - proba[:, -1]
        conditional = proba[:, :-1] / np.maximum(flag, 1e-9)[:, None]
        inner = self.inner.decide(conditional) if len(proba) else []
        cleared = () if self.none_label is None else (self.none_label,)
        return [labels if f >= self.gate.threshold else cleared for labels, f in zip(inner, flag, strict=True)]

    def predict(self, texts: Sequence[str]) -> list[tuple[str, ...]]:
        return self.decide(self.predict_proba(texts))


def threshold_for(negatives: np.ndarray, max_flagged: float) -> float:
    """The lowest threshold that flags at most ``max_flagged`` of ``negatives`` (P(flag) >= threshold flags)."""
    ordered = np.sort(negatives)[::-1]
    allowed = int(np.floor(max_flagged * len(ordered)))
    above = ordered[allowed] if allowed < len(ordered) else 0.0
    return float(np.nextafter(above, 1.0))


def fit_gate(flag_texts: Sequence[str], clear_texts: Sequence[str], validation_texts: Sequence[str],
             validation_flag: Sequence[bool], max_negative_flagged: float, *, name: str,
             use_embedding: bool = True, C: float = 4.0, log: Any = print) -> tuple[ScreenGate, dict[str, Any]]:
    """Fit both readers, choose the TF-IDF weight by validation recall at the allowed false-flag rate."""
    texts = [*flag_texts, *clear_texts]
    y = np.array([1] * len(flag_texts) + [0] * len(clear_texts))
    tfidf = TfidfClassifier(f"{name}.screen", [CLEAR, FLAG], multi_label=False, C=C).fit(
        texts, [(FLAG,) if v else (CLEAR,) for v in y])
    gold = np.asarray(validation_flag, dtype=bool)
    p_tfidf = tfidf.predict_proba(list(validation_texts))[:, 1]
    embedding, p_embed = None, None
    if use_embedding:
        log(f"{name}: screen embeds {len(texts)} training and {len(validation_texts)} validation posts with e5")
        cache = EmbeddingCache(default_cache_path())
        embedding = EmbeddingClassifier([CLEAR, FLAG], C=C).fit_embeddings(embed(texts, progress=True, cache=cache), y)
        p_embed = embedding.proba_from_embeddings(embed(list(validation_texts), progress=True, cache=cache))[:, 1]
    tried: dict[float, dict[str, float]] = {}
    for weight in WEIGHT_GRID if p_embed is not None else (1.0,):
        p = p_tfidf if p_embed is None else weight * p_tfidf + (1 - weight) * p_embed
        threshold = threshold_for(p[~gold], max_negative_flagged)
        tried[weight] = {"threshold": threshold, "recall": float((p[gold] >= threshold).mean()),
                         "negatives_flagged": float((p[~gold] >= threshold).mean())}
    weight = max(tried, key=lambda w: (round(tried[w]["recall"], 4), w))  # ties: the cheaper, more TF-IDF
    if tried[weight]["recall"] - tried[1.0]["recall"] < MIN_EMBEDDING_GAIN:
        weight = 1.0
    low_positive = float(np.quantile(p_tfidf[gold], CASCADE_QUANTILE)) if gold.any() else 0.0
    gate = ScreenGate(tfidf, embedding if weight < 1.0 else None, weight, tried[weight]["threshold"],
                      read_embedding_from=low_positive * CASCADE_MARGIN if weight < 1.0 else 0.0)
    cascaded = gate.flag_proba(list(validation_texts)) >= gate.threshold
    skipped = float((p_tfidf[~gold] < gate.embedding_floor).mean()) if gate.embedding is not None else 1.0
    record = {
        "kind": "char TF-IDF (1-3) + LR" + (" averaged with frozen e5-small + LR" if gate.embedding else ""),
        "train_posts": {"flag": len(flag_texts), "clear": len(clear_texts)},
        "validation_posts": {"flag": int(gold.sum()), "clear": int((~gold).sum())},
        "max_negative_flagged": max_negative_flagged, "weight_on_tfidf": weight,
        "threshold": round(gate.threshold, 6), "read_embedding_from": round(gate.read_embedding_from, 6),
        "validation_negatives_cleared_without_e5": round(skipped, 4),
        "validation_with_cascade": {"recall": round(float(cascaded[gold].mean()), 4) if gold.any() else None,
                                    "negatives_flagged": round(float(cascaded[~gold].mean()), 4)},
        "validation_by_weight": {str(w): {k: round(v, 4) for k, v in r.items()} for w, r in tried.items()},
    }
    return gate, record


__all__ = ["CLEAR", "FLAG", "NO_LABEL", "Classifier", "GatedClassifier", "ScreenGate", "decide", "fit_gate",
           "threshold_for"]
