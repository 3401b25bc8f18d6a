"""The suicide-risk domain check measured: how often it warns, where, and what a gate would have cost.

    MENTALGLM_DATA_DIR=../shared/data python benchmarks/domain_check.py                        # TF-IDF default
    MENTALGLM_DATA_DIR=../shared/data python benchmarks/domain_check.py \\
        --artifacts-dir ~/.cache/mentalglm/analyzer-ensemble --name ensemble                   # accurate tier

Runs the analyzer (labels engine, the real input path) on the task's validation posts (the forum), on ordinary
Weibo posts of the kinds the check was trained against (SMP2020 "usual" and "virus" validation) and of two kinds
it never saw (the weibo_senti_100k and simplifyweibo_4_moods subsets, every post), and on the invented posts of
benchmarks/adversarial/posts.jsonl, split by the label their author expected. Per set: decided high risk, marked outside the training domain, both, and
high risk that a gate (outside -> low) would have left; on the forum posts F1(high) with and without the gate.
No test split is read. Writes results/domain-check/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from mentalglm.analyze.artifacts import default_artifacts_dir
from mentalglm.analyze.engine import Analyzer
from mentalglm.analyze.safety import RISK_TASK as RISK
from mentalglm.data.registry import get_loader
from mentalglm.data.splits import canonical_splits
from mentalglm.evaluate.metrics import score
from mentalglm.files import atomic_write_text
from mentalglm.tasks import get_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adversarial import load_posts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def measure(analyzer: Analyzer, texts: list[str], gold: list[tuple[str, ...]] | None = None) -> dict[str, Any]:
    results = [r for r in analyzer.analyze_many(texts, batch_size=64)]
    high = [r.high_risk for r in results]
    outside = [bool(r.tasks[RISK].outside_training_domain) for r in results]
    if any(r.tasks[RISK].outside_training_domain is None for r in results):
        raise SystemExit(f"the {RISK} model has no domain check: rebuild it with `mentalglm analyze-train`")
    n = len(results)
    row: dict[str, Any] = {
        "posts": n,
        "high_risk": round(sum(high) / n, 4),
        "outside": round(sum(outside) / n, 4),
        "high_and_outside": round(sum(h and o for h, o in zip(high, outside, strict=True)) / n, 4),
        "high_if_gated": round(sum(h and not o for h, o in zip(high, outside, strict=True)) / n, 4),
    }
    if gold is not None:
        task = get_task(RISK)
        decided = [tuple(label.id for label in r.tasks[RISK].labels) for r in results]
        gated = [("low",) if o else d for d, o in zip(decided, outside, strict=True)]
        row[f"{task.official_metric}"] = round(score(task, gold, decided, n_resamples=0)[task.official_metric], 4)
        row[f"{task.official_metric}_if_gated"] = round(score(task, gold, gated, n_resamples=0)[task.official_metric], 4)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("MENTALGLM_DATA_DIR"))
    parser.add_argument("--artifacts-dir", type=Path, default=None)
    parser.add_argument("--ordinary-posts", type=int, default=1000, help="first N of each ordinary validation split")
    parser.add_argument("--name", default="default")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "domain-check")
    args = parser.parse_args(argv)
    if not args.data_dir:
        raise SystemExit("no data directory: pass --data-dir or set MENTALGLM_DATA_DIR")
    directory = (args.artifacts_dir or default_artifacts_dir()).expanduser()
    analyzer = Analyzer([RISK], "labels", artifacts_dir=directory)
    forum, _ = canonical_splits(RISK, args.data_dir)
    usual, _ = canonical_splits("emotion", args.data_dir, include_extra=False)
    virus, _ = canonical_splits("emotion_virus", args.data_dir, include_extra=False)
    invented = load_posts()
    unseen = {name: get_loader(name).load(Path(args.data_dir), part)[0]
              for name, part in (("weibo_senti_100k", "all"), ("simplifyweibo_4_moods", "all"))}
    sets: dict[str, tuple[list[str], list[tuple[str, ...]] | None]] = {
        "forum: SOS-HL validation": ([p.text for p in forum["validation"]], [p.labels for p in forum["validation"]]),
        "ordinary: SMP2020 usual validation": ([p.text for p in usual["validation"][: args.ordinary_posts]], None),
        "ordinary: SMP2020 virus validation": ([p.text for p in virus["validation"][: args.ordinary_posts]], None),
        **{f"ordinary, unseen kind: {name}": ([p.text for p in posts], None) for name, posts in unseen.items()},
        "invented, expected high": ([r["text"] for r in invented if r["expect"].get(RISK) == "high"], None),
        "invented, expected low": ([r["text"] for r in invented if r["expect"].get(RISK) == "low"], None),
    }
    rows = {name: measure(analyzer, texts, gold) for name, (texts, gold) in sets.items()}
    threshold = analyzer.models[RISK].domain.threshold  # type: ignore[union-attr]
    record = {"artifacts_dir": str(directory), "threshold": threshold, "when": dt.datetime.now().isoformat(timespec="seconds"),
              "sets": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"{args.name}.json", json.dumps(record, ensure_ascii=False, indent=1) + "\n")
    lines = [f"# Domain check, {args.name} ({directory}; outside below similarity {threshold})", "",
             "| posts | n | high risk | outside | high and outside (warned) | high if outside were gated | F1(high) | F1(high) if gated |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        f1 = (f"{row['f1_positive']:.3f}", f"{row['f1_positive_if_gated']:.3f}") if "f1_positive" in row else ("", "")
        lines.append(f"| {name} | {row['posts']} | {row['high_risk']:.1%} | {row['outside']:.1%} | "
                     f"{row['high_and_outside']:.1%} | {row['high_if_gated']:.1%} | {f1[0]} | {f1[1]} |")
    atomic_write_text(args.out / f"{args.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
