"""Cognitive pathway systems on the user's files: the trained classifier or any LLM, scored like every task.

Prediction rows, resuming, strict / flexible parsing with INVALID counted and the results JSON are the runner's
(``evaluate/predict.py``, ``evaluate/runner.py``). What is particular to the pathway files lives here: the posts
come from ``--pathway-dir``; an LLM sees label.txt's children as labels of the task (``tasks.pathway.pathway_task``)
so that its answers can name them; scores are ``pathway_scores`` with label.txt (macro averages over its
children), and every results file records which files it was made from (their SHA-256).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mentalglm.backends.base import Backend, GenerationSettings
from mentalglm.data.loaders.cognitive_pathway import CognitivePathwayFiles, pathway_summary
from mentalglm.data.records import Post
from mentalglm.data.sampling import posts_sha256, select_posts
from mentalglm.data.splits import decontaminate
from mentalglm.evaluate.defaults import PREDICTIONS_DIR
from mentalglm.evaluate.predict import (
    ClassifierSystem,
    LLMSystem,
    llm_system_name,
    pick_shots,
    run_predictions,
    slug,
)
from mentalglm.evaluate.runner import SplitIndex, evaluate_file, fresh, index_of
from mentalglm.seeds import DEFAULT_SEED
from mentalglm.tasks.metrics import DEFAULT_RESAMPLES
from mentalglm.tasks.pathway import PATHWAY_TASK_ID, pathway_task, with_parents
from mentalglm.tasks.schema import Task
from mentalglm.train.pathway import load_pathway_model

SPLIT = "test"


@dataclass(frozen=True)
class PathwayFiles:
    """The user's files, loaded once: label.txt, the three parts, and what identifies them."""

    directory: str
    labels: tuple[str, ...]
    splits: dict[str, list[Post]]
    files_sha256: dict[str, str]

    @property
    def task(self) -> Task:
        """The task with label.txt's children as labels (what prompts, parsers and rows use)."""
        return pathway_task(self.labels)

    def index(self) -> SplitIndex:
        return index_of(self.splits)

    def run_meta(self) -> dict[str, Any]:
        return {"pathway_dir": self.directory, "pathway_files_sha256": self.files_sha256}


def read_pathway_files(pathway_dir: Path | str | None, data_dir: Path | str | None = None, *,
                       skip_bad_rows: bool = False) -> PathwayFiles:
    loader = CognitivePathwayFiles(pathway_dir)
    splits = {part: loader.load(data_dir, part, skip_bad_rows=skip_bad_rows)[0] for part in loader.parts()}
    return PathwayFiles(str(loader.root(data_dir)), loader.labels(data_dir), splits, loader.files_sha256(data_dir))


def default_predictions(system: str) -> Path:
    return PREDICTIONS_DIR / f"{PATHWAY_TASK_ID}.{SPLIT}.{slug(system)}.jsonl"


def classifier_system(model_dir: Path) -> ClassifierSystem:
    """The classifier `mentalglm pathway train` built, as a system of the runner."""
    model, card = load_pathway_model(model_dir)
    config = {"model": f"pathway classifier ({model.kind})", "model_dir": str(model_dir),
              "thresholds": card["model"]["thresholds"], "trained_on": card["data"]["files_sha256"]}
    return ClassifierSystem(f"pathway-{model.kind}", model.predict, config)


def run_classifier(model_dir: Path, files: PathwayFiles, out: Path | None = None, *,
                   progress: bool = True) -> Path:
    """Predict test.txt with the trained classifier (from scratch: a retrained model is another run)."""
    system = classifier_system(model_dir)
    out = fresh(out or default_predictions(system.name))
    run_predictions(files.task, SPLIT, files.splits[SPLIT], system, out, progress=progress,
                    extra_meta=files.run_meta())
    return out


def run_llm(backend: Backend, spec: str, files: PathwayFiles, out: Path | None = None, *, few_shot: int = 0,
            limit: int | None = None, seed: int = DEFAULT_SEED, settings: GenerationSettings | None = None,
            format_hint: bool = True, batch_size: int = 1, name: str = "", progress: bool = True) -> Path:
    """Prompt ``backend`` with the C-IMHI turns (children listed); few-shot examples from train.txt, never a
    sentence that is also in test.txt, answered with parents implied so the model sees both levels written.
    Resumable like `mentalglm predict`."""
    task = files.task
    train, _ = decontaminate(files.splits["train"], [files.splits[SPLIT]])
    pool = [replace(post, labels=with_parents(post.labels)) for post in train]
    system = LLMSystem(backend, spec, pick_shots(pool, few_shot, seed),
                       settings or GenerationSettings(max_new_tokens=256, seed=seed), format_hint, batch_size,
                       name or llm_system_name(spec, few_shot))
    posts = files.splits[SPLIT]
    chosen = select_posts(posts, limit, seed)
    out = out or default_predictions(system.name)
    run_predictions(task, SPLIT, chosen, system, out, progress=progress, extra_meta={
        **files.run_meta(), "split_size": len(posts), "limit": limit, "seed": seed,
        "selection": "all" if len(chosen) == len(posts) else "stratified by label (rarest label), seeded"})
    return out


def evaluate_predictions(predictions: Path, files: PathwayFiles, out: Path | None = None, *,
                         n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> list[Path]:
    """Check the rows against test.txt and score them with label.txt: flat, parent and child micro / macro F1,
    per label, bootstrap CIs, strict and flexible side by side, INVALID counted."""
    return evaluate_file(predictions, out, index=files.index(), n_resamples=n_resamples, seed=seed, bertscore=None,
                         label_list=files.labels, run_extra=files.run_meta())


def report_context(pathway_dir: Path | str | None, data_dir: Path | str | None = None) -> dict[str, Any]:
    """What the report's clinical generalisation section says about the files, and the hash of the test
    sentences that tells whether a results file was made on them."""
    summary = pathway_summary(pathway_dir, data_dir)
    test, _ = CognitivePathwayFiles(pathway_dir).load(data_dir, SPLIT)
    return {**summary, "test_data_sha256": posts_sha256(test)}
