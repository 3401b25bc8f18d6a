"""Does SOS-4K help the classifier behind the suicide screen (low against high)? Out-of-fold F1(high) on SOS-HL-1K.

The classifier behind the screen decides who gets the crisis panel. It learns from SOS-HL-1K's ~1,000 posts (and the
invented ones); SOS-4K holds ~2,800 more tree-hole posts with 0-10 levels. The level that maps to "high" is chosen
on the posts SOS-4K shares with SOS-HL-1K's train and validation splits (never the test split). The classifier is
the analyzer's (char TF-IDF averaged with frozen e5 and USE readers, the weights its card records), cross-validated
over the SOS-HL pool (5 folds, three shufflings), with or without every SOS-4K post at levels >= 1 that occurs
nowhere in SOS-HL-1K (pool or test) added to each fold's training; scored on the SOS-HL posts only. Test splits
are not read.

    MENTALGLM_DATA_DIR=../shared/data python benchmarks/screen_inner_sources.py --out results/screen-sources/inner.json
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.analyze.frozen import _embeddings
from mentalglm.data.registry import get_loader
from mentalglm.data.splits import canonical_splits, classifier_posts, normalise_text, screen_data
from mentalglm.evaluate.predict import machine_info, now_iso
from mentalglm.files import atomic_write_text
from mentalglm.tasks import get_task
from mentalglm.tasks.metrics import paired_win_rate, score
from mentalglm.train.classical import TfidfClassifier
from mentalglm.train.embedding import EmbeddingClassifier

WEIGHTS = {"tfidf": 0.3, "e5": 0.4, "use": 0.3}  # the default analyzer's card (frozen_ensemble.weights)
SEEDS = (13, 14, 15)
CLASSES = ["low", "high"]


def main() -> None:
    from sklearn.model_selection import StratifiedKFold

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MENTALGLM_DATA_DIR"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    task = get_task("suicide_risk")
    splits, _ = canonical_splits(task.id, args.data_dir, include_extra=False)
    own = [*splits["train"], *splits["validation"]]
    train = splits["train"] + classifier_posts(task, screen_data(task.id, args.data_dir).train)
    pool = list({p.text: p for p in [*train, *splits["validation"]]}.values())
    texts = [p.text for p in pool]
    y = np.array([CLASSES.index(p.labels[0]) for p in pool])
    from_forum = np.array([p.source.startswith("sos_hl") for p in pool])

    sos4k = [p for part in ("train", "val", "test") for p in get_loader("sos_4k").load(args.data_dir, part)[0]]
    label_of = {normalise_text(p.text): p.labels[0] for p in own}
    overlap = Counter((int(p.labels[0]), label_of[normalise_text(p.text)]) for p in sos4k
                      if normalise_text(p.text) in label_of)
    def agreement(level: int) -> float:
        return sum(n for (lv, b), n in overlap.items() if (lv >= level) == (b == "high")) / sum(overlap.values())
    level = max(range(1, 11), key=agreement)
    seen = {normalise_text(p.text) for p in [*pool, *splits["test"]]}
    extra = list({normalise_text(p.text): p for p in sos4k
                  if normalise_text(p.text) not in seen and int(p.labels[0]) >= 1}.values())
    extra_texts, extra_y = [p.text for p in extra], np.array([int(int(p.labels[0]) >= level) for p in extra])
    vectors = {k: _embeddings(k, texts) for k in ("e5", "use")}
    extra_vectors = {k: _embeddings(k, extra_texts) for k in ("e5", "use")}

    def out_of_fold(with_extra: bool, seed: int) -> np.ndarray:
        p_high = np.zeros(len(pool))
        for fit, read in StratifiedKFold(5, shuffle=True, random_state=seed).split(texts, y):
            fit_texts, fit_y = [texts[i] for i in fit], y[fit]
            if with_extra:
                fit_texts, fit_y = fit_texts + extra_texts, np.concatenate([fit_y, extra_y])
            tfidf = TfidfClassifier(task.id, CLASSES, multi_label=False, C=4.0).fit(
                fit_texts, [(CLASSES[v],) for v in fit_y])
            proba = WEIGHTS["tfidf"] * tfidf.predict_proba([texts[i] for i in read])
            for kind in ("e5", "use"):
                x = np.vstack([vectors[kind][fit], extra_vectors[kind]]) if with_extra else vectors[kind][fit]
                reader = EmbeddingClassifier(CLASSES, encoder=kind).fit_embeddings(x, fit_y)
                proba = proba + WEIGHTS[kind] * reader.proba_from_embeddings(vectors[kind][read])
            p_high[read] = proba[:, 1]
        return p_high

    gold = [(CLASSES[v],) for v in y[from_forum]]
    def decided(p: np.ndarray) -> list[tuple[str, ...]]:
        return [("high",) if v >= 0.5 else ("low",) for v in p[from_forum]]
    result: dict[str, Any] = {"date": now_iso(), "machine": machine_info(), "pool": len(pool),
                              "scored_sos_hl_posts": int(from_forum.sum()),
                              "level_overlap": {f"{lv}:{b}": n for (lv, b), n in sorted(overlap.items())},
                              "high_from_level": level, "overlap_agreement": round(agreement(level), 4),
                              "extra_posts": len(extra), "extra_high": int(extra_y.sum()), "seeds": {}}
    for seed in SEEDS:
        base, more = out_of_fold(False, seed), out_of_fold(True, seed)
        result["seeds"][seed] = {
            "f1_high_sos_hl": round(float(score(task, gold, decided(base), n_resamples=0)["f1_positive"]), 4),
            "f1_high_with_sos4k": round(float(score(task, gold, decided(more), n_resamples=0)["f1_positive"]), 4),
            "win_rate_with_sos4k": round(paired_win_rate(task, gold, decided(more), decided(base), n_resamples=1000), 4)}
    print(json.dumps(result, ensure_ascii=False, indent=1))
    if args.out:
        atomic_write_text(args.out, json.dumps(result, ensure_ascii=False, indent=2) + "\n")


if __name__ == "__main__":
    main()
