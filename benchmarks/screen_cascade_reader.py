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
  they say whether the lever is worth a held-out test, not what it would score.

    MENTALGLM_DATA_DIR=../shared/data python benchmarks/screen_cascade_reader.py \
        --backbone runs/backbone/best --out results/screen-sources/cascade-reader.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.analyze.screened import flags, gate_inputs
from mentalglm.data.datadir import resolve_data_dir
from mentalglm.data.splits import canonical_splits, screen_data
from mentalglm.tasks import get_task
from mentalglm.train.screen import GATE_SHARES, _union_threshold, fit_gate, threshold_for

FLOORS = (0.1, 0.2, 0.3)
ORDINARY_SOURCE = "smp2020_ewect"
INVENTED_SOURCE = "screen_seed"


def rates(flagged: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: round(float(flagged[mask].mean()), 4) for name, mask in groups.items() if mask.any()}


def measure(data_dir: str, backbone: Path | None, threads: int) -> dict[str, Any]:
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
    loaded = time.perf_counter() - started
    classes = reader.heads.tasks[task.id][0]
    p_high = np.zeros(len(posts))
    started = time.perf_counter()
    for start in range(0, len(read), 8):
        chunk = read[start:start + 8]
        p_high[chunk] = reader.heads.probabilities(task.id, reader.pooled([posts[i].text for i in chunk]))[
            :, classes.index("high")]
    seconds = time.perf_counter() - started
    out["backbone"] = {"directory": str(backbone), "step": reader.meta.get("step"), "load_seconds": round(loaded, 1),
                       "posts_read": int(len(read)), "read_seconds": round(seconds, 1), "by_floor": {}}
    for floor in FLOORS:
        eligible = p_gate >= floor
        best: dict[str, Any] | None = None
        for share in (*GATE_SHARES, 1.0):
            gate_threshold = threshold_for(p_gate[~at_risk], share * budget)
            also = np.where(eligible, p_high, 0.0)
            head_threshold = _union_threshold(p_gate, also, ~at_risk, gate_threshold, budget)
            flagged = (p_gate >= gate_threshold) | (also >= head_threshold)
            row = {"gate_share": share, "head_threshold": round(min(head_threshold, 1.0), 4),
                   "ordinary_read": round(float(eligible[groups["ordinary_flagged"]].mean()), 4),
                   **rates(flagged, groups)}
            if best is None or row["at_risk_recall"] > best["at_risk_recall"]:
                best = row
        out["backbone"]["by_floor"][str(floor)] = best
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--backbone", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = {"machine": f"{platform.machine()}, {platform.node()}",
              **measure(str(resolve_data_dir(args.data_dir)), args.backbone, args.threads)}
    print(json.dumps(result, ensure_ascii=False, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
