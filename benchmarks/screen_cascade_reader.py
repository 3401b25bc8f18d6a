"""Would a stronger reader behind the suicide gate catch what it misses? Validation only.

The gate (TF-IDF + frozen e5, train/screen.py) misses calm plans and farewells written in ordinary words, and its
0.5 % false-flag budget is spent partly on the invented hard negatives. This benchmark fits the declared gate the
way analyze-train does and measures, on the task's validation posts (SOS-HL validation, 3,680 SMP2020 eval posts,
the invented third; no test split, no hand-written benchmark set):

- ``budget``: the threshold set on every negative validation post (as declared) or on the ordinary ones only;
- ``backbone`` (with ``--backbone DIR``, a `mentalglm backbone train` output): the backbone's suicide-risk head,
  P(high), read only on posts the gate scores at or above a floor (the cascade: ordinary posts under the floor are
  never read). A post is flagged when the gate flags it or the head's P(high) reaches a threshold; the gate's
  share of the budget and the head's threshold are chosen together so that at most the declared share of negative
  validation posts is flagged. Both are chosen and scored on the same posts, so these recalls are optimistic:
  they say whether the lever is worth a held-out test, not what it would score;
- ``gate_head`` (with ``--backbone``): a logistic regression on the backbone's pooled states trained for the gate's
  own question (the gate's "flag" posts against the "clear" ones it scores at least ``HEAD_TRAIN_FLOOR``, the only
  ones a cascade would show it, and ``HEAD_EASY_CLEAR`` others), read on the same posts; flagged by the union as
  above, or by the average of the two P(flag) with the threshold set at the budget. Pooled states are cached in
  ``--cache`` (a rerun reads only posts it has not read).

    MENTALGLM_DATA_DIR=../shared/data python benchmarks/screen_cascade_reader.py \
        --backbone runs/backbone/best --out results/screen-sources/cascade-reader.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.analyze.screened import flags, gate_inputs
from mentalglm.data.datadir import resolve_data_dir
from mentalglm.data.splits import canonical_splits, screen_data
from mentalglm.files import atomic_write_text
from mentalglm.tasks import get_task
from mentalglm.train.screen import GATE_SHARES, _union_threshold, fit_gate, threshold_for

FLOORS = (0.1, 0.2, 0.3)
HEAD_TRAIN_FLOOR, HEAD_EASY_CLEAR = 0.1, 300
ORDINARY_SOURCE = "smp2020_ewect"
INVENTED_SOURCE = "screen_seed"


def rates(flagged: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: round(float(flagged[mask].mean()), 4) for name, mask in groups.items() if mask.any()}


def pooled_states(reader: Any, texts: list[str], cache: Path, salt: str) -> np.ndarray:
    """The reader's pooled state of each text, through an .npz cache keyed by ``salt`` (the backbone's heads file
    digest: another checkpoint reads afresh) and the text; saved every 64 posts."""
    def key(text: str) -> str:
        return hashlib.sha256(f"{salt}\n{text}".encode()).hexdigest()[:24]

    known: dict[str, np.ndarray] = {}
    if cache.is_file():
        with np.load(cache) as stored:
            known = dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))
    missing = list(dict.fromkeys(t for t in texts if key(t) not in known))
    for start in range(0, len(missing), 8):
        chunk = missing[start:start + 8]
        known.update(zip((key(t) for t in chunk), reader.pooled(chunk), strict=True))
        if (start // 8) % 8 == 7 or start + 8 >= len(missing):
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache.with_suffix(".tmp.npz"), keys=np.array(list(known)), vectors=np.stack(list(known.values())))
            cache.with_suffix(".tmp.npz").replace(cache)
            print(f"pooled {min(start + 8, len(missing))}/{len(missing)}", flush=True)
    return np.stack([known[key(t)] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)


def joint_best(p_gate: np.ndarray, p_reader: np.ndarray, eligible: np.ndarray, at_risk: np.ndarray, budget: float,
               groups: dict[str, np.ndarray], *, average: bool) -> dict[str, Any]:
    """The union of gate and reader (reader read only where ``eligible``) with the budget shared, the gate's share
    chosen by validation recall; with ``average`` (a reader of the same P(flag)), also the mean of the two where
    read, thresholded at the budget."""
    best: dict[str, Any] | None = None
    ordinary_read = round(float(eligible[groups["ordinary_flagged"]].mean()), 4)
    for share in (*GATE_SHARES, 1.0):
        gate_threshold = threshold_for(p_gate[~at_risk], share * budget)
        also = np.where(eligible, p_reader, 0.0)
        reader_threshold = _union_threshold(p_gate, also, ~at_risk, gate_threshold, budget)
        flagged = (p_gate >= gate_threshold) | (also >= reader_threshold)
        row = {"gate_share": share, "reader_threshold": round(min(reader_threshold, 1.0), 4),
               "ordinary_read": ordinary_read, **rates(flagged, groups)}
        if best is None or row["at_risk_recall"] > best["at_risk_recall"]:
            best = row
    if not average:
        return {"union": best}
    averaged = np.where(eligible, (p_gate + p_reader) / 2, p_gate)
    threshold = threshold_for(averaged[~at_risk], budget)
    return {"union": best, "average": {"threshold": round(threshold, 4), "ordinary_read": ordinary_read,
                                       **rates(averaged >= threshold, groups)}}


def measure(data_dir: str, backbone: Path | None, threads: int, cache: Path) -> dict[str, Any]:
    task = get_task("suicide_risk")
    assert task.screen is not None
    splits, _ = canonical_splits(task.id, data_dir, include_extra=False)
    data = screen_data(task, data_dir)
    given = gate_inputs(task, splits["train"], splits["validation"], data)
    budget = task.screen.max_negative_flagged
    gate, record = fit_gate(given.flag, given.clear, given.validation, given.validation_flag, budget,
                            name=task.id, log=lambda _: None)
    posts = [*splits["validation"], *data.validation]
    source = np.array(["task"] * len(splits["validation"]) + [p.source for p in data.validation])
    at_risk = np.array([True] * len(splits["validation"]) + flags(task, data.validation))
    groups = {"at_risk_recall": at_risk, "high_recall": np.array(["high" in p.labels for p in posts]),
              "task_validation_recall": source == "task",
              "invented_at_risk_recall": (source == INVENTED_SOURCE) & at_risk,
              "negatives_flagged": ~at_risk, "ordinary_flagged": (source == ORDINARY_SOURCE) & ~at_risk,
              "invented_negatives_flagged": (source == INVENTED_SOURCE) & ~at_risk}
    p_gate = gate.flag_proba([p.text for p in posts])
    out: dict[str, Any] = {"posts": {name: int(mask.sum()) for name, mask in groups.items()},
                           "gate_weight_on_tfidf": record["weight_on_tfidf"], "budget": {}}
    for name, negatives in (("all_negatives", ~at_risk), ("ordinary_only", groups["ordinary_flagged"])):
        threshold = threshold_for(p_gate[negatives], budget)
        out["budget"][name] = {"threshold": round(threshold, 4), **rates(p_gate >= threshold, groups)}
    if backbone is None:
        return out
    import torch

    from mentalglm.train.backbone_model import TorchReader

    torch.set_num_threads(threads)
    read = np.flatnonzero(p_gate >= min(FLOORS))
    started = time.perf_counter()
    reader = TorchReader(backbone)
    salt = hashlib.sha256((backbone / "heads.safetensors").read_bytes()).hexdigest()
    loaded = time.perf_counter() - started
    classes = reader.heads.tasks[task.id][0]
    p_high = np.zeros(len(posts))
    started = time.perf_counter()
    p_high[read] = reader.heads.probabilities(task.id, pooled_states(reader, [posts[i].text for i in read], cache,
                                                                          salt))[:, classes.index("high")]
    seconds = time.perf_counter() - started
    out["backbone"] = {"directory": str(backbone), "step": reader.meta.get("step"), "load_seconds": round(loaded, 1),
                       "posts_read": int(len(read)), "read_seconds": round(seconds, 1),
                       "suicide_head": {str(floor): joint_best(p_gate, p_high, p_gate >= floor, at_risk, budget, groups,
                                                             average=False)
                                        for floor in FLOORS}}
    out["backbone"]["gate_head"] = gate_head(reader, gate, given, posts, p_gate, at_risk, budget, groups, cache,
                                           salt)
    return out


def gate_head(reader: Any, gate: Any, given: Any, posts: list[Any], p_gate: np.ndarray, at_risk: np.ndarray,
              budget: float, groups: dict[str, np.ndarray], cache: Path, salt: str) -> dict[str, Any]:
    """A logistic regression on pooled states for flag-or-clear, trained on the posts a cascade would show it."""
    import random

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    flag = list(dict.fromkeys(given.flag))
    clear = list(dict.fromkeys(given.clear))
    p_clear = gate.flag_proba(clear)
    hard = [t for t, p in zip(clear, p_clear, strict=True) if p >= HEAD_TRAIN_FLOOR]
    easy = random.Random(13).sample([t for t, p in zip(clear, p_clear, strict=True) if p < HEAD_TRAIN_FLOOR],
                                    HEAD_EASY_CLEAR)
    texts = [*flag, *hard, *easy]
    started = time.perf_counter()
    x = pooled_states(reader, texts, cache, salt)
    y = np.array([1] * len(flag) + [0] * (len(hard) + len(easy)))
    head = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000, class_weight="balanced"))
    head.fit(x, y)
    read = np.flatnonzero(p_gate >= min(FLOORS))
    p_head = np.zeros(len(posts))
    p_head[read] = head.predict_proba(pooled_states(reader, [posts[i].text for i in read], cache, salt))[:, 1]
    return {"train_posts": {"flag": len(flag), "clear_scored_at_least": len(hard), "clear_other": len(easy)},
            "seconds": round(time.perf_counter() - started, 1),
            "by_floor": {str(floor): joint_best(p_gate, p_head, p_gate >= floor, at_risk, budget, groups, average=True)
                         for floor in FLOORS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--backbone", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("runs/screen-cascade-reader/pooled.npz"),
                        help="pooled states already read (resumes an interrupted run)")
    args = parser.parse_args()
    result = {"machine": f"{platform.machine()}, {platform.node()}",
              **measure(str(resolve_data_dir(args.data_dir)), args.backbone, args.threads, args.cache)}
    print(json.dumps(result, ensure_ascii=False, indent=1))
    if args.out:
        atomic_write_text(args.out, json.dumps(result, ensure_ascii=False, indent=2) + "\n")


if __name__ == "__main__":
    main()
