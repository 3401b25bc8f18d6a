"""Does averaging encoder seeds, or mixing in TF-IDF, help? Measured on validation and by k-fold cross-validation.

    MENTALGLM_DATA_DIR=../shared/data python benchmarks/encoder_seeds.py compare --task emotion --seeds 13,14 \\
        --artifacts-dir ~/.cache/mentalglm/analyzer-ensemble
    MENTALGLM_DATA_DIR=../shared/data python benchmarks/encoder_seeds.py cv --task suicide_risk --seeds 13,14 \\
        --runs ~/.cache/mentalglm/encoder-seed-cv

``compare`` trains (or reuses, in the tier's ``encoder-runs/``, named as ``analyze-train --encoder-seeds`` names
them) the task's encoder from each seed, and reports on the validation split: each seed alone, the average, the
TF-IDF ensemble of the first seed and of the average (weight chosen as the tier chooses it), and how often the
average's ensemble beats the one seed's on paired bootstrap resamples. The TF-IDF model is the tier's own.

``cv`` is for a task whose validation split is too small to rank recipes (suicide risk: 100 posts). It pools the
task's train and validation posts, cuts k stratified folds, trains TF-IDF (C from ``--tfidf-c``) and each seed's
encoder (the tier's recipe, last epoch: there is no validation to select on) on k-1 folds, and scores the held-out
fold. It reports F1 pooled over every post for each TF-IDF weight, per seed and averaged. Runs resume; a run
finished before is only read. No test split is read by either. Writes results/encoder-seeds/<task>.<mode>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.analyze.artifacts import default_artifacts_dir
from mentalglm.analyze.ensemble import WEIGHT_GRID, AveragedEncoders, Ensemble, fit_ensemble
from mentalglm.analyze.recipe import encoder_run_dir, encoder_settings
from mentalglm.data.records import Post
from mentalglm.data.splits import canonical_splits
from mentalglm.files import atomic_write_text
from mentalglm.tasks import Task, get_task
from mentalglm.tasks.metrics import paired_win_rate, score
from mentalglm.train.classical import TfidfClassifier, decide, fit_on_posts
from mentalglm.train.encoder import fit_encoder

ROOT = Path(__file__).resolve().parents[1]


class _Fixed:
    """Probabilities computed once (an encoder's or an average's), handed to the ensemble code as an encoder."""

    def __init__(self, proba: np.ndarray) -> None:
        self.proba = proba

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.proba


def _metric(task: Task, gold: list[tuple[str, ...]], predicted: list[tuple[str, ...]]) -> float:
    return round(float(score(task, gold, predicted, n_resamples=0)[task.official_metric]), 4)


def compare(task: Task, data_dir: str, seeds: list[int], artifacts: Path) -> dict[str, Any]:
    splits, _ = canonical_splits(task.id, data_dir, include_extra=False)
    train, validation = splits["train"], splits["validation"]
    texts, gold = [p.text for p in validation], [p.labels for p in validation]
    tfidf = TfidfClassifier.load(artifacts / f"{task.id}.tfidf.pkl")
    p_tfidf = tfidf.predict_proba(texts)
    members = {}
    for seed in seeds:
        settings = replace(encoder_settings(task.id), seed=seed)
        encoder, _ = fit_encoder(task, train, validation, settings, encoder_run_dir(artifacts / "encoder-runs", task,
                                                                                   settings), progress=False)
        members[seed] = encoder
    proba = {seed: member.predict_proba(texts) for seed, member in members.items()}
    average = AveragedEncoders(list(members.values()))
    proba["average"] = np.mean([proba[s] for s in seeds], axis=0)
    assert np.allclose(proba["average"], average.predict_proba(texts))  # the analyzer's average is this one
    rows: dict[str, Any] = {}
    ensembles: dict[str, Ensemble] = {}
    for name, p in proba.items():
        ensemble, record = fit_ensemble(task, tfidf, _Fixed(p), texts, gold)  # type: ignore[arg-type]
        ensembles[str(name)] = ensemble
        by_weight = record[f"validation_{task.official_metric}_by_weight"]
        rows[str(name)] = {"encoder_alone": by_weight["0.0"], "ensemble": by_weight[str(ensemble.weight)],
                           "weight_on_tfidf": ensemble.weight}
    one, avg = ensembles[str(seeds[0])], ensembles["average"]
    win = paired_win_rate(task, gold, avg.decide(avg.combine(p_tfidf, proba["average"])),
                          one.decide(one.combine(p_tfidf, proba[seeds[0]])), n_resamples=1000)
    return {"validation_posts": len(validation), "rows": rows, "average_over_first_seed_win_rate": round(win, 3)}


def folds(posts: list[Post], k: int) -> list[np.ndarray]:
    """Held-out indices of k stratified folds (by each post's first label), fixed by random_state 0."""
    from sklearn.model_selection import StratifiedKFold

    labels = [p.labels[0] for p in posts]
    return [held for _, held in StratifiedKFold(k, shuffle=True, random_state=0).split(np.zeros(len(posts)), labels)]


def cross_validate(task: Task, data_dir: str, seeds: list[int], runs: Path, k: int, c: float) -> dict[str, Any]:
    if task.is_multi_label:
        raise SystemExit(f"cv covers single-label tasks; {task.id} is multi-label")
    splits, _ = canonical_splits(task.id, data_dir, include_extra=False)
    pool = splits["train"] + splits["validation"]
    order: list[int] = []
    proba: dict[str, list[np.ndarray]] = {"tfidf": [], **{str(s): [] for s in seeds}}
    for fold, held in enumerate(folds(pool, k)):
        kept = set(held.tolist())
        train, test = [p for i, p in enumerate(pool) if i not in kept], [pool[i] for i in held]
        texts = [p.text for p in test]
        order.extend(held.tolist())
        proba["tfidf"].append(fit_on_posts(task, train, [], C=c).predict_proba(texts))
        for seed in seeds:
            settings = replace(encoder_settings(task.id), seed=seed)
            encoder, _ = fit_encoder(task, train, [], settings, runs / f"{task.id}.fold{fold}.seed{seed}", progress=False)
            proba[str(seed)].append(encoder.predict_proba(texts))
            print(f"fold {fold}, seed {seed}: done", flush=True)
    gold = [pool[i].labels for i in order]
    stacked = {name: np.concatenate(parts) for name, parts in proba.items()}
    stacked["average"] = np.mean([stacked[str(s)] for s in seeds], axis=0)
    classes = list(task.label_ids)  # the column order of TF-IDF's and the encoders' probabilities
    rows = {name: {str(w): _metric(task, gold, decide(w * stacked["tfidf"] + (1 - w) * stacked[name], classes, False))
                   for w in WEIGHT_GRID} for name in [*(str(s) for s in seeds), "average"]}
    return {"posts": len(pool), "folds": k, "tfidf_C": c,
            "tfidf_alone": _metric(task, gold, decide(stacked["tfidf"], classes, False)),
            f"pooled_{task.official_metric}_by_weight_on_tfidf": rows}


def _markdown(task: Task, mode: str, record: dict[str, Any]) -> list[str]:
    metric = task.official_metric
    if mode == "compare":
        lines = [f"# Encoder seeds, {task.id}: validation {metric} ({record['validation_posts']} posts)", "",
                 "| encoder | alone | TF-IDF ensemble | weight on TF-IDF |", "|---|---|---|---|"]
        lines += [f"| {name} | {r['encoder_alone']:.4f} | {r['ensemble']:.4f} | {r['weight_on_tfidf']} |"
                  for name, r in record["rows"].items()]
        return [*lines, "", "Average's ensemble beats the first seed's on "
                f"{record['average_over_first_seed_win_rate']:.1%} of 1,000 paired validation resamples."]
    rows = record[f"pooled_{metric}_by_weight_on_tfidf"]
    lines = [f"# Encoder seeds, {task.id}: {record['folds']}-fold CV over {record['posts']} train+validation posts, "
             f"pooled {metric}", "", f"TF-IDF alone (C={record['tfidf_C']}): {record['tfidf_alone']:.3f}", "",
             "| encoder | " + " | ".join(f"w={w}" for w in WEIGHT_GRID) + " |", "|---" * (len(WEIGHT_GRID) + 1) + "|"]
    return lines + [f"| {name} | " + " | ".join(f"{v:.3f}" for v in row.values()) + " |" for name, row in rows.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("compare", "cv"))
    parser.add_argument("--task", required=True)
    parser.add_argument("--seeds", default="13,14", help="comma-separated seeds")
    parser.add_argument("--data-dir", default=os.environ.get("MENTALGLM_DATA_DIR"))
    parser.add_argument("--artifacts-dir", type=Path, default=None, help="compare: the tier (its TF-IDF and runs)")
    parser.add_argument("--runs", type=Path, default=Path.home() / ".cache" / "mentalglm" / "encoder-seed-cv",
                        help="cv: where the fold runs checkpoint and resume")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--tfidf-c", type=float, default=1.0, help="cv: TF-IDF C (suicide risk's tier chose 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "encoder-seeds")
    args = parser.parse_args(argv)
    if not args.data_dir:
        raise SystemExit("no data directory: pass --data-dir or set MENTALGLM_DATA_DIR")
    task, seeds = get_task(args.task), [int(s) for s in args.seeds.split(",")]
    if args.mode == "compare":
        record = compare(task, args.data_dir, seeds, (args.artifacts_dir or default_artifacts_dir()).expanduser())
    else:
        record = cross_validate(task, args.data_dir, seeds, args.runs.expanduser(), args.folds, args.tfidf_c)
    record = {"task": task.id, "mode": args.mode, "seeds": seeds, "when": dt.datetime.now().isoformat(timespec="seconds"),
              **record}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{task.id}.{args.mode}"
    atomic_write_text(args.out / f"{stem}.json", json.dumps(record, ensure_ascii=False, indent=1) + "\n")
    lines = _markdown(task, args.mode, record)
    atomic_write_text(args.out / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
