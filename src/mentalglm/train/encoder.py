"""Fine-tuning a transformer encoder classifier: the embedded multilingual-e5-small, or any local HF encoder.

    OMP_NUM_THREADS=2 mentalglm baseline encoder --task suicide_risk                   # embedded e5-small
    mentalglm baseline encoder --task emotion --model hf:/models/chinese-mentalbert --epochs 2

The trained classifier, and how it is loaded, is train/encoder_classifier.py. Design choices, and why:

* The word embeddings are frozen by default (``freeze_embeddings``): they are 96 M of e5-small's 118 M
  parameters, their dense gradient and AdamW update made a CPU step about 3x slower here (batch 16 x 40
  tokens: 6-9 s against 2-3 s), and the posts of one task touch a few thousand of the 250 k rows anyway.
* Model selection sees validation only: the model is scored on it after every epoch (and at the last step)
  with the task's official metric, and the best one is kept. Multi-label tasks then get one threshold per
  label on the best model's validation probabilities: the micro-F1-best shared threshold first, then each
  label with at least ``MIN_THRESHOLD_SUPPORT`` validation positives moves its own threshold where micro-F1
  rises. Rarer labels keep the shared one: per-label thresholds on a handful of posts overfit (classical.py).
  Every post gets at least one label, as in the TF-IDF baseline.
* Runs resume: ``out`` holds the Trainer's checkpoints and ``run.json`` (the settings and training data that
  made them); a rerun with the same settings resumes the newest checkpoint, and a finished run (``done.json``
  beside ``final/``) is loaded instead of retrained. Checkpoints are deleted once ``final/`` is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from mentalglm.data.records import Post
from mentalglm.data.sampling import posts_sha256, select_posts
from mentalglm.errors import ConfigError
from mentalglm.files import atomic_write_text
from mentalglm.seeds import DEFAULT_SEED
from mentalglm.tasks.metrics import score
from mentalglm.tasks.schema import Task
from mentalglm.train.classical import THRESHOLD_GRID, decide
from mentalglm.train.encoder_classifier import (
    CLASSIFIER_FILE,
    EMBEDDED,
    HF_PREFIX,
    EncoderClassifier,
    PooledClassifier,
    load_encoder,
    probabilities,
    resolve_encoder,
)

log = logging.getLogger(__name__)

MIN_THRESHOLD_SUPPORT = 10
# Below this largest per-label std of validation probabilities a run is called collapsed: the collapsed cognitive-
# distortion LoRA (3 epochs) measured ~0.01, the healthy tier encoders far above (docs/analyze.md).
COLLAPSE_SPREAD = 0.03
RUN_FILE, DONE_FILE, FINAL_DIR = "run.json", "done.json", "final"
LOG_FILE = "train_log.csv"
# every linear layer of a BERT-style encoder (attention query/key/value/output, feed-forward in/out)
LORA_TARGETS = ["query", "key", "value", "dense"]
OPTIONAL_SETTINGS = {"pos_weight": 0.0}  # added after runs were recorded: at this value, absent from run.json


@dataclass(frozen=True)
class EncoderSettings:
    """What a run is made of; ``run.json`` keeps it so that a rerun resumes only the same run."""

    model: str = "e5-small"
    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 16
    max_length: int = 128
    lr: float = 5e-5
    seed: int = DEFAULT_SEED
    limit_train: int | None = None
    freeze_embeddings: bool = True
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    dropout: float = 0.1
    eval_batch_size: int = 64
    lora_rank: int = 0  # 0: fine-tune every encoder weight; r > 0: LoRA adapters of rank r, a few MB to ship
    # multi-label: each label's positives weigh negatives/positives in the BCE, capped here (0: unweighted), so
    # that rare distortions are not learnt as "never"
    pos_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_length", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"encoder {name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.max_steps is None and self.epochs <= 0:
            raise ConfigError(f"--epochs must be positive, got {self.epochs}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.lora_rank < 0:
            raise ConfigError(f"--lora-rank must be 0 (full fine-tuning) or positive, got {self.lora_rank}")
        if self.pos_weight < 0:
            raise ConfigError(f"--pos-weight must be 0 (off) or positive, got {self.pos_weight}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup ratio must be in [0, 1), got {self.warmup_ratio}")

    def identity(self) -> dict[str, Any]:
        """The settings as ``run.json`` records them; options at their off value are left out, so runs written
        before such an option existed still resume."""
        return {k: v for k, v in asdict(self).items() if not (k in OPTIONAL_SETTINGS and v == OPTIONAL_SETTINGS[k])}

    @property
    def slug(self) -> str:
        """The model part of system and directory names: ``e5-small`` or the local directory's name."""
        return self.model if self.model in EMBEDDED else Path(self.model.removeprefix(HF_PREFIX)).name


# --------------------------------------------------------------------------- decisions


def _indicator(proba: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    chosen = proba >= thresholds
    empty = ~chosen.any(axis=1)
    chosen[empty, proba[empty].argmax(axis=1)] = True
    return chosen


def _micro_f1(y: np.ndarray, chosen: np.ndarray) -> float:
    tp = float((chosen & y).sum())
    predicted, actual = float(chosen.sum()), float(y.sum())
    return 2 * tp / (predicted + actual) if predicted + actual else 0.0


def tune_thresholds(proba: np.ndarray, y: np.ndarray, *, grid: Sequence[float] = tuple(THRESHOLD_GRID),
                    min_support: int = MIN_THRESHOLD_SUPPORT) -> list[float]:
    """Per-label thresholds that maximise micro-F1 on (validation) ``proba`` against indicator rows ``y``.

    The best shared threshold first; then, label by label in order, a label with at least ``min_support``
    positives takes the grid value that raises micro-F1 most (ties keep the value nearest the shared one).
    """
    proba, y = np.asarray(proba, dtype=float), np.asarray(y).astype(bool)
    labels = proba.shape[1]
    shared_scores = [_micro_f1(y, _indicator(proba, np.full(labels, t))) for t in grid]
    shared = float(grid[int(np.argmax(shared_scores))])
    thresholds = np.full(labels, shared)
    best = max(shared_scores)
    by_distance = sorted(grid, key=lambda t: (abs(t - shared), t))
    for j in range(labels):
        if y[:, j].sum() < min_support:
            continue
        for t in by_distance:
            trial = thresholds.copy()
            trial[j] = t
            value = _micro_f1(y, _indicator(proba, trial))
            if value > best + 1e-12:
                best, thresholds = value, trial
    return [float(t) for t in thresholds]


def probability_spread(proba: np.ndarray) -> float:
    """The largest per-label standard deviation of the probabilities across posts: ~0 when a model gives every
    post the same answer (a collapsed fine-tune), whatever its metric says."""
    return float(proba.std(axis=0).max()) if len(proba) > 1 else 0.0


def positive_weights(y: np.ndarray, cap: float) -> torch.Tensor | None:
    """Per-label BCE weight of positives: negatives / positives in the training rows, between 1 and ``cap``."""
    if cap <= 0:
        return None
    positives = y.sum(axis=0)
    return torch.tensor(np.clip((len(y) - positives) / np.maximum(positives, 1), 1.0, cap), dtype=torch.float32)


def targets(task: Task, posts: Sequence[Post]) -> np.ndarray:
    """Class indices (single-label) or float indicator rows (multi-label) of the posts' gold labels."""
    classes = list(task.classifier_labels)
    if task.is_multi_label:
        y = np.zeros((len(posts), len(classes)), dtype=np.float32)
        for row, post in enumerate(posts):
            for name in post.labels:
                y[row, classes.index(name)] = 1.0
        return y
    return np.array([classes.index(post.labels[0]) for post in posts], dtype=np.int64)


# --------------------------------------------------------------------------- training


def _dataset(tokenizer: Any, prefix: str, posts: Sequence[Post], labels: np.ndarray, max_length: int) -> Any:
    from datasets import Dataset

    encoded = tokenizer([prefix + p.text for p in posts], truncation=True, max_length=max_length)
    columns = {key: encoded[key] for key in tokenizer.model_input_names if key in encoded}
    columns["labels"] = labels.tolist()
    return Dataset.from_dict(columns)


def score_probabilities(task: Task, proba: np.ndarray, y: np.ndarray) -> tuple[float, list[float]]:
    """The official metric of ``proba`` against ``targets`` rows ``y`` (multi-label: with thresholds tuned on
    them), and those thresholds: how a run's model is scored and selected on validation."""
    classes = list(task.classifier_labels)
    thresholds = tune_thresholds(proba, y) if task.is_multi_label else []
    gold = ([tuple(c for c, on in zip(classes, row, strict=True) if on) for row in y.astype(bool)]
            if task.is_multi_label else [(classes[int(i)],) for i in y])
    predicted = decide(proba, classes, task.is_multi_label, thresholds)
    return float(score(task, gold, predicted, n_resamples=0)[task.official_metric]), thresholds


def _metric_function(task: Task) -> Any:
    """Trainer's compute_metrics: the official metric on validation (multi-label: with tuned thresholds)."""

    def compute(prediction: Any) -> dict[str, float]:
        proba = probabilities(prediction.predictions, task.is_multi_label)
        return {task.official_metric: score_probabilities(task, proba, np.asarray(prediction.label_ids))[0]}

    return compute


def _callbacks(out: Path, evaluate: bool) -> list[Any]:
    from transformers import TrainerCallback

    from mentalglm.train.sft import _csv_callback_class

    class EvaluateAtLastStep(TrainerCallback):
        """A run of --max-steps (or a fractional epoch) still ends with a scored (given validation posts), saved
        model."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if state.global_step >= state.max_steps:
                control.should_save = True
                control.should_evaluate = evaluate
            return control

    return [EvaluateAtLastStep(), _csv_callback_class()(out / LOG_FILE)]


def _check_run(out: Path, identity: dict[str, Any]) -> None:
    """Refuse to resume checkpoints that another configuration or other training data wrote."""
    path = out / RUN_FILE
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != identity:
            def flat(record: dict[str, Any]) -> dict[str, Any]:  # settings by name: "other lr", not "other settings"
                return {**{k: v for k, v in record.items() if k != "settings"}, **record.get("settings", {})}

            before, now = flat(previous), flat(identity)
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            raise ConfigError(f"{out} holds a run with other {', '.join(changed)}; pass another --out or delete "
                              "the directory to start over")
    else:
        atomic_write_text(path, json.dumps(identity, ensure_ascii=False, indent=1) + "\n")


def _steps_per_epoch(n_train: int, batch_size: int) -> int:
    return max(1, -(-n_train // batch_size))


def fit_encoder(task: Task, train: Sequence[Post], validation: Sequence[Post], settings: EncoderSettings,
                out: Path, *, progress: bool = True, callbacks: Sequence[Any] = ()) -> tuple[EncoderClassifier,
                                                                                            dict[str, Any]]:
    """Fine-tune (or resume, or load the finished run in ``out``) and return the classifier and a summary."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    if not task.is_multi_label and any(len(p.labels) != 1 for p in train):
        raise ConfigError(f"task {task.id}: single-label training posts must carry exactly one label")
    if not task.is_multi_label and settings.pos_weight:
        raise ConfigError(f"--pos-weight weighs each label's positives in a multi-label loss; task {task.id} has "
                          "one label a post (leave it at 0)")
    train = select_posts(train, settings.limit_train, settings.seed)
    identity = {"task": task.id, "settings": settings.identity(), "train_sha256": posts_sha256(train),
                "validation_sha256": posts_sha256(validation)}
    out.mkdir(parents=True, exist_ok=True)
    _check_run(out, identity)
    if (out / DONE_FILE).is_file() and (out / FINAL_DIR / CLASSIFIER_FILE).is_file():
        log.info("encoder run in %s is finished: loading %s", out, out / FINAL_DIR)
        finished = EncoderClassifier.load(out / FINAL_DIR)
        summary = json.loads((out / DONE_FILE).read_text(encoding="utf-8"))
        if validation and "collapsed" not in summary:  # a run finished before the check: measure it once, keep it
            summary.update(_collapse_check(finished.predict_proba([p.text for p in validation]), out))
            atomic_write_text(out / DONE_FILE, json.dumps(summary, ensure_ascii=False, indent=1) + "\n")
        return finished, summary

    threads = os.environ.get("MENTALGLM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    started = time.perf_counter()
    path, prefix = resolve_encoder(settings.model)
    set_seed(settings.seed)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = load_encoder(path)
    if settings.freeze_embeddings:
        encoder.get_input_embeddings().weight.requires_grad_(False)
    if settings.lora_rank:
        from peft import LoraConfig, get_peft_model

        encoder = get_peft_model(encoder, LoraConfig(r=settings.lora_rank, lora_alpha=2 * settings.lora_rank,
                                                     lora_dropout=0.1, target_modules=LORA_TARGETS))
    train_targets = targets(task, train)
    weights = positive_weights(train_targets, settings.pos_weight)  # None unless asked (multi-label only, above)
    model = PooledClassifier(encoder, len(task.classifier_labels), task.is_multi_label, settings.dropout, weights)
    train_set = _dataset(tokenizer, prefix, train, train_targets, settings.max_length)
    eval_set = (_dataset(tokenizer, prefix, validation, targets(task, validation), settings.max_length)
                if validation else None)
    every = _steps_per_epoch(len(train), settings.batch_size)
    if settings.max_steps is not None:
        every = min(every, settings.max_steps)
    selection: dict[str, Any] = {"eval_strategy": "steps", "eval_steps": every, "load_best_model_at_end": True,
                 "metric_for_best_model": task.official_metric, "greater_is_better": True} if eval_set else {}
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.eval_batch_size, num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1, learning_rate=settings.lr, weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_ratio,  # transformers 5: a value below 1 is a ratio of the total steps
        lr_scheduler_type="linear", save_strategy="steps", save_steps=every, save_total_limit=1,
        logging_steps=max(1, min(50, every // 4)), seed=settings.seed, data_seed=settings.seed,
        train_sampling_strategy="group_by_length", report_to="none", disable_tqdm=not progress,
        dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(), **selection,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                      data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                      compute_metrics=_metric_function(task) if eval_set else None,
                      callbacks=[*_callbacks(out, eval_set is not None), *callbacks])
    checkpoint = get_last_checkpoint(str(out))
    if checkpoint:
        log.info("resuming the encoder run from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    model = cast(PooledClassifier, trainer.model)  # the best checkpoint's weights (load_best_model_at_end)
    classifier = EncoderClassifier(model, tokenizer, task.id, list(task.classifier_labels), task.is_multi_label, prefix,
                                   settings.max_length, batch_size=settings.eval_batch_size,
                                   base=settings.model if settings.lora_rank else None)
    collapse: dict[str, Any] = {}
    if validation:
        val_proba = classifier.predict_proba([p.text for p in validation])
        if task.is_multi_label:
            classifier.thresholds = tune_thresholds(val_proba, targets(task, validation))
        collapse = _collapse_check(val_proba, out)
    evaluations = [entry for entry in trainer.state.log_history if f"eval_{task.official_metric}" in entry]
    seconds = time.perf_counter() - started
    summary = {
        "model": settings.model, "model_dir": str(path), "prefix": prefix, "pooling": "mean",
        "train_posts": len(train), "validation_posts": len(validation), "global_step": trainer.state.global_step,
        "train_loss": result.training_loss, "resumed_from": checkpoint,
        "best_checkpoint_step": _step_of(trainer.state.best_model_checkpoint),
        f"validation_{task.official_metric}": trainer.state.best_metric,
        "validation_history": [{"step": e["step"], task.official_metric: e[f"eval_{task.official_metric}"]}
                               for e in evaluations],
        "thresholds": classifier.thresholds or None, "train_seconds": round(seconds, 1),
        **collapse,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    classifier.save(out / FINAL_DIR)
    atomic_write_text(out / DONE_FILE, json.dumps(summary, ensure_ascii=False, indent=1) + "\n")
    for stale in out.glob("checkpoint-*"):  # final/ holds the chosen model; checkpoints are ~0.6 GB each
        shutil.rmtree(stale, ignore_errors=True)
    return classifier, summary


def _collapse_check(proba: np.ndarray, out: Path) -> dict[str, Any]:
    """The run's validation probability spread, and whether it is collapsed (logged: a constant model must not
    pass silently as a trained one)."""
    spread = probability_spread(proba)
    if spread < COLLAPSE_SPREAD:
        log.warning("encoder run %s looks collapsed: every validation post gets nearly the same probabilities "
                    "(largest per-label std %.4f < %s); its decisions are a constant guess. Longer warm-up, more "
                    "epochs or weighted positives escaped this for cognitive distortion (docs/analyze.md)",
                    out, spread, COLLAPSE_SPREAD)
    return {"validation_probability_spread": round(spread, 4), "collapsed": spread < COLLAPSE_SPREAD}


def _step_of(checkpoint: str | None) -> int | None:
    if not checkpoint:
        return None
    tail = Path(checkpoint).name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None
