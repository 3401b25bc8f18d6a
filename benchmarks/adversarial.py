"""Adversarial robustness of the analyzer: does a perturbed post get the verdict of its clean twin?

    # labels engine (the trained TF-IDF classifiers), the shipped analyzer and the two defences side by side
    OMP_NUM_THREADS=1 python benchmarks/adversarial.py
    # also measure the defences on the real data: posts flagged as injection, posts the normaliser rewrites,
    # and the official test metric of each task with and without them
    OMP_NUM_THREADS=1 python benchmarks/adversarial.py --check-data --data-dir ../shared/data
    # an LLM engine (slow on CPU: one generation per post and task)
    python benchmarks/adversarial.py --engine hybrid --backend llamacpp:default --tasks suicide_risk

The set (benchmarks/adversarial/posts.jsonl) pairs each invented clean post with a perturbed twin of the same
meaning: ``injection`` (instructions to the analyzer inside the post), ``obfuscated`` (紫砂, s了, 🔪, 自 杀),
``traditional`` (繁體), ``pinyin`` (zisha) and ``mixed_en`` (code-switching). Per kind and task it reports how
often the decided labels differ between the twins, the suicide-risk flips in each direction (high -> low is
the dangerous one), and the accuracy of clean and perturbed posts against the labels the author of the set
expected. Conditions:

- ``shipped``: the analyzer as it is;
- ``strip``: instruction-like spans cut out of the model input (``analyze.injection.strip_injection``);
- ``strip+normalise``: that, then traditional characters, obfuscations, pinyin and English self-harm phrases
  folded for the classifiers (``analyze.normalise.normalise``).

The defences are applied by wrapping the Analyzer's input path the way engine.py would once they are
integrated; when they are, ``shipped`` already contains them. Writes ``flip_rates.json`` and ``flip_rates.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mentalglm.analyze.engine import Analyzer
from mentalglm.analyze.injection import strip_injection
from mentalglm.analyze.normalise import normalise
from mentalglm.analyze.schema import PostResult, TaskResult
from mentalglm.files import atomic_write_text, read_jsonl
from mentalglm.tasks import CHINESE_MAIN_TASKS, get_task

ROOT = Path(__file__).resolve().parents[1]
POSTS = ROOT / "benchmarks" / "adversarial" / "posts.jsonl"
OUT = ROOT / "results" / "adversarial"
KINDS = ("injection", "obfuscated", "traditional", "pinyin", "mixed_en")
CONDITIONS = ("shipped", "strip", "strip+normalise")
RISK, HIGH, LOW = "suicide_risk", "high", "low"


def load_posts(path: Path = POSTS) -> list[dict[str, Any]]:
    """The rows of the set; a malformed one is an error naming its line."""
    rows = []
    for number, row in read_jsonl(path):
        missing = {"id", "pair", "kind", "text", "expect"} - set(row)
        if missing:
            raise ValueError(f"{path}:{number}: missing {sorted(missing)}")
        rows.append(row)
    return rows


def pairs(rows: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(clean, perturbed) per pair id, in file order; a pair without exactly one of each is an error."""
    by_pair: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        slot = "clean" if row["kind"] == "clean" else "perturbed"
        if slot in by_pair.setdefault(row["pair"], {}):
            raise ValueError(f"pair {row['pair']} has two {slot} posts ({row['id']})")
        by_pair[row["pair"]][slot] = row
    broken = [p for p, twins in by_pair.items() if set(twins) != {"clean", "perturbed"}]
    if broken:
        raise ValueError(f"pairs without a clean and a perturbed post: {broken}")
    return [(twins["clean"], twins["perturbed"]) for twins in by_pair.values()]


def model_input(condition: str) -> Callable[[str], str]:
    if condition == "shipped":
        return lambda text: text
    if condition == "strip":
        return lambda text: strip_injection(text)[0]
    if condition == "strip+normalise":
        return lambda text: normalise(strip_injection(text)[0])
    raise ValueError(f"unknown condition {condition!r}; conditions: {', '.join(CONDITIONS)}")


class DefendedAnalyzer(Analyzer):
    """The Analyzer with a defence on its input path: what the classifiers and the LLM read, not what is shown.

    Classifiers read ``classifier_input(text)``; the LLM reads the scrubbed text with injections cut out
    (normalisation is for the classifiers, whose n-grams need it; an LLM reads 繁體 and English as they are).
    """

    def __init__(self, *args: Any, classifier_input: Callable[[str], str], llm_strip: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.classifier_input, self.llm_strip = classifier_input, llm_strip

    def _for_llm(self, texts: Sequence[str]) -> list[str]:
        return [strip_injection(t)[0] if self.llm_strip else t for t in texts]

    def _labels(self, task, texts):  # type: ignore[no-untyped-def]
        return super()._labels(task, [self.classifier_input(t) for t in texts])

    def _llm(self, task, scrubbed, originals):  # type: ignore[no-untyped-def]
        return super()._llm(task, self._for_llm(scrubbed), originals)

    def _explain(self, per_post, scrubbed, originals):  # type: ignore[no-untyped-def]
        return super()._explain(per_post, self._for_llm(scrubbed), originals)


def verdict(result: TaskResult) -> tuple[str, ...]:
    return tuple(sorted(label.id for label in result.labels)) if result.valid else ("INVALID",)


def correct(task_id: str, predicted: tuple[str, ...], expected: Any) -> bool:
    """Single-label tasks: the decided label is the expected one. Multi-label: every expected label is decided."""
    wanted = [expected] if isinstance(expected, str) else list(expected)
    return set(wanted) <= set(predicted) if get_task(task_id).is_multi_label else predicted == tuple(wanted)


def summarise(kind_pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]],
              results: dict[str, PostResult], tasks: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"pairs": len(kind_pairs), "tasks": {}}
    out["injection_flagged"] = {
        "clean": sum(bool(strip_injection(c["text"])[1]) for c, _ in kind_pairs),
        "perturbed": sum(bool(strip_injection(p["text"])[1]) for _, p in kind_pairs)}
    for task_id in tasks:
        flips = high_to_low = low_to_high = 0
        shift: list[float] = []
        scored = {"clean": [0, 0], "perturbed": [0, 0]}  # [correct, with an expectation]
        for clean, perturbed in kind_pairs:
            a, b = results[clean["id"]].tasks[task_id], results[perturbed["id"]].tasks[task_id]
            va, vb = verdict(a), verdict(b)
            flips += va != vb
            if task_id == RISK:
                high_to_low += HIGH in va and HIGH not in vb
                low_to_high += HIGH not in va and HIGH in vb
                if HIGH in a.confidences and HIGH in b.confidences:
                    shift.append(b.confidences[HIGH] - a.confidences[HIGH])
            for slot, row, v in (("clean", clean, va), ("perturbed", perturbed, vb)):
                expected = row["expect"].get(task_id)
                if expected not in (None, []):
                    scored[slot][1] += 1
                    scored[slot][0] += correct(task_id, v, expected)
        entry: dict[str, Any] = {
            "flips": flips, "flip_rate": round(flips / max(1, len(kind_pairs)), 4),
            "accuracy": {slot: {"correct": k, "n": n, "rate": round(k / n, 4) if n else None}
                         for slot, (k, n) in scored.items()}}
        if task_id == RISK:
            entry.update(high_to_low=high_to_low, low_to_high=low_to_high,
                         mean_p_high_shift=round(sum(shift) / len(shift), 4) if shift else None)
        out["tasks"][task_id] = entry
    return out


def pair_detail(twins: Sequence[tuple[dict[str, Any], dict[str, Any]]], results: dict[str, PostResult],
                tasks: Sequence[str]) -> list[dict[str, Any]]:
    """Per pair: each task's verdict for the clean and the perturbed post, and P(high) for suicide risk."""
    out = []
    for clean, perturbed in twins:
        entry: dict[str, Any] = {"pair": clean["pair"], "kind": perturbed["kind"]}
        for task_id in tasks:
            a, b = results[clean["id"]].tasks[task_id], results[perturbed["id"]].tasks[task_id]
            entry[task_id] = {"clean": list(verdict(a)), "perturbed": list(verdict(b))}
            if HIGH in a.confidences:
                entry[task_id]["p_high"] = [round(a.confidences[HIGH], 4), round(b.confidences.get(HIGH, 0.0), 4)]
        out.append(entry)
    return out


def run_condition(condition: str, rows: Sequence[dict[str, Any]], args: argparse.Namespace) -> dict[str, PostResult]:
    analyzer = DefendedAnalyzer(args.tasks, args.engine, args.backend, args.artifacts_dir, explain=args.explain,
                                classifier_input=model_input(condition), llm_strip=condition != "shipped")
    with analyzer:
        results = list(analyzer.analyze_many([r["text"] for r in rows], batch_size=32))
    return {row["id"]: result for row, result in zip(rows, results, strict=True)}  # type: ignore[misc]


def check_data(data_dir: Path | None, tasks: Sequence[str], artifacts_dir: Path | None) -> dict[str, Any]:
    """On the real posts of every split: how often each defence fires, and each task's test metric under it."""
    from collections import Counter

    from mentalglm.analyze.artifacts import load_task_model
    from mentalglm.data.splits import canonical_splits
    from mentalglm.tasks.metrics import score

    out: dict[str, Any] = {}
    for task_id in tasks:
        task = get_task(task_id)
        splits, _ = canonical_splits(task_id, data_dir, include_extra=False)
        posts = [p for split in splits.values() for p in split]
        fired: Counter[str] = Counter()
        flagged = 0
        for post in posts:
            flagged += bool(strip_injection(post.text)[1])
            rules: list[str] = []
            normalise(post.text, rules)
            fired.update(rules)
            fired["any"] += bool(rules)
        model = load_task_model(task_id, artifacts_dir)
        test = splits["test"]
        metrics = {}
        for condition in CONDITIONS:
            transform = model_input(condition)
            predicted = [labels for labels, _ in model.predict([transform(p.text) for p in test])]
            metrics[condition] = round(float(score(task, [p.labels for p in test], predicted,
                                                   n_resamples=0)[task.official_metric]), 4)
        out[task_id] = {"posts": len(posts), "injection_flagged": flagged, "normalise_changed": dict(fired),
                        "test_posts": len(test), "official_metric": task.official_metric, "test": metrics}
    return out


def markdown(report: dict[str, Any]) -> str:
    tasks = report["tasks"]
    lines = [f"# Adversarial flip rates ({report['engine']} engine)", "",
             f"{report['pairs']} pairs from `{report['posts']}` (sha256 {report['posts_sha256'][:12]}), "
             f"measured {report['date']}. Flips: the decided labels of the perturbed post differ from its clean "
             "twin's. Accuracy: against the labels the set expects (clean -> perturbed); cognitive distortion "
             "counts a post right when every expected label is decided.", ""]
    header = ["kind", "condition", "pairs", "risk flips", "high->low", "low->high", "mean dP(high)"]
    header += [f"{t} flips" for t in tasks if t != RISK]
    header += [f"{t} acc" for t in tasks]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind in [*KINDS, "all"]:
        for condition in report["conditions"]:
            summary = report["conditions"][condition].get(kind)
            if not summary:
                continue
            row = [kind, condition, str(summary["pairs"])]
            risk = summary["tasks"].get(RISK)
            if risk:
                row += [f"{risk['flips']} ({risk['flip_rate']:.0%})", str(risk["high_to_low"]),
                        str(risk["low_to_high"]),
                        "" if risk["mean_p_high_shift"] is None else f"{risk['mean_p_high_shift']:+.3f}"]
            else:
                row += ["", "", "", ""]
            row += [f"{summary['tasks'][t]['flips']} ({summary['tasks'][t]['flip_rate']:.0%})"
                    for t in tasks if t != RISK]
            for t in tasks:
                acc = summary["tasks"][t]["accuracy"]
                row.append("" if not acc["clean"]["n"] else
                           f"{acc['clean']['correct']}/{acc['clean']['n']} -> "
                           f"{acc['perturbed']['correct']}/{acc['perturbed']['n']}")
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Posts flagged `injection_suspected` by `strip_injection` (clean / perturbed):", ""]
    lines += ["| kind | clean | perturbed |", "|---|---|---|"]
    for kind in [*KINDS, "all"]:
        summary = next(iter(report["conditions"].values())).get(kind)
        if summary:
            flagged = summary["injection_flagged"]
            lines.append(f"| {kind} | {flagged['clean']}/{summary['pairs']} | {flagged['perturbed']}/{summary['pairs']} |")
    if report.get("real_data"):
        lines += ["", "Real data (all canonical splits of each task): posts flagged as injection, posts the "
                  "normaliser rewrites (by rule), and the official test metric per condition:", "",
                  "| task | posts | flagged | rewritten (rules) | test metric | " + " | ".join(CONDITIONS) + " |",
                  "|---|---|---|---|---|" + "---|" * len(CONDITIONS)]
        for task_id, real in report["real_data"].items():
            changed = dict(real["normalise_changed"])
            total = changed.pop("any", 0)
            rules = ", ".join(f"{k} {v}" for k, v in sorted(changed.items(), key=lambda kv: -kv[1]))
            lines.append(f"| {task_id} | {real['posts']} | {real['injection_flagged']} | {total} ({rules}) | "
                         f"{real['official_metric']} (n={real['test_posts']}) | "
                         + " | ".join(f"{real['test'][c]:.4f}" for c in CONDITIONS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=Path, default=POSTS)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--tasks", default=",".join(CHINESE_MAIN_TASKS))
    parser.add_argument("--engine", default="labels", choices=("labels", "hybrid", "llm"))
    parser.add_argument("--backend", default="llamacpp:default", help="LLM backend spec for hybrid / llm")
    parser.add_argument("--no-explain", dest="explain", action="store_false")
    parser.add_argument("--artifacts-dir", type=Path, default=None, help="default: $MENTALGLM_ANALYZER_DIR or cache")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--check-data", action="store_true", help="also measure the defences on the real data")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $MENTALGLM_DATA_DIR")
    args = parser.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    rows = load_posts(args.posts)
    twins = pairs(rows)
    report: dict[str, Any] = {
        "engine": args.engine, "backend": args.backend if args.engine != "labels" else None, "tasks": args.tasks,
        "posts": os.path.relpath(args.posts, ROOT), "posts_sha256": hashlib.sha256(args.posts.read_bytes()).hexdigest(),
        "pairs": len(twins), "date": dt.date.today().isoformat(), "conditions": {}}
    for condition in [c.strip() for c in args.conditions.split(",") if c.strip()]:
        model_input(condition)  # an unknown name fails before any work
        print(f"running {condition} ...", file=sys.stderr)
        results = run_condition(condition, rows, args)
        per_kind = {kind: summarise([t for t in twins if t[1]["kind"] == kind], results, args.tasks)
                    for kind in KINDS if any(t[1]["kind"] == kind for t in twins)}
        per_kind["all"] = summarise(twins, results, args.tasks)
        report["conditions"][condition] = per_kind
        report.setdefault("pairs_detail", {})[condition] = pair_detail(twins, results, args.tasks)
    if args.check_data:
        print("checking the real data ...", file=sys.stderr)
        report["real_data"] = check_data(args.data_dir, args.tasks, args.artifacts_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "flip_rates.json", json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    text = markdown(report)
    atomic_write_text(args.out / "flip_rates.md", text)
    print(text)
    return report


if __name__ == "__main__":
    main()
