"""Which posts should a task's screen learn "flag" from? Validation recall of the gate per candidate source set.

The suicide screen learns "flag" from SOS-HL-1K's training posts (about 800 tree-hole posts) and the invented
ones; SOS-4K (levels 0-10) and SOS-1K come from the same tree hole and hold about 4,000 more posts. Each
candidate is the task's declared screen plus some sources; every candidate gate is fitted the way analyze-train
fits it (train/screen.py: TF-IDF + frozen e5, weight and threshold chosen on validation at the declared
false-flag rate) and scored on the same validation posts. Test splits and the hand-written benchmark sets are
not read.

    python benchmarks/screen_sources.py --data-dir ../shared/data --out results/screen-sources/suicide_risk.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.analyze.screened import gate_inputs
from mentalglm.data.splits import canonical_splits, screen_data
from mentalglm.tasks import Split, get_task
from mentalglm.train.screen import fit_gate

AT_RISK_LEVELS = tuple(str(level) for level in range(1, 11))  # SOS level 0: no risk evident, left out
CANDIDATES: dict[str, tuple[Split, ...]] = {
    "declared": (),
    "+sos4k": (Split("sos4k_train", "sos_4k", "train", only_label=AT_RISK_LEVELS, label="*"),
               Split("sos4k_val", "sos_4k", "val", only_label=AT_RISK_LEVELS, label="*")),
    "+sos1k": (Split("sos1k", "sos_1k", "binary_all", label="*"),),
}
CANDIDATES["+sos4k+sos1k"] = CANDIDATES["+sos4k"] + CANDIDATES["+sos1k"]
CANDIDATES["+sos4k+sos1k+synthetic"] = CANDIDATES["+sos4k+sos1k"] + (
    Split("sos1k_synthetic", "sos_1k", "synthetic", only_label=AT_RISK_LEVELS, label="*", limit=4000),)
# SOS-1K's LLM-written posts of the plan / method / time levels only, as "high": more varied plans and farewells than
# the invented ones, without the milder levels that taught the gate that sadness is "flag"
PLAN_LEVELS = tuple(str(level) for level in range(7, 11))
CANDIDATES["+synthetic-plans"] = (
    Split("sos1k_synthetic_plans", "sos_1k", "synthetic", only_label=PLAN_LEVELS, label="high", limit=3000),)


def measure(task_id: str, data_dir: str, names: list[str]) -> dict[str, Any]:
    task = get_task(task_id)
    assert task.screen is not None
    splits, _ = canonical_splits(task.id, data_dir, include_extra=False)
    out: dict[str, Any] = {}
    for name in names:
        variant = replace(task, screen=replace(task.screen, train=task.screen.train + CANDIDATES[name]))
        data = screen_data(variant, data_dir)
        given = gate_inputs(variant, splits["train"], splits["validation"], data)
        started = time.perf_counter()
        gate, record = fit_gate(given.flag, given.clear, given.validation, given.validation_flag,
                                task.screen.max_negative_flagged, name=f"{task.id}{name}")
        own = len(splits["validation"])  # the task's own validation posts come first and are all flagged
        decided = gate.flag_proba(given.validation) >= gate.threshold
        high = np.array(["high" in p.labels for p in [*splits["validation"], *data.validation]])
        out[name] = {"train_posts": record["train_posts"], "weight_on_tfidf": record["weight_on_tfidf"],
                     "validation_with_cascade": record["validation_with_cascade"],
                     "own_validation_recall": round(float(decided[:own].mean()), 4),
                     "high_recall": round(float(decided[high].mean()), 4),
                     "invented_and_other_flagged_recall": round(float(decided[own:][
                         [bool(f) for f in given.validation_flag[own:]]].mean()), 4)
                     if any(given.validation_flag[own:]) else None,
                     "sources": [{"name": s.name, "kept": s.kept, "dropped_as_contaminated": s.contaminated}
                                 for s in data.sources], "fit_seconds": round(time.perf_counter() - started, 1)}
        print(name, json.dumps(out[name]["validation_with_cascade"]), "own", out[name]["own_validation_recall"],
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="suicide_risk")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = {"task": args.task, "machine": f"{platform.machine()}, {platform.node()}",
              "max_negative_flagged": get_task(args.task).screen.max_negative_flagged,  # type: ignore[union-attr]
              "candidates": measure(args.task, args.data_dir, args.candidates)}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
