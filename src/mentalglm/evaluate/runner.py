"""Score prediction files without re-running models, and run the systems that produce them.

``evaluate_file`` is the only place predictions become results: it checks every row against the
split (unknown ids, duplicates, gold that disagrees with the data), scores strict and flexible
parsing side by side with bootstrap CIs, and writes one results JSON per (system, task, split).
Baselines and LLM runs only produce predictions and then call it, so every number in the report
went through the same checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from mentalglm.backends.base import Backend, GenerationSettings
from mentalglm.data.records import Post
from mentalglm.data.sampling import select_posts
from mentalglm.errors import ConfigError
from mentalglm.evaluate.bertscore import EMBEDDED_ENCODER, BertScorer
from mentalglm.evaluate.explanations import ExplainedAnswer, explanation_scores
from mentalglm.evaluate.judge import Judge
from mentalglm.evaluate.predict import (
    ClassifierSystem,
    LLMSystem,
    PredictionFileError,
    machine_info,
    now_iso,
    pick_shots,
    read_meta,
    read_rows,
    run_predictions,
    slug,
)
from mentalglm.evaluate.results import write_results
from mentalglm.files import sha256_file
from mentalglm.instruct.qc import Verifier
from mentalglm.seeds import DEFAULT_SEED
from mentalglm.tasks.counts import per_label
from mentalglm.tasks.metrics import DEFAULT_RESAMPLES, encode, score
from mentalglm.tasks.parsing import MODES
from mentalglm.tasks.registry import get_task
from mentalglm.tasks.schema import Task, TaskType
from mentalglm.train.classical import C_GRID, fit_best_c

# The mode whose official metric is the headline number: what the model meant. Strict (format
# compliance included) is always reported beside it.
HEADLINE_MODE = "flexible"
REQUIRED_KEYS = ("id", "task", "split", "gold", "pred_strict", "pred_flexible", "valid_strict", "valid_flexible")

# Prediction rows quote posts (prompts, answers) and carry gold labels: they stay out of version control
# (outputs/ is git-ignored). Results JSON and reports hold only aggregates and may be committed.
from mentalglm.evaluate.defaults import PREDICTIONS_DIR, RESULTS_DIR  # noqa: E402  (re-exported)

SplitIndex = Callable[[str, str], Mapping[str, Post]]


def split_index(data_dir: str | Path | None = None) -> SplitIndex:
    """Posts by id of a canonical split, loaded once per (task, split)."""
    from mentalglm.data.splits import load_split

    @cache
    def lookup(task_id: str, split: str) -> Mapping[str, Post]:
        posts, _ = load_split(task_id, split, data_dir)
        return {p.id: p for p in posts}

    return lookup


def index_of(splits: Mapping[str, Sequence[Post]]) -> SplitIndex:
    """A ``SplitIndex`` over splits already in memory (tests, or a baseline that just loaded them)."""
    return lambda task_id, split: {p.id: p for p in splits[split]}


@dataclass
class RowGroup:
    system: str
    task: str
    split: str
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def group_rows(path: Path, rows: Sequence[tuple[int, dict[str, Any]]]) -> list[RowGroup]:
    """Rows by (system, task, split), in order of first appearance: a file may mix tasks."""
    groups: dict[tuple[str, str, str], RowGroup] = {}
    for number, row in rows:
        missing = [key for key in REQUIRED_KEYS if key not in row]
        if missing:
            raise PredictionFileError(path, number, f"row lacks {missing}; rows are written by `mentalglm predict`")
        key = (str(row.get("system", "")), str(row["task"]), str(row["split"]))
        groups.setdefault(key, RowGroup(*key)).rows.append((number, row))
    return list(groups.values())


def check_group(path: Path, group: RowGroup, posts: Mapping[str, Post] | None) -> None:
    """Each id once, every id in the split, gold as the split has it: a file that fails belongs to other data."""
    first_line: dict[str, int] = {}
    where = f"task {group.task!r}, split {group.split!r}"
    for number, row in group.rows:
        post_id = str(row["id"])
        if post_id in first_line:
            raise PredictionFileError(path, number, f"id {post_id!r} is already on line {first_line[post_id]} "
                                      f"({where}, system {group.system!r}); keep one of the two rows")
        first_line[post_id] = number
        if posts is None:
            continue
        if post_id not in posts:
            raise PredictionFileError(path, number, f"id {post_id!r} is not in {where} ({len(posts)} posts): "
                                      "the predictions were made on other data")
        if set(row["gold"]) != set(posts[post_id].labels):
            raise PredictionFileError(path, number, f"gold {row['gold']} of id {post_id!r} differs from the "
                                      f"split's {list(posts[post_id].labels)}")


def _mode_scores(task: Task, rows: Sequence[dict[str, Any]], mode: str, n_resamples: int, seed: int,
                 label_list: Sequence[str] | None = None) -> dict[str, Any]:
    gold = [tuple(r["gold"]) for r in rows]
    pred = [tuple(r[f"pred_{mode}"]) if r[f"valid_{mode}"] else None for r in rows]
    result = score(task, gold, pred, n_resamples=n_resamples, seed=seed, label_list=label_list)
    if "per_label" not in result:  # the report draws per-label bars for every task
        enc = encode(task, gold, pred)
        result["per_label"] = per_label(enc.y_true, enc.y_pred, enc.classes)
    return result


def score_group(task: Task, group: RowGroup, posts: Mapping[str, Post] | None, *,
                n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, verifier: Verifier | None = None,
                bertscore: BertScorer | None = None, label_list: Sequence[str] | None = None) -> dict[str, Any]:
    """Strict and flexible scores, the headline value with its CI, throughput and explanation scores.

    A hierarchical task needs ``label_list`` (its label.txt): the children its macro averages run over.
    """
    if task.type is TaskType.HIERARCHICAL and label_list is None:
        raise ConfigError(f"task {task.id!r} is hierarchical: score it with `mentalglm pathway evaluate PREDICTIONS "
                          "--pathway-dir DIR`, whose label.txt names the children (docs/pathway.md)")
    rows = [row for _, row in group.rows]
    modes: dict[str, dict[str, Any]] = {mode: _mode_scores(task, rows, mode, n_resamples, seed, label_list)
                                        for mode in MODES}
    headline = modes[HEADLINE_MODE]
    latency = sum(float(r.get("latency_s") or 0.0) for r in rows)
    metrics: dict[str, Any] = {
        "headline": {"mode": HEADLINE_MODE, "metric": task.official_metric, "value": headline[task.official_metric],
                     "ci95": headline["ci95"].get(task.official_metric), "invalid_rate": headline["n_invalid"] / len(rows)},
        **modes,
        "n": len(rows),
        "split_size": len(posts) if posts is not None else None,
        "backend_errors": sum(1 for r in rows if r.get("error")),
        "posts_per_s": len(rows) / latency if latency > 0 else None,
    }
    if posts is not None:
        answers = [ExplainedAnswer(r.get("explanation") or "", posts[str(r["id"])].text,
                                   tuple(r["pred_flexible"]) if r["valid_flexible"] else (),
                                   posts[str(r["id"])].meta.get("explanation"))
                   for r in rows]
        metrics["explanations"] = explanation_scores(task, answers, verifier, bertscore)
    return metrics


def results_path(predictions: Path, out: Path | None, group: RowGroup, groups: Sequence[RowGroup]) -> Path:
    """``out`` (or ``<predictions>.results.json``) for a one-group file, else one file per group named by
    the parts that differ between groups."""
    base = out or predictions.with_name(predictions.stem + ".results.json")
    if len(groups) == 1:
        return base
    parts = [getattr(group, name) for name in ("system", "task", "split")
             if len({getattr(g, name) for g in groups}) > 1]
    stem = base.name.removesuffix(".json")
    return base.with_name(f"{stem}.{'.'.join(slug(p) for p in parts)}.json")


def evaluate_file(predictions: Path, out: Path | None = None, *, index: SplitIndex | None,
                  n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                  verifier_for: Callable[[Task], Verifier] | None = None,
                  bertscore: BertScorer | str | None = EMBEDDED_ENCODER, judge: Judge | None = None,
                  label_list: Sequence[str] | None = None, run_extra: Mapping[str, Any] | None = None) -> list[Path]:
    """Check and score a predictions JSONL; one results JSON per (system, task, split) in it.

    ``index=None`` skips the check against the split (and the explanation scores, which need the posts).
    ``bertscore`` (an encoder spec or a scorer; None: off) only loads its model when references exist;
    ``judge`` writes its per-answer scores and rubric beside each results JSON. ``label_list`` is the
    label.txt of a hierarchical task; ``run_extra`` is added to each results file's ``run`` (which files).
    """
    if judge is not None and index is None:
        raise ConfigError("the judge needs the posts: keep the check against the split on (drop --no-check-ids)")
    scorer = BertScorer(bertscore) if isinstance(bertscore, str) else bertscore
    rows = read_rows(predictions)
    if not rows:
        raise PredictionFileError(predictions, 1, "no prediction rows")
    groups = group_rows(predictions, rows)
    meta = read_meta(predictions)
    written = []
    for group in groups:
        task = get_task(group.task)
        posts = index(task.id, group.split) if index is not None else None
        check_group(predictions, group, posts)
        verifier = verifier_for(task) if verifier_for is not None else None
        metrics = score_group(task, group, posts, n_resamples=n_resamples, seed=seed, verifier=verifier,
                              bertscore=scorer, label_list=label_list)
        target = results_path(predictions, out, group, groups)
        if judge is not None and posts is not None:
            metrics["judge"] = judge.score_rows(task, [row for _, row in group.rows], posts, target)
        produced = meta if (meta.get("system"), meta.get("task")) == (group.system, group.task) else {}
        run = {
            "system": group.system, "split": group.split, "predictions": str(predictions),
            "predictions_sha256": sha256_file(predictions), "evaluated": now_iso(),
            "date": produced.get("date") or now_iso(), "machine": produced.get("machine") or machine_info(),
            "peak_rss_mb": produced.get("peak_rss_mb"), "config_sha256": produced.get("config_sha256"),
            "data_sha256": produced.get("data_sha256"), "prediction_run": produced or None, **(run_extra or {}),
        }
        written.append(write_results(target, task, metrics, run))
    return written


# --- systems that produce predictions --------------------------------------------------------------


def fresh(path: Path) -> Path:
    """Baselines retrain from scratch, so their old rows must not be resumed."""
    path.unlink(missing_ok=True)
    path.with_name(path.stem + ".meta.json").unlink(missing_ok=True)
    return path


def run_tfidf_baseline(task_id: str, data_dir: str | Path | None, *, split: str = "test",
                       predictions_dir: Path = PREDICTIONS_DIR, results_dir: Path = RESULTS_DIR,
                       c_grid: Sequence[float] = C_GRID, n_resamples: int = DEFAULT_RESAMPLES,
                       progress: bool = True) -> tuple[Path, Path]:
    """Character TF-IDF + logistic regression on the decontaminated training pool (extra sources left out).

    C is chosen on validation by the official metric (multi-label thresholds are tuned there too), then
    the chosen model predicts ``split``. Returns (predictions, results).
    """
    from mentalglm.data.splits import canonical_splits
    task = get_task(task_id)
    started = time.perf_counter()
    splits, report = canonical_splits(task.id, data_dir, include_extra=False)
    train, validation = splits["train"], splits.get("validation", [])
    best, tuning = fit_best_c(task, train, validation, c_grid)
    config = {"model": "char TF-IDF (1-3) + logistic regression", "C": best.C, "ngram_range": best.ngram_range,
              "max_features": best.max_features, "threshold": best.thresholds[0] if best.multi_label else None,
              "validation_" + task.official_metric: tuning, "train_posts": len(train),
              "pool_dropped": report.pool.dropped, "validation_dropped_against_test": report.dropped_against_test}
    system = ClassifierSystem("tfidf-char-lr", best.predict, config)
    predictions = fresh(predictions_dir / f"{task.id}.{split}.tfidf.jsonl")
    run_predictions(task, split, splits[split], system, predictions, progress=progress,
                    extra_meta={"train_seconds": round(time.perf_counter() - started, 3)})
    results = evaluate_file(predictions, results_dir / f"{task.id}.{split}.tfidf.results.json",
                            index=index_of(splits), n_resamples=n_resamples)
    return predictions, results[0]


ENCODER_DIR = Path("outputs/encoder")


def run_encoder_baseline(task_id: str, data_dir: str | Path | None, *, split: str = "test",
                         predictions_dir: Path = PREDICTIONS_DIR, results_dir: Path = RESULTS_DIR,
                         settings: Any = None, out: Path | None = None, n_resamples: int = DEFAULT_RESAMPLES,
                         progress: bool = True, splits: Mapping[str, Sequence[Post]] | None = None) -> tuple[Path, Path]:
    """A transformer encoder fine-tuned on the decontaminated training pool (train/encoder.py).

    The checkpoint is chosen on validation by the official metric (multi-label thresholds are tuned there
    too), then the chosen model predicts ``split``. ``out`` keeps the run (default outputs/encoder/TASK.MODEL);
    ``splits`` replaces the data directory (tests). Returns (predictions, results).
    """
    from mentalglm.data.splits import canonical_splits
    from mentalglm.train.encoder import EncoderSettings, fit_encoder

    task = get_task(task_id)
    settings = settings or EncoderSettings()
    started = time.perf_counter()
    provenance: dict[str, Any] = {}
    if splits is None:
        splits, report = canonical_splits(task.id, data_dir, include_extra=False)
        provenance = {"pool_dropped": report.pool.dropped,
                      "validation_dropped_against_test": report.dropped_against_test}
    out = out or ENCODER_DIR / f"{task.id}.{slug(settings.slug)}"
    classifier, summary = fit_encoder(task, splits["train"], splits.get("validation", []), settings, out,
                                      progress=progress)
    varying = ("train_seconds", "resumed_from", "model_dir")  # this invocation's, not the configuration's
    config = {"model": f"fine-tuned encoder ({settings.model}), mean pooling + linear head",
              "settings": asdict(settings), **{k: v for k, v in summary.items() if k not in varying}, **provenance}
    # a model trained on a subset of the pool is another system: say so in its name and in every report row
    name = f"encoder-{settings.slug}" + (f"-train{settings.limit_train}" if settings.limit_train else "")
    system = ClassifierSystem(name, classifier.predict, config, batch_size=settings.eval_batch_size)
    stem = f"{task.id}.{split}.{slug(name)}"
    predictions = fresh(predictions_dir / f"{stem}.jsonl")
    run_predictions(task, split, splits[split], system, predictions, progress=progress, extra_meta={
        "train_seconds": round(time.perf_counter() - started, 3), "run_dir": str(out),
        "model_dir": summary.get("model_dir"), "resumed_from": summary.get("resumed_from")})
    results = evaluate_file(predictions, results_dir / f"{stem}.results.json", index=index_of(splits),
                            n_resamples=n_resamples)
    return predictions, results[0]


BASELINES: dict[str, Callable[..., tuple[Path, Path]]] = {"tfidf": run_tfidf_baseline,
                                                          "encoder": run_encoder_baseline}


def run_llm(task_id: str, backend: Backend, spec: str, *, split: str = "test", data_dir: str | Path | None = None,
            limit: int | None = None, few_shot: int = 0, seed: int = DEFAULT_SEED, out: Path,
            settings: GenerationSettings | None = None, with_format_hint: bool = False, batch_size: int = 1,
            name: str = "", progress: bool = True) -> Path:
    """Prompt ``backend`` on (a stratified ``limit`` of) a split; few-shot examples come from the training
    pool, which is decontaminated against the evaluation splits. Returns the predictions file."""
    from mentalglm.data.splits import canonical_splits, load_split

    task = get_task(task_id)
    if few_shot:
        splits, _ = canonical_splits(task.id, data_dir, include_extra=False)
        posts, shots = splits[split], pick_shots(splits["train"], few_shot, seed)
    else:
        posts, shots = load_split(task.id, split, data_dir)[0], []
    system = LLMSystem(backend, spec, shots, settings or GenerationSettings(max_new_tokens=256),
                       with_format_hint, batch_size, name)
    chosen = select_posts(posts, limit, seed)
    selection = {"split_size": len(posts), "limit": limit, "seed": seed,
                 "selection": "all" if len(chosen) == len(posts) else "stratified by label (rarest label), seeded"}
    run_predictions(task, split, chosen, system, out, progress=progress, extra_meta=selection)
    return out


def tfidf_verifier(data_dir: str | Path | None = None) -> Callable[[Task], Verifier]:
    """A label-consistency verifier per task: TF-IDF trained on the task's decontaminated training pool."""
    from mentalglm.data.splits import canonical_splits
    from mentalglm.train.classical import TfidfVerifier, fit_on_posts

    def build(task: Task) -> Verifier:
        splits, _ = canonical_splits(task.id, data_dir, include_extra=False)
        return TfidfVerifier(fit_on_posts(task, splits["train"], splits.get("validation", [])))

    return build
