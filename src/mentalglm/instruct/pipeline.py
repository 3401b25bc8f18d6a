"""`mentalglm build`: labelled posts -> teacher explanations -> QC (with regeneration) -> C-IMHI files.

The order of work is chosen so that nothing is lost: every teacher answer is cached as it
arrives (``generate.ResultCache``), every QC verdict of every attempt is logged with its
reasons, and the exported files are written only at the end, atomically.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from mentalglm.backends.base import Backend, GenerationSettings
from mentalglm.data.instructions import Instruction, make_instruction
from mentalglm.data.pii import scrub
from mentalglm.data.records import Post
from mentalglm.data.sampling import stratified_sample
from mentalglm.files import atomic_write_text, write_jsonl
from mentalglm.instruct.export import export_explainer_rows, export_samples
from mentalglm.instruct.generate import (
    Draft,
    ResultCache,
    TeacherConfig,
    builtin_few_shots,
    generate_explanations,
    teacher_prompt_template,
)
from mentalglm.instruct.qc import (
    QCConfig,
    Verdict,
    Verifier,
    apply_verifier,
    check_sample,
    near_duplicates,
    read_verdicts,
    summarise,
    without_quotes,
)
from mentalglm.seeds import DEFAULT_SEED
from mentalglm.tasks.registry import get_task
from mentalglm.tasks.schema import Task

if TYPE_CHECKING:
    from mentalglm.train.classical import Classifier, TfidfVerifier


@dataclass
class BuildConfig:
    tasks: list[str]
    per_task: int = 200
    split: str = "train"
    seed: int = DEFAULT_SEED
    max_attempts: int = 3
    batch_size: int = 8
    # Reference explanations from the data (SOS-4K) when it has them, else the prompt file's invented example.
    few_shot: int = 1
    use_source_explanations: bool = False
    verifier: str = "tfidf"  # tfidf | none
    # On a teacher that follows grammars (llama.cpp): the grounded shape of instruct/grounding.py, so every draft
    # states its gold label and quotes the post; off, or on other teachers, the free-form prompt with few-shots.
    grounded: bool = True
    # Grounded: offer the teacher the clauses where the verifier's classifier reads the gold label (clause
    # occlusion, instruct/occlusion.py), as the hybrid engine does, instead of every clause of the post; all clauses
    # where none carries it. Off: every clause, as before 2026-12-05.
    quote_hints: bool = True
    settings: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=256))
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    qc: QCConfig = field(default_factory=QCConfig)


@dataclass
class TaskOutcome:
    task: str
    requested: int
    accepted: list[Instruction] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failures: int = 0
    generated: int = 0
    cached: int = 0
    seconds: float = 0.0
    attempts_used: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    # The verifier on the accepted explanations' own words (``prose_alone``): agreeing, read, abstained
    prose_alone: dict[str, int] = field(default_factory=dict)
    # Post id -> the prompt the hybrid engine would send for it (grounded drafts): the explainer's training rows
    engine_prompts: dict[str, list[dict[str, str]]] = field(default_factory=dict)


def _tfidf_verifier(task: Task, pool: Sequence[Post], sampled: Sequence[Post],
                    validation: Sequence[Post], cache_dir: Path) -> TfidfVerifier:
    """Trained on the pool minus the sampled posts: explanations quote their posts, so a verifier
    that had seen them could recognise the post instead of reading the explanation.

    Fitting on the 26K emotion posts takes minutes on one core, so the fitted verifier is kept in
    the run's cache, keyed by the posts it was trained on, and a resumed run reuses it.
    """
    import hashlib

    from mentalglm.train.classical import TfidfClassifier, TfidfVerifier, fit_on_posts

    sampled_ids = {p.id for p in sampled}
    train = [p for p in pool if p.id not in sampled_ids]
    digest = hashlib.sha256("\n".join(sorted(p.id for p in train)).encode()).hexdigest()[:16]
    path = cache_dir / f"verifier-{task.id}-{digest}.pkl"
    if path.exists():
        return TfidfVerifier(TfidfClassifier.load(path))
    classifier = fit_on_posts(task, train, validation)
    classifier.save(path)
    return TfidfVerifier(classifier)


def build_task(task: Task, pool: Sequence[Post], validation: Sequence[Post], backend: Backend | None,
               cache_store: ResultCache, config: BuildConfig, qc_log: list[dict[str, Any]],
               progress: tqdm | None = None) -> TaskOutcome:
    started = time.perf_counter()
    if backend is None:  # no teacher: only posts that come with an explanation can be built
        pool = [p for p in pool if p.meta.get("explanation")]
    sampled = stratified_sample(pool, config.per_task, config.seed)
    outcome = TaskOutcome(task.id, len(sampled))
    verifier = (_tfidf_verifier(task, pool, sampled, validation, cache_store.path.parent)
                if config.verifier == "tfidf" else None)
    quote_reader = verifier.classifier if verifier is not None and config.quote_hints else None
    few_shots = _few_shots(task, pool, sampled, config.few_shot, config.seed)
    pending = list(sampled)
    attempts = config.max_attempts if backend is not None else 1  # nothing can regenerate without a teacher
    for attempt in range(attempts):
        if not pending:
            break
        if attempt > 0 and progress is not None:  # retries are work too: keep done/total and the ETA honest
            progress.total += len(pending)
            progress.refresh()
        drafts = _drafts(task, pending, backend, cache_store, config, attempt, few_shots, outcome, progress,
                         quote_reader)
        verdicts = [check_sample(task, d.post.labels, d.explanation, d.post.text, config.qc) if d.error is None
                    else Verdict(False, [f"generation: {d.error}"], {"generated": False}) for d in drafts]
        checkable = [(d.post.labels, d.explanation) for d, v in zip(drafts, verdicts, strict=True)
                     if d.explanation and v.passed]
        if verifier is not None:
            apply_verifier(task, verifier, checkable,
                           [v for d, v in zip(drafts, verdicts, strict=True) if d.explanation and v.passed])
        pending = []
        for draft, verdict in zip(drafts, verdicts, strict=True):
            qc_log.append({"task": task.id, "post_id": draft.post.id, "attempt": attempt, "cached": draft.cached,
                           "explanation": draft.explanation, **verdict.to_dict()})
            if verdict.passed:
                outcome.accepted.append(make_instruction(task, draft.post, draft.explanation))
                if "engine_prompt" in draft.meta:
                    outcome.engine_prompts[draft.post.id] = draft.meta["engine_prompt"]
                outcome.attempts_used[attempt] += 1
            elif draft.error and draft.error.startswith(("empty post", "post has")):
                outcome.dropped["rejected before sending: " + draft.error.split(",")[0]] += 1
            else:
                pending.append(draft.post)
        if pending and attempt == attempts - 1:
            outcome.dropped[f"failed QC after {attempts} attempt(s)"] += len(pending)
    duplicates = near_duplicates([s.explanation or "" for s in outcome.accepted], config.qc.near_duplicate_jaccard)
    if duplicates:
        outcome.dropped["near-duplicate explanation"] += len(duplicates)
        for i in sorted(duplicates):
            qc_log.append({"task": task.id, "post_id": outcome.accepted[i].id, "attempt": -1, "passed": False,
                           "reasons": ["near_duplicate: repeats an earlier explanation"], "checks": {}})
        outcome.accepted = [s for i, s in enumerate(outcome.accepted) if i not in duplicates]
    if verifier is not None:
        outcome.prose_alone = prose_alone(task, verifier, outcome.accepted)
    outcome.seconds = time.perf_counter() - started
    return outcome


def prose_alone(task: Task, verifier: Verifier, accepted: Sequence[Instruction]) -> dict[str, int]:
    """How many accepted explanations the verifier still reads as their gold label with the quotes and the stated
    label emptied (``without_quotes``): with quote hints the verifier's own classifier chose the clauses quoted, so
    agreement on the explanation's own words is the independent part of its check."""
    read = read_verdicts(task, verifier, [without_quotes(s.explanation or "") for s in accepted])
    judged = [(r, s) for r, s in zip(read, accepted, strict=True) if r is not None]
    return {"agrees": sum(r.agrees(task, s.labels) for r, s in judged), "read": len(judged),
            "abstained": len(accepted) - len(judged)}


def _few_shots(task: Task, pool: Sequence[Post], sampled: Sequence[Post], k: int,
               seed: int) -> list[tuple[str, Sequence[str], str]]:
    """Few-shot examples from posts that carry a reference explanation and are not being built,
    else the invented example of the prompt file."""
    if k <= 0:
        return []
    sampled_ids = {p.id for p in sampled}
    candidates = [p for p in pool if p.id not in sampled_ids and p.meta.get("explanation")]
    if not candidates:
        return builtin_few_shots(task)[:k]
    picked = random.Random(seed).sample(candidates, min(k, len(candidates)))
    return [(p.text, p.labels, p.meta["explanation"]) for p in picked]


def _drafts(task: Task, posts: Sequence[Post], backend: Backend | None, cache_store: ResultCache,
            config: BuildConfig, attempt: int, few_shots: Sequence[tuple[str, Sequence[str], str]],
            outcome: TaskOutcome, progress: tqdm | None, quote_reader: Classifier | None = None) -> list[Draft]:
    drafts: list[Draft] = []
    to_generate: list[Post] = []
    for post in posts:
        if attempt == 0 and config.use_source_explanations and post.meta.get("explanation"):
            drafts.append(Draft(post, task.id, str(post.meta["explanation"]).strip(), 0, "source", cached=True))
            if progress is not None:
                progress.update(1)
        else:
            to_generate.append(post)
    if to_generate and backend is None:
        raise ValueError("posts without a source explanation need a teacher backend (--teacher)")
    if to_generate:
        def tick(ok: int, total: int) -> None:
            if progress is not None:
                progress.update(total)
        for draft in generate_explanations(task, to_generate, backend, cache_store, settings=config.settings,
                                           config=config.teacher, attempt=attempt, few_shots=few_shots,
                                           batch_size=config.batch_size, on_progress=tick,
                                           grounded=config.grounded and backend.supports_grammar,
                                           quote_reader=quote_reader):
            drafts.append(draft)
            outcome.cached += draft.cached
            outcome.generated += not draft.cached and draft.error is None
            if draft.error and not draft.error.startswith(("empty post", "post has")):
                outcome.failures += 1
                if progress is not None:
                    progress.set_postfix(failures=outcome.failures)
    return drafts


def run_build(config: BuildConfig, data_dir: Path | None, out_dir: Path, backend: Backend | None,
              *, formats: Sequence[str] = ("chat", "alpaca", "hf")) -> dict[str, Any]:
    from mentalglm.data.splits import canonical_splits

    out_dir.mkdir(parents=True, exist_ok=True)
    cache_store = ResultCache(out_dir / "cache" / "teacher.jsonl")
    qc_log: list[dict[str, Any]] = []
    outcomes: list[TaskOutcome] = []
    decontamination: dict[str, Any] = {}
    loaded: list[tuple[Task, list[Post], list[Post]]] = []
    for task_id in config.tasks:
        task = get_task(task_id)
        splits, report = canonical_splits(task_id, data_dir, include_extra=config.use_source_explanations)
        decontamination[task_id] = {"training_pool": [asdict(s) for s in report.pool.sources],
                                    "validation_dropped_against_test": report.dropped_against_test}
        loaded.append((task, splits[config.split], splits.get("validation", [])))
    total = sum(min(config.per_task, len(pool)) for _, pool, _ in loaded)
    scrub("预热")  # jieba's dictionary (seconds) loads here, as start-up, not inside the timed build
    started = time.perf_counter()
    with tqdm(total=total, desc="teacher explanations", unit="post", dynamic_ncols=True) as progress:
        for task, pool, validation in loaded:
            progress.set_description(f"teacher explanations [{task.id}]")
            outcomes.append(build_task(task, pool, validation, backend, cache_store, config, qc_log, progress))
    elapsed = time.perf_counter() - started
    samples = [s for o in outcomes for s in o.accepted]
    exported = export_samples(samples, out_dir, config.split, formats)
    prompts = {(o.task, post_id): prompt for o in outcomes for post_id, prompt in o.engine_prompts.items()}
    # written on every build (empty without grounded drafts), so a rebuild never leaves an older run's rows behind
    exported["files"]["explainer"] = str(export_explainer_rows(samples, prompts, out_dir, config.split))
    write_jsonl(out_dir / "qc_log.jsonl", qc_log)
    summary = summarise([(row["task"], Verdict(row["passed"], row["reasons"], row["checks"], row.get("abstained", [])))
                         for row in qc_log if row["attempt"] == 0])
    report = {
        "teacher": backend.model_id if backend is not None else "source explanations only",
        "settings": asdict(config.settings),
        "teacher_prompt_version": teacher_prompt_template()["version"],
        "verifier": config.verifier,
        "grounded": bool(config.grounded and backend is not None and backend.supports_grammar),
        "quote_hints": bool(config.grounded and config.quote_hints and config.verifier != "none"),
        "seconds": round(elapsed, 1),
        "posts_per_s": round(sum(o.requested for o in outcomes) / elapsed, 4) if elapsed else None,
        "first_attempt_qc": summary,
        "tasks": {o.task: {"requested": o.requested, "accepted": len(o.accepted),
                           "acceptance_rate": round(len(o.accepted) / o.requested, 4) if o.requested else None,
                           "accepted_at_attempt": dict(o.attempts_used), "dropped": dict(o.dropped),
                           "backend_failures": o.failures, "generated": o.generated, "cached": o.cached,
                           "verifier_prose_alone": o.prose_alone,
                           "seconds": round(o.seconds, 1)} for o in outcomes},
        "pii_replaced": exported["pii_replaced"],
        "decontamination": decontamination,
        "files": exported["files"],
    }
    atomic_write_text(out_dir / "qc_report.json", json.dumps(report, ensure_ascii=False, indent=2))
    atomic_write_text(out_dir / "qc_report.md", qc_markdown(report))
    from mentalglm.instruct.card import dataset_card

    atomic_write_text(out_dir / "README.md", dataset_card({config.split: samples}, {
        "Teacher": {"model": report["teacher"], "settings": report["settings"], "grounded": report["grounded"],
                    "quote_hints": report["quote_hints"],
                    "prompt": teacher_prompt_template()},
        "Quality control": {k: report[k] for k in ("first_attempt_qc", "tasks")},
        "Decontamination": decontamination, "PII placeholders inserted": exported["pii_replaced"]}))
    return report


def qc_markdown(report: dict[str, Any]) -> str:
    lines = ["# C-IMHI build: quality-control report", "",
             f"Teacher: `{report['teacher']}`; verifier: {report['verifier']}; {report['seconds']} s "
             f"({report['posts_per_s']} posts/s).", "",
             "| task | requested | accepted | acceptance | first-attempt pass | dropped |", "|---|---|---|---|---|---|"]
    first = report["first_attempt_qc"]["tasks"]
    for task_id, row in report["tasks"].items():
        dropped = "; ".join(f"{k}: {v}" for k, v in row["dropped"].items()) or "-"
        rate = first.get(task_id, {}).get("pass_rate")
        lines.append(f"| {task_id} | {row['requested']} | {row['accepted']} | {row['acceptance_rate']} | {rate} | "
                     f"{dropped} |")
    lines += ["", "## First-attempt pass rate per check", "", "| task | " + " | ".join(_check_names(first)) + " |",
              "|---|" + "---|" * len(_check_names(first))]
    for task_id, row in first.items():
        rates = row["check_pass_rates"]
        lines.append(f"| {task_id} | " + " | ".join(str(rates.get(c, "-")) for c in _check_names(first)) + " |")
    lines += ["", "## Rejections by check (first attempt)", ""]
    lines += [f"- {k}: {v}" for k, v in report["first_attempt_qc"]["rejections_by_check"].items()] or ["- none"]
    alone = {t: row["verifier_prose_alone"] for t, row in report["tasks"].items() if row.get("verifier_prose_alone")}
    if alone:
        lines += ["", "## The verifier on the accepted explanations' own words (quotes and stated label emptied)", "",
                  f"Quote hints: {'on (the verifier chose the quoted clauses)' if report.get('quote_hints') else 'off'}.",
                  "", "| task | agrees | read | abstained |", "|---|---|---|---|"]
        lines += [f"| {t} | {a['agrees']} | {a['read']} | {a['abstained']} |" for t, a in alone.items()]
    return "\n".join(lines) + "\n"


def _check_names(first: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for row in first.values():
        names.extend(n for n in row["check_pass_rates"] if n not in names)
    return names
