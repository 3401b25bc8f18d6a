"""Which frozen sentence encoders should a task's screen average with TF-IDF? Validation recall per combination.

Every reader is fitted as analyze-train fits the gate (train/screen.py) on the task's declared screen data and read
on the same validation posts; recall is measured at the declared false-flag rate. Besides each reader alone and the
weightings ``_choose_weights`` tries, two checks of the choice itself: the weights chosen on one random half of
validation and read on the other half (``--halvings`` times, with and without the last encoder), and one logistic
regression on the concatenated embeddings instead of an average of readers. Test splits and the benchmark's
hand-written sets are not read.

    python benchmarks/screen_encoders.py --data-dir ../shared/data --out results/screen-sources/encoders.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.analyze.screened import gate_inputs
from mentalglm.data.splits import canonical_splits, screen_data
from mentalglm.files import atomic_write_text
from mentalglm.tasks import get_task
from mentalglm.train.embedding import EmbeddingCache, default_cache_path, embed
from mentalglm.train.screen import CLEAR, FLAG, _choose_weights, _reader_probabilities, threshold_for


def _recall(p: np.ndarray, gold: np.ndarray, max_flagged: float) -> float:
    threshold = threshold_for(p[~gold], max_flagged)
    return round(float((p[gold] >= threshold).mean()), 4)


def _halvings(p_tfidf: np.ndarray, encoded: dict[str, np.ndarray], gold: np.ndarray, max_flagged: float,
              times: int, seed: int) -> dict[str, Any]:
    """Weights chosen on one half of validation, recall read on the other: all encoders against all but the last."""
    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(gold), np.flatnonzero(~gold)
    fewer = dict(list(encoded.items())[:-1])
    rows: dict[str, list[float]] = {"all": [], "without_last": []}
    for _ in range(times):
        pos, neg = rng.permutation(positives), rng.permutation(negatives)
        halves = [np.concatenate([pos[: len(pos) // 2], neg[: len(neg) // 2]]),
                  np.concatenate([pos[len(pos) // 2:], neg[len(neg) // 2:]])]
        for chosen_on, read_on in ((0, 1), (1, 0)):
            a, b = halves[chosen_on], halves[read_on]
            for name, readers in (("all", encoded), ("without_last", fewer)):
                weights, _, kept = _choose_weights(p_tfidf[a], {k: v[a] for k, v in readers.items()}, gold[a],
                                                   max_flagged)
                p = weights[0] * p_tfidf + sum(w * readers[k] for k, w in zip(kept, weights[1:], strict=True))
                threshold = threshold_for(p[a][~gold[a]], max_flagged)
                rows[name].append(float((p[b][gold[b]] >= threshold).mean()))
    gain = np.array(rows["all"]) - np.array(rows["without_last"])
    return {"pairs": len(gain), "recall_all": round(float(np.mean(rows["all"])), 4),
            "recall_without_last": round(float(np.mean(rows["without_last"])), 4),
            "gain_mean": round(float(gain.mean()), 4), "ahead": round(float((gain > 0).mean()), 3),
            "behind": round(float((gain < 0).mean()), 3)}


def measure(task_id: str, data_dir: str, encoders: list[str], halvings: int, seed: int) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    task = get_task(task_id)
    assert task.screen is not None
    splits, _ = canonical_splits(task.id, data_dir, include_extra=False)
    data = screen_data(task, data_dir)
    given = gate_inputs(task, splits["train"], splits["validation"], data)
    posts = [*splits["validation"], *data.validation]
    invented = np.array([p.id.startswith("screen_seed") for p in posts])
    gold = np.asarray(given.validation_flag, dtype=bool)
    budget = task.screen.max_negative_flagged
    _, p_tfidf, readers = _reader_probabilities(task.id, given.flag, given.clear, given.validation, encoders, 4.0,
                                                print, (CLEAR, FLAG))
    encoded = {k: p for k, (_, p) in readers.items()}
    weights, tried, kept = _choose_weights(p_tfidf, encoded, gold, budget)
    texts = [*given.flag, *given.clear]
    y = np.array([1] * len(given.flag) + [0] * len(given.clear))
    train_x = np.hstack([embed(texts, cache=EmbeddingCache(default_cache_path(k)), encoder_name=k) for k in encoders])
    validation_x = np.hstack([embed(given.validation, cache=EmbeddingCache(default_cache_path(k)), encoder_name=k)
                              for k in encoders])
    joint = LogisticRegression(C=4.0, max_iter=3000, class_weight="balanced").fit(train_x, y)
    p_joint = joint.predict_proba(validation_x)[:, 1]
    first = [k for k in tried if "," in k and k.count(",") == 1 and k.split(", ")[1].startswith(encoders[0])]
    before = max(first, key=lambda k: (round(tried[k]["recall"], 4), k)) if first else "tfidf 1.0"

    def invented_posts(key: str) -> dict[str, Any]:
        parts = dict(part.rsplit(" ", 1) for part in key.split(", "))
        p = float(parts.pop("tfidf")) * p_tfidf + sum(float(w) * encoded[k] for k, w in parts.items())
        flagged = p >= threshold_for(p[~gold], budget)
        if not invented.any():
            return {"weights": key, "invented_at_risk_recall": None, "invented_negatives_flagged": None}
        return {"weights": key, "invented_at_risk_recall": round(float(flagged[gold & invented].mean()), 4),
                "invented_negatives_flagged": f"{int(flagged[~gold & invented].sum())} of {int((~gold & invented).sum())}",
                "invented_negatives_flagged_ids": [posts[i].id for i in np.flatnonzero(flagged & ~gold & invented)]}

    return {
        "task": task.id, "max_negative_flagged": budget,
        "invented_validation_posts": {"first_encoder_best": invented_posts(before),
                                      "chosen": invented_posts(", ".join(f"{k} {w}" for k, w in zip(
                                          ["tfidf", *kept], weights, strict=True)))},
        "validation_posts": {"flagged": int(gold.sum()), "negative": int((~gold).sum())},
        "alone": {"tfidf": _recall(p_tfidf, gold, budget), **{k: _recall(p, gold, budget) for k, p in encoded.items()}},
        "chosen": {"weights": dict(zip(["tfidf", *kept], weights, strict=True)),
                   "recall": tried[", ".join(f"{k} {w}" for k, w in zip(["tfidf", *kept], weights, strict=True))][
                       "recall"]},
        "by_weights": {k: round(v["recall"], 4) for k, v in tried.items()},
        "concatenated_embeddings_with_tfidf": {str(w): _recall(w * p_tfidf + (1 - w) * p_joint, gold, budget)
                                               for w in np.round(np.arange(0.0, 1.01, 0.1), 1)},
        "halvings": _halvings(p_tfidf, encoded, gold, budget, halvings, seed) if len(encoders) > 1 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="suicide_risk,cognitive_distortion")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--encoders", default="e5,use", help="in order; the last is the one the halvings test")
    parser.add_argument("--halvings", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = {"machine": f"{platform.machine()}, {platform.node()}",
              "tasks": {t: measure(t, args.data_dir, args.encoders.split(","), args.halvings, args.seed)
                        for t in args.tasks.split(",")}}
    print(json.dumps(result, ensure_ascii=False, indent=1))
    if args.out:
        atomic_write_text(args.out, json.dumps(result, ensure_ascii=False, indent=2) + "\n")


if __name__ == "__main__":
    main()
