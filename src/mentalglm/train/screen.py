"""The screen: does a post show anything the task is about? A gate in front of the task's own classifier.

The clinical sets hold only people already in distress, so their classifiers give every ordinary post a label
(67 % of ordinary Weibo posts called high suicide risk; a distortion on 100 % of them). The gate is trained on
the task's posts ("flag") against posts of people who are not in that population ("clear": ordinary Weibo
posts, CogDis's undistorted sentences, invented hard negatives), declared per task in its YAML ``screen``.

It averages char TF-IDF with frozen sentence encoders (e5, and USE when it earns its place; train/embedding.py),
with the weights chosen on validation, and clears a post when P(flag) is under a threshold set on validation so
that at most ``max_negative_flagged`` of the negative validation posts are flagged. A cascade keeps the stream fast:
a post whose TF-IDF P(flag) is below ``read_embedding_from`` (set under 98 % of the positive validation posts), or
so low that even encoder P(flag)s of 1 could not lift the average to the threshold, is cleared without the encoder
reads (the second rule changes no decision).

A task may declare ``also_flag``: a second reader of the same two kinds learns that label's posts against everything
else, and a post either reader flags is flagged. Why: the suicide gate learns "written in a suicide tree hole", which
is mostly the forum's everyday chatter, and scores an explicit plan in plain wording only middling. The budget is
shared: the share left to the gate and the second reader's threshold are chosen on validation so that the union
still flags at most ``max_negative_flagged`` of the negatives. Measured for suicide risk (``also_flag: high``) and
not adopted: validation high-risk recall 77 % -> 90 % at the same 0.5 %, invented plans missed 17.5 % -> 1.2 %,
but ordinary posts of a set never trained on put at high risk 0.2 % -> 1.1 % (results/screening/second-reader.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mentalglm.files import OwnPickle
from mentalglm.train.classical import Classifier, TfidfClassifier, decide, tfidf_part
from mentalglm.train.embedding import EmbeddingCache, EmbeddingClassifier, default_cache_path, embed

CLEAR, FLAG = "clear", "flag"
ENCODER_NAMES = {"e5": "e5-small", "use": "USE-multilingual"}
NO_LABEL = "none"  # the confidence key of "nothing evident" for a task without a none label (multi-label tasks)
WEIGHT_GRID = tuple(round(w, 2) for w in np.arange(0.0, 1.001, 0.1))
# The cascade reads e5 from half the TF-IDF P(flag) of the 2nd-percentile positive validation post: the lowest one
# alone (cognitive distortion: 0.017) sent 88 % of ordinary posts through e5, 29 posts/s for the three tasks.
CASCADE_QUANTILE, CASCADE_MARGIN = 0.02, 0.5
# Shares of the false-flag budget tried for the gate when a second reader takes the rest.
GATE_SHARES = (0.6, 0.7, 0.8, 0.9)
# An encoder is kept only when it adds this much validation recall at the declared false-flag rate over the readers
# before it (e5 costs ~20 ms a post it reads); 5-fold CV of the suicide gate on SOS-HL: 90.2 % recall with e5 at
# weight 0.3, 89.0 % without
MIN_EMBEDDING_GAIN = 0.01


Weighted = tuple[EmbeddingClassifier, float]


@dataclass
class Reader:
    """Char TF-IDF averaged with frozen encoders (``weight`` on TF-IDF, ``further`` encoders with their weights, e5
    the rest): P(its positive class) of a post."""

    tfidf: TfidfClassifier  # classes [negative, positive]
    embedding: EmbeddingClassifier | None  # the first encoder kept (e5, unless only a later one earned its place)
    weight: float
    read_embedding_from: float = 0.0  # TF-IDF P under which no encoder is read (the cascade)
    further: tuple[Weighted, ...] = ()

    def encoders(self) -> list[Weighted]:
        """Each encoder reader with its weight in the average (e5 takes what TF-IDF and the others leave)."""
        out = [(c, w) for c, w in self.further if w > 0.0]
        if self.embedding is not None:
            out.insert(0, (self.embedding, 1.0 - self.weight - sum(w for _, w in out)))
        return out

    def floor(self, threshold: float) -> float:
        """TF-IDF P under which no encoder is read: the cascade's floor, or higher where even encoder Ps of 1 could
        not lift the average to ``threshold`` (skipping those posts changes no decision); above 1 without one."""
        if not self.encoders() or self.weight >= 1.0:
            return float("inf")
        if self.weight <= 0.0:
            return self.read_embedding_from
        return max(self.read_embedding_from, (threshold - (1.0 - self.weight)) / self.weight)

    def tfidf_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.tfidf.predict_proba(list(texts))[:, 1] if texts else np.zeros(0)

    def average(self, p_tfidf: np.ndarray, texts: Sequence[str], read: np.ndarray) -> np.ndarray:
        """The average where ``read`` (indices) says to read the encoders; TF-IDF alone elsewhere."""
        out = p_tfidf.copy()
        readers = self.encoders()
        if readers and self.weight < 1.0 and len(read):
            chosen = [texts[i] for i in read]
            out[read] = self.weight * p_tfidf[read] + sum(w * c.predict_proba(chosen)[:, 1] for c, w in readers)
        return out


def _rescale(p: np.ndarray, source: float, target: float) -> np.ndarray:
    """Monotone piecewise-linear map of [0, 1] onto itself sending ``source`` to ``target``: the second reader's
    P(label) on the gate's scale, so that one threshold decides for both."""
    source = min(max(source, 1e-9), 1.0 - 1e-9)
    return np.where(p < source, p * target / source, target + (p - source) * (1.0 - target) / (1.0 - source))


@dataclass
class ScreenGate(OwnPickle):
    tfidf: TfidfClassifier  # classes [CLEAR, FLAG]
    embedding: EmbeddingClassifier | None
    weight: float  # on TF-IDF
    threshold: float  # flag when P(flag) >= threshold
    read_embedding_from: float = 0.0
    also: Reader | None = None  # the second reader of the task's ``also_flag`` label (None for gates saved before)
    also_threshold: float = 1.0  # the second reader flags when its P >= this
    further: tuple[Weighted, ...] = ()  # encoders after e5 with their weights (none for gates saved before)

    @property
    def embedding_floor(self) -> float:
        """TF-IDF P(flag) under which no encoder is read (``Reader.floor`` at the gate's threshold)."""
        return self.reader.floor(self.threshold)

    @property
    def reader(self) -> Reader:
        return Reader(self.tfidf, self.embedding, self.weight, self.read_embedding_from, self.further)

    def flag_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(flag) for each post; a post cleared without the encoder reads keeps its TF-IDF P(flag). With a second
        reader: the larger of the gate's P(flag) and the second reader's P on the gate's scale."""
        texts = list(texts)
        p = self.tfidf.predict_proba(texts)[:, 1] if texts else np.zeros(0)
        read = p >= self.embedding_floor
        if self.also is None:
            return self.reader.average(p, texts, np.flatnonzero(read))
        q = self.also.tfidf_proba(texts)
        read_also = q >= self.also.floor(self.also_threshold)
        either = np.flatnonzero(read | read_also)  # encoders read a post once (embed() keeps recent vectors)
        gate = self.reader.average(p, texts, either)
        also = _rescale(self.also.average(q, texts, either), self.also_threshold, self.threshold)
        return np.maximum(gate, also)

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
        """The classifier behind the gate reads only the posts the gate flags; a cleared post's P(label | flag)
        comes from its TF-IDF part (the same model when there is no other), so a stream of ordinary posts never
        pays for the encoders of an averaged classifier (analyze/frozen.py)."""
        texts = list(texts)
        flag = self.gate.flag_proba(texts)
        inner = np.zeros((len(texts), len(self.inner.classes)))
        flagged = flag >= self.gate.threshold
        for rows, reader in ((np.flatnonzero(flagged), self.inner), (np.flatnonzero(~flagged), self.cleared_reader)):
            if len(rows):
                inner[rows] = reader.predict_proba([texts[i] for i in rows])
        return np.column_stack([inner * flag[:, None], 1.0 - flag])

    @property
    def cleared_reader(self) -> Classifier:
        return tfidf_part(self.inner) or self.inner

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


def _reader_probabilities(name: str, positive: Sequence[str], negative: Sequence[str], validation_texts: Sequence[str],
                          encoders: Sequence[str], C: float, log: Any, classes: tuple[str, str],
                          ) -> tuple[TfidfClassifier, np.ndarray, dict[str, tuple[EmbeddingClassifier, np.ndarray]]]:
    """Char TF-IDF and each encoder's reader fitted on ``positive`` against ``negative``, with P(positive) on
    validation."""
    texts = [*positive, *negative]
    y = np.array([1] * len(positive) + [0] * len(negative))
    tfidf = TfidfClassifier(name, list(classes), multi_label=False, C=C).fit(
        texts, [(classes[1],) if v else (classes[0],) for v in y])
    p_tfidf = tfidf.predict_proba(list(validation_texts))[:, 1]
    readers: dict[str, tuple[EmbeddingClassifier, np.ndarray]] = {}
    for kind in encoders:
        log(f"{name}: embeds {len(texts)} training and {len(validation_texts)} validation posts with {kind}")
        cache = EmbeddingCache(default_cache_path(kind))
        reader = EmbeddingClassifier(list(classes), C=C, encoder=kind).fit_embeddings(
            embed(texts, progress=True, cache=cache, encoder_name=kind), y)
        readers[kind] = (reader, reader.proba_from_embeddings(
            embed(list(validation_texts), progress=True, cache=cache, encoder_name=kind))[:, 1])
    return tfidf, p_tfidf, readers


def weightings(count: int) -> list[tuple[float, ...]]:
    """Weights on TF-IDF and ``count`` encoders in tenths summing to one, TF-IDF's first."""
    tenths = [c for c in itertools.product(range(11), repeat=count + 1) if sum(c) == 10]
    return [tuple(round(t / 10, 1) for t in c) for c in tenths]


def _choose_weights(p_tfidf: np.ndarray, encoded: dict[str, np.ndarray], gold: np.ndarray, max_flagged: float,
                    ) -> tuple[tuple[float, ...], dict[str, dict[str, float]], list[str]]:
    """Encoders in order, each kept only when it adds MIN_EMBEDDING_GAIN of validation recall at the allowed
    false-flag rate over the readers kept before it; ties go to more weight on the earlier (cheaper) readers.
    Returns the chosen weights (TF-IDF first, then each kept encoder), every weighting tried, the kept encoders."""
    tried: dict[str, dict[str, float]] = {}

    def measure(kinds: list[str], weights: tuple[float, ...]) -> dict[str, float]:
        p = weights[0] * p_tfidf + sum(w * encoded[k] for k, w in zip(kinds, weights[1:], strict=True))
        threshold = threshold_for(p[~gold], max_flagged)
        result = {"threshold": threshold, "recall": float((p[gold] >= threshold).mean()),
                  "negatives_flagged": float((p[~gold] >= threshold).mean())}
        tried[", ".join(f"{k} {w}" for k, w in zip(["tfidf", *kinds], weights, strict=True))] = result
        return result

    kept: list[str] = []
    best, best_recall = (1.0,), measure([], (1.0,))["recall"]
    for kind in encoded:
        kinds = [*kept, kind]
        scored = [(round(measure(kinds, w)["recall"], 4), w) for w in weightings(len(kinds)) if w[-1] > 0.0]
        recall, weights = max(scored, key=lambda r: (r[0], r[1]))
        if recall - best_recall >= MIN_EMBEDDING_GAIN:
            kept, best, best_recall = kinds, weights, recall
    return best, tried, kept


def _cascade_floor(p_tfidf: np.ndarray, positives: np.ndarray) -> float:
    return float(np.quantile(p_tfidf[positives], CASCADE_QUANTILE)) * CASCADE_MARGIN if positives.any() else 0.0


def _union_threshold(gate: np.ndarray, also: np.ndarray, negatives: np.ndarray, gate_threshold: float,
                     max_flagged: float) -> float:
    """The lowest threshold of the second reader at which gate-or-reader flags at most ``max_flagged`` of the
    negatives (1.0 + eps, flagging nothing, when the gate alone uses the whole budget)."""
    allowed = int(np.floor(max_flagged * int(negatives.sum())))
    by_gate = gate[negatives] >= gate_threshold
    candidates = np.sort(also[negatives][~by_gate])[::-1]  # negatives the gate does not flag, most likely first
    room = allowed - int(by_gate.sum())
    if room < 0 or not len(candidates):
        return float(np.nextafter(1.0, 2.0))
    above = candidates[room] if room < len(candidates) else 0.0
    return float(np.nextafter(above, 1.0))


def fit_gate(flag_texts: Sequence[str], clear_texts: Sequence[str], validation_texts: Sequence[str],
             validation_flag: Sequence[bool], max_negative_flagged: float, *, name: str,
             use_embedding: bool = True, C: float = 4.0, log: Any = print,
             also: tuple[str, Sequence[str], Sequence[str], Sequence[bool]] | None = None,
             encoders: Sequence[str] = ("e5",)) -> tuple[ScreenGate, dict[str, Any]]:
    """Fit char TF-IDF and the encoders' readers, choose their weights by validation recall at the allowed
    false-flag rate (``_choose_weights``); ``use_embedding=False`` fits TF-IDF alone.

    ``also`` = (label, its training posts, every other training post, which validation posts carry it): the
    second reader (module docstring), kept only when it adds MIN_EMBEDDING_GAIN of validation recall of either
    kind (flagged posts, or posts with the label) without losing any of the other.
    """
    gold = np.asarray(validation_flag, dtype=bool)
    tfidf, p_tfidf, readers = _reader_probabilities(f"{name}.screen", flag_texts, clear_texts, validation_texts,
                                                    encoders if use_embedding else (), C, log, (CLEAR, FLAG))
    weights, tried, kept = _choose_weights(p_tfidf, {k: p for k, (_, p) in readers.items()}, gold,
                                           max_negative_flagged)
    chosen = dict(zip(["tfidf", *kept], weights, strict=True))
    first = readers[kept[0]][0] if kept else None
    further = tuple((readers[k][0], chosen[k]) for k in kept[1:])
    p_chosen = chosen["tfidf"] * p_tfidf + sum(chosen[k] * readers[k][1] for k in kept)
    gate = ScreenGate(tfidf, first, chosen["tfidf"], threshold_for(p_chosen[~gold], max_negative_flagged),
                      read_embedding_from=_cascade_floor(p_tfidf, gold) if kept else 0.0, further=further)
    also_record = None
    if also is not None:
        gate, also_record = _fit_also(gate, also, p_chosen, validation_texts, gold, max_negative_flagged,
                                      use_embedding, C, name, log)
    cascaded = gate.flag_proba(list(validation_texts)) >= gate.threshold
    skipped = float((p_tfidf[~gold] < gate.embedding_floor).mean()) if kept else 1.0
    record = {
        "kind": "char TF-IDF (1-3) + LR" + "".join(f" averaged with frozen {ENCODER_NAMES[k]} + LR" for k in kept)
                + (f", or a second such reader of {also[0]}" if gate.also is not None and also else ""),
        "train_posts": {"flag": len(flag_texts), "clear": len(clear_texts)},
        "validation_posts": {"flag": int(gold.sum()), "clear": int((~gold).sum())},
        "max_negative_flagged": max_negative_flagged, "weight_on_tfidf": chosen["tfidf"],
        "weights": chosen, "encoders_tried": list(readers),
        "threshold": round(gate.threshold, 6), "read_embedding_from": round(gate.read_embedding_from, 6),
        "validation_negatives_cleared_without_e5": round(skipped, 4),
        "validation_with_cascade": {"recall": round(float(cascaded[gold].mean()), 4) if gold.any() else None,
                                    "negatives_flagged": round(float(cascaded[~gold].mean()), 4)},
        "validation_by_weight": {w: {k: round(v, 4) for k, v in r.items()} for w, r in tried.items()},
    }
    if also_record is not None:
        record["also_flag"] = also_record
    return gate, record


def _fit_also(gate: ScreenGate, also: tuple[str, Sequence[str], Sequence[str], Sequence[bool]], p_gate: np.ndarray,
              validation_texts: Sequence[str], gold: np.ndarray, max_flagged: float, use_embedding: bool, C: float,
              name: str, log: Any) -> tuple[ScreenGate, dict[str, Any]]:
    """The second reader, its weight and the gate's share of the budget, by validation recall of the label's
    posts, then of all flagged posts; the gate as it was when no choice beats it on both."""
    label, positive, negative, carries = also
    has_label = np.asarray(carries, dtype=bool)
    tfidf, q_tfidf, readers = _reader_probabilities(f"{name}.screen.{label}", positive, negative, validation_texts,
                                                    ("e5",) if use_embedding else (), C, log, (f"not_{label}", label))
    embedding, q_embed = readers.get("e5", (None, None))
    negatives = ~gold

    def measured(flagged: np.ndarray) -> dict[str, float]:
        return {"recall": round(float(flagged[gold].mean()), 4),
                f"recall_{label}": round(float(flagged[has_label].mean()), 4) if has_label.any() else 0.0,
                "negatives_flagged": round(float(flagged[negatives].mean()), 4)}

    alone = measured(p_gate >= gate.threshold)
    options: list[tuple[tuple[float, float], dict[str, Any]]] = []
    for weight in WEIGHT_GRID if q_embed is not None else (1.0,):
        q = q_tfidf if q_embed is None else weight * q_tfidf + (1 - weight) * q_embed
        for share in GATE_SHARES:
            gate_threshold = threshold_for(p_gate[negatives], share * max_flagged)
            also_threshold = _union_threshold(p_gate, q, negatives, gate_threshold, max_flagged)
            result = measured((p_gate >= gate_threshold) | (q >= also_threshold))
            options.append(((result[f"recall_{label}"], result["recall"]),
                            {"weight_on_tfidf": weight, "gate_share": share, "gate_threshold": gate_threshold,
                             "threshold": also_threshold, **result}))
    _, best = max(options, key=lambda o: (o[0], o[1]["weight_on_tfidf"]))
    gain = (best[f"recall_{label}"] - alone[f"recall_{label}"], best["recall"] - alone["recall"])
    kept = max(gain) >= MIN_EMBEDDING_GAIN and min(gain) >= 0.0
    record = {"label": label, "kept": kept, "train_posts": {label: len(positive), "other": len(negative)},
              "validation_gate_alone": alone, "chosen": {k: (round(v, 6) if isinstance(v, float) else v)
                                                         for k, v in best.items()}}
    log(f"{name}: second reader of {label}: validation recall of {label} {alone[f'recall_{label}']:.1%} -> "
        f"{best[f'recall_{label}']:.1%}, of all flagged {alone['recall']:.1%} -> {best['recall']:.1%} "
        f"({'kept' if kept else 'not kept'})")
    if not kept:
        return gate, record
    w = best["weight_on_tfidf"]
    reader = Reader(tfidf, embedding if w < 1.0 else None, w,
                    _cascade_floor(q_tfidf, has_label) if w < 1.0 else 0.0)
    return replace(gate, threshold=best["gate_threshold"], also=reader, also_threshold=best["threshold"]), record


__all__ = ["CLEAR", "FLAG", "NO_LABEL", "Classifier", "GatedClassifier", "Reader", "ScreenGate", "decide", "fit_gate",
           "threshold_for", "weightings"]
