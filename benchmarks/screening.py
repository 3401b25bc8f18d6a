"""Screening on real traffic: how the analyzer's suicide and distortion screens behave on posts of people outside
the clinical training sets, next to the paper's benchmarks.

    MENTALGLM_DATA_DIR=../shared/data python benchmarks/screening.py                 # the default analyzer
    MENTALGLM_DATA_DIR=../shared/data python benchmarks/screening.py --artifacts-dir DIR --name NAME

Runs the analyzer (labels engine: the real input path, normalisation and injection guard included) on
- SOS-HL-1K test (250 forum posts, all "at risk"): F1(high) against high-vs-not, at-risk recall;
- ordinary Weibo posts the screen never trained on: SMP2020 usual test (5,000), the weibo_senti_100k subset
  (2,400) and the simplifyweibo_4_moods subset (2,000), every post: share flagged at risk, share high;
- benchmarks/screening/hard_negatives.jsonl and hard_positives.jsonl (invented, written before any model read
  them): share high, share at risk, per kind;
- cognitive distortion: SocialCD-3K test micro-F1 (gold has a distortion on every post), CogDis held-out
  sentences (its fixed test bucket) decided none / given a distortion, SMP2020 usual test given any distortion;
- speed: labels for the three tasks on a stream of mostly ordinary posts (SMP2020 usual test), median of runs,
  each over posts no earlier run read.
Rates carry a 95 % Wilson interval, F1 a 95 % bootstrap interval. Test splits are read here and nowhere in
tuning. Writes results/screening/<name>.{json,md} (metrics only, no post text).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from mentalglm.analyze.engine import Analyzer
from mentalglm.data.registry import get_loader
from mentalglm.data.splits import load_split
from mentalglm.evaluate.predict import timed_passes
from mentalglm.files import atomic_write_text, read_jsonl
from mentalglm.tasks import get_task
from mentalglm.tasks.metrics import score

ROOT = Path(__file__).resolve().parents[1]
HARD = ROOT / "benchmarks" / "screening"
RISK, CD = "suicide_risk", "cognitive_distortion"
ORDINARY = (("smp2020_usual_test", "smp2020_ewect", "usual_test"),
            ("weibo_senti_100k_subset", "weibo_senti_100k", "all"),
            ("simplifyweibo_4_moods_subset", "simplifyweibo_4_moods", "all"))


def wilson(hits: int, n: int) -> dict[str, Any]:
    """The share with its 95 % Wilson score interval."""
    if n == 0:
        return {"rate": None, "n": 0}
    z, p = 1.959964, hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"rate": round(p, 4), "ci95": [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)],
            "hits": hits, "n": n}


def risk_levels(analyzer: Analyzer, texts: list[str]) -> list[str]:
    return [r.tasks[RISK].labels[0].id for r in analyzer.analyze_many(texts, batch_size=64)]


def distortions(analyzer: Analyzer, texts: list[str]) -> list[tuple[str, ...]]:
    return [tuple(label.id for label in r.tasks[CD].labels) for r in analyzer.analyze_many(texts, batch_size=64)]


def load(dataset: str, part: str, data_dir: Path | None) -> list[str]:
    return [p.text for p in get_loader(dataset).load(data_dir or Path(os.environ["MENTALGLM_DATA_DIR"]), part)[0]]


def hard_sets() -> dict[str, list[dict[str, Any]]]:
    return {name: [row for _, row in read_jsonl(HARD / f"{name}.jsonl")] for name in ("hard_negatives", "hard_positives")}


def suicide_block(analyzer: Analyzer, data_dir: Path | None) -> dict[str, Any]:
    task = get_task(RISK)
    test, _ = load_split(RISK, "test", data_dir)
    levels = risk_levels(analyzer, [p.text for p in test])
    gold = [p.labels for p in test]
    scores = score(task, gold, [(level,) for level in levels], n_resamples=1000)
    out: dict[str, Any] = {"sos_hl_test": {
        "f1_high": round(scores["f1_positive"], 4), "f1_high_ci95": [round(v, 4) for v in scores["ci95"]["f1_positive"]],
        "at_risk_recall": wilson(sum(level != "none" for level in levels), len(levels)),
        "high_recall_of_gold_high": wilson(sum(lv == "high" for lv, g in zip(levels, gold, strict=True) if g == ("high",)),
                                           sum(g == ("high",) for g in gold)),
        "published_f1_high": next(p["value"] for p in task.published if p["metric"] == "f1_positive")}}
    for name, dataset, part in ORDINARY:
        levels = risk_levels(analyzer, load(dataset, part, data_dir))
        out[name] = {"at_risk": wilson(sum(lv != "none" for lv in levels), len(levels)),
                     "high": wilson(sum(lv == "high" for lv in levels), len(levels))}
    for name, rows in hard_sets().items():
        levels = risk_levels(analyzer, [row["text"] for row in rows])
        kinds: dict[str, list[str]] = defaultdict(list)
        for row, level in zip(rows, levels, strict=True):
            kinds[row["kind"]].append(level)
        block = {"high": wilson(levels.count("high"), len(levels)),
                 "at_risk": wilson(sum(lv != "none" for lv in levels), len(levels)),
                 "by_kind": {k: {"high": round(v.count("high") / len(v), 4),
                                 "at_risk": round(sum(x != "none" for x in v) / len(v), 4), "n": len(v)}
                             for k, v in sorted(kinds.items())}}
        out[name] = block
    return out


def distortion_block(analyzer: Analyzer, data_dir: Path | None) -> dict[str, Any]:
    task = get_task(CD)
    test, _ = load_split(CD, "test", data_dir)
    decided = distortions(analyzer, [p.text for p in test])
    scores = score(task, [p.labels for p in test], decided, n_resamples=1000)
    cogdis = get_loader("cogdis").load(data_dir or Path(os.environ["MENTALGLM_DATA_DIR"]), "test")[0]
    negatives = [p.text for p in cogdis if p.labels == ("0",)]
    positives = [p.text for p in cogdis if p.labels == ("1",)]
    ordinary = distortions(analyzer, load("smp2020_ewect", "usual_test", data_dir))
    return {
        "socialcd3k_test": {"micro_f1": round(scores["micro_f1"], 4),
                            "micro_f1_ci95": [round(v, 4) for v in scores["ci95"]["micro_f1"]],
                            "macro_f1": round(scores["macro_f1"], 4),
                            "given_a_distortion": wilson(sum(bool(d) for d in decided), len(decided)),
                            "published_micro_f1": next(p["value"] for p in task.published if p["metric"] == "micro_f1")},
        "cogdis_test_undistorted_decided_none": wilson(sum(not d for d in distortions(analyzer, negatives)),
                                                       len(negatives)),
        "cogdis_test_distorted_given_a_distortion": wilson(sum(bool(d) for d in distortions(analyzer, positives)),
                                                           len(positives)),
        "smp2020_usual_test_given_a_distortion": wilson(sum(bool(d) for d in ordinary), len(ordinary)),
    }


def speed(analyzer: Analyzer, texts: list[str], posts: int, runs: int) -> dict[str, Any]:
    """Posts a second, labels for every task, median of ``runs`` passes, each over ``posts`` posts no earlier pass
    read (the embedding reader keeps the last few hundred posts it embedded; a repeated pass would time that)."""
    try:
        timings = timed_passes(texts, posts, runs, lambda chunk: list(analyzer.analyze_many(chunk, batch_size=64)))
    except ValueError as exc:
        raise SystemExit(f"{exc}: lower --speed-posts or --runs") from exc
    return {"posts": posts, "runs": runs, "posts_per_second_median": round(posts / statistics.median(timings), 1),
            "seconds": [round(t, 2) for t in timings], "distinct_posts_per_run": True}


def markdown(name: str, r: dict[str, Any]) -> str:
    def rate(x: dict[str, Any]) -> str:
        return f"{x['rate']:.1%} [{x['ci95'][0]:.1%}, {x['ci95'][1]:.1%}] (n={x['n']})" if x.get("rate") is not None else "–"

    s, c = r["suicide_risk"], r["cognitive_distortion"]
    t = s["sos_hl_test"]
    lines = [f"# Screening benchmark: {name}", "", f"{r['machine']}; {r['date']}; artifacts {r['artifacts']}", "",
             "## Suicide risk (none / low / high)", "", "| set | at risk | high |", "|---|---|---|",
             f"| SOS-HL-1K test (all at risk) | recall {rate(t['at_risk_recall'])} | F1(high) {t['f1_high']:.3f} "
             f"[{t['f1_high_ci95'][0]:.3f}, {t['f1_high_ci95'][1]:.3f}] (published {t['published_f1_high']}) |"]
    for key, _, _ in ORDINARY:
        lines.append(f"| {key} (ordinary, never trained on) | {rate(s[key]['at_risk'])} | {rate(s[key]['high'])} |")
    for key in ("hard_negatives", "hard_positives"):
        lines.append(f"| {key} (invented) | {rate(s[key]['at_risk'])} | {rate(s[key]['high'])} |")
    for key in ("hard_negatives", "hard_positives"):
        lines += ["", f"{key} by kind: " + ", ".join(f"{k} high {v['high']:.0%} / at risk {v['at_risk']:.0%} (n={v['n']})"
                                                   for k, v in s[key]["by_kind"].items())]
    sc = c["socialcd3k_test"]
    lines += ["", "## Cognitive distortion", "", "| measure | value |", "|---|---|",
              f"| SocialCD-3K test micro-F1 | {sc['micro_f1']:.3f} [{sc['micro_f1_ci95'][0]:.3f}, {sc['micro_f1_ci95'][1]:.3f}] "
              f"(published {sc['published_micro_f1']}; macro {sc['macro_f1']:.3f}) |",
              f"| SocialCD-3K test posts given a distortion | {rate(sc['given_a_distortion'])} |",
              f"| CogDis held-out undistorted decided none | {rate(c['cogdis_test_undistorted_decided_none'])} |",
              f"| CogDis held-out distorted given a distortion | {rate(c['cogdis_test_distorted_given_a_distortion'])} |",
              f"| SMP2020 usual test given a distortion | {rate(c['smp2020_usual_test_given_a_distortion'])} |",
              "", "## Speed", "",
              f"labels engine, three tasks, {r['speed']['posts']} SMP2020 posts: {r['speed']['posts_per_second_median']} "
              f"posts/s (median of {r['speed']['runs']} passes over different posts: {r['speed']['seconds']} s); cold start {r['cold_start_seconds']} s"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts-dir", type=Path, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--name", default="default")
    parser.add_argument("--speed-posts", type=int, default=1500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    analyzer = Analyzer(engine="labels", artifacts_dir=args.artifacts_dir)
    analyzer.analyze("今天天气不错。")
    cold = round(time.perf_counter() - started, 2)
    # Speed first: the sections below read the same ordinary posts, and the embedding reader remembers recent ones.
    timed = speed(analyzer, load("smp2020_ewect", "usual_test", args.data_dir), args.speed_posts, args.runs)
    single_task = {task: Analyzer(tasks=[task], engine="labels", artifacts_dir=args.artifacts_dir) for task in (RISK, CD)}
    result = {
        "date": dt.date.today().isoformat(), "artifacts": str(args.artifacts_dir or "default"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"MENTALGLM_THREADS={os.environ.get('MENTALGLM_THREADS', 'unset')}",
        "cold_start_seconds": cold,
        "suicide_risk": suicide_block(single_task[RISK], args.data_dir),
        "cognitive_distortion": distortion_block(single_task[CD], args.data_dir),
        "speed": timed,
    }
    out = ROOT / "results" / "screening"
    atomic_write_text(out / f"{args.name}.json", json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    atomic_write_text(out / f"{args.name}.md", markdown(args.name, result))
    print(markdown(args.name, result))


if __name__ == "__main__":
    main()
