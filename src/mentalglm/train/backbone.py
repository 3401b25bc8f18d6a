"""The backbone tier's training: one LoRA adapter on the embedded Qwen2.5-Coder-0.5B, one small head per task.

    OMP_NUM_THREADS=2 mentalglm backbone train --out runs/backbone   # ~75 min on 2 quiet cores; rerun to resume

Why one adapter and several heads: the paper's MentalGLM is one model for every task, and a post read once
serves all the heads (one forward pass for emotion, cognitive distortion and suicide risk together). The heads
read the mean of the last hidden states over the post's tokens (after the final norm, which is also what
llama.cpp returns in embedding mode with mean pooling), so the merged model can be exported to GGUF and the
heads run in numpy beside it.

Design choices, and why:

* Task-balanced batches: each step trains one task on ``batch_size`` posts of that task, the task drawn with
  ``task_weights``. Emotion has 10x the posts of the other tasks; proportional sampling would starve cognitive
  distortion and suicide risk, which need several epochs (measured: CD micro-F1 0.669 after 1 epoch, 0.722 after 2).
* The screened tasks' heads learn the classifier's labels only (``Task.classifier_labels``: no "none"): the screen
  in front decides "none", as for every other tier.
* Everything a step needs follows from (seed, step): which task, which posts (a per-task permutation per pass
  over its posts) and the dropout seed. A resumed run therefore trains exactly the steps an uninterrupted one
  would, from a checkpoint written every ``checkpoint_every`` steps (adapter, heads, optimiser, schedule), atomically.
* float32, not bf16: this CPU torch build computes bf16 matmuls on a slow path (MODELS.md, docs/training.md).
* Validation every ``eval_every`` steps (emotion's validation sampled to ``eval_limit`` posts); the step with the
  best mean official metric over the tasks is kept as ``best``; thresholds (multi-label) are tuned on the full
  validation split at the end, as the encoder tier does.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mentalglm.data.records import Post
from mentalglm.data.sampling import posts_sha256
from mentalglm.errors import ConfigError
from mentalglm.files import JsonlAppender, atomic_write_text, read_jsonl, read_lines, sha256_file, write_jsonl
from mentalglm.seeds import DEFAULT_SEED
from mentalglm.tasks import get_task
from mentalglm.tasks.schema import Task
from mentalglm.train.backbone_model import (
    ADAPTER_DIR,
    ADAPTER_WEIGHTS,
    HEADS_FILE,
    BackboneFileError,
    BackboneHeads,
    embed_texts,
    load_backbone_base,
    load_backbone_tokenizer,
    load_heads,
    pooled_states,
    read_backbone_meta,
    save_backbone,
)
from mentalglm.train.encoder import positive_weights, score_probabilities, targets

log = logging.getLogger(__name__)

RUN_FILE, DONE_FILE, CHECKPOINT_FILE, BEST_DIR, FINAL_DIR = "run.json", "done.json", "checkpoint.pt", "best", "final"
LOG_FILE, EVAL_FILE = "train_log.csv", "validation.jsonl"
GROUP_BATCHES = 32  # batches per length-sorted chunk of a pass
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class BackboneSettings:
    """What a run is made of; ``run.json`` keeps it so that a rerun resumes only the same run."""

    base: str = "embedded:qwen2.5-0.5b"
    # the first 12 of the base's 24 decoder layers: half the compute, no worse on validation at equal steps
    # (docs/backbone.md); None keeps them all
    layers: int | None = 12
    tasks: tuple[str, ...] = ("emotion", "cognitive_distortion", "suicide_risk")
    task_weights: tuple[float, ...] = (0.5, 0.35, 0.15)
    steps: int = 1500
    batch_size: int = 8
    max_length: int = 128
    lr: float = 2e-4
    head_lr: float = 1e-3
    warmup_steps: int = 100
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    pos_weight: float = 5.0  # cap of the multi-label positives' BCE weight (negatives / positives per label)
    eval_every: int = 300
    eval_limit: int = 1500
    checkpoint_every: int = 20
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if len(self.task_weights) != len(self.tasks) or min(self.task_weights, default=0) <= 0:
            raise ConfigError("task_weights needs one positive weight per task")
        for name in ("steps", "batch_size", "max_length", "eval_every", "checkpoint_every", "lora_rank"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.layers is not None and self.layers < 1:
            raise ConfigError("layers must be >= 1 (or None for all)")

    def identity(self) -> dict[str, Any]:
        """The settings that change what is trained (evaluation and checkpoint cadence do not)."""
        kept = asdict(self)
        for name in ("eval_every", "checkpoint_every", "eval_limit"):
            kept.pop(name)
        kept["tasks"], kept["task_weights"] = list(self.tasks), list(self.task_weights)
        if self.layers is None:  # runs from before the option existed resume unchanged
            kept.pop("layers")
        return kept


@dataclass
class TaskData:
    """One task's training and validation posts with their targets, in the head's label order."""

    task: Task
    train: list[Post]
    validation: list[Post]
    y_train: np.ndarray = field(init=False)
    y_validation: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if not self.train or not self.validation:
            raise ConfigError(f"{self.task.id}: the backbone needs training and validation posts")
        self.y_train, self.y_validation = targets(self.task, self.train), targets(self.task, self.validation)


def backbone_data(tasks: Sequence[str], data_dir: str | Path | None) -> list[TaskData]:
    """Each task's decontaminated training pool and validation split, as the analyzer's tiers read them; a screened
    task's classifier also learns from the screen's posts that carry its labels (invented low / high posts)."""
    from mentalglm.data.splits import canonical_splits, classifier_posts, screen_data

    out = []
    for task_id in tasks:
        task = get_task(task_id)
        splits, _ = canonical_splits(task.id, data_dir, include_extra=False)
        train = list(splits["train"])
        if task.screen is not None:
            train += classifier_posts(task, screen_data(task.id, data_dir).train)
        out.append(TaskData(task, train, list(splits["validation"])))
    return out


# --------------------------------------------------------------------------- the schedule


def task_of_step(settings: BackboneSettings, step: int) -> int:
    """Which task trains at ``step``: a draw with ``task_weights`` from a generator seeded by (seed, step)."""
    weights = np.asarray(settings.task_weights, dtype=float)
    rng = np.random.default_rng([settings.seed, step, 1])
    return int(rng.choice(len(weights), p=weights / weights.sum()))


def pass_batches(settings: BackboneSettings, task_index: int, lengths: Sequence[int], n_pass: int) -> list[list[int]]:
    """One pass over a task's posts in batches of posts of about the same length, in random order.

    A shuffled pass is cut into chunks of ``GROUP_BATCHES`` batches; each chunk is sorted by length before it is
    cut into batches. A batch is padded to its longest post, and Weibo posts run from 10 to 140 characters:
    random batches computed about twice the tokens that length-grouped ones do.
    """
    rng = np.random.default_rng([settings.seed, task_index, n_pass, 2])
    order = rng.permutation(len(lengths))
    chunk = settings.batch_size * GROUP_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order) - settings.batch_size + 1, chunk):
        group = sorted(order[start:start + chunk].tolist(), key=lambda i: lengths[i])
        batches += [group[b:b + settings.batch_size] for b in range(0, len(group) - settings.batch_size + 1,
                                                                   settings.batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))] or [order.tolist()]


def schedule(settings: BackboneSettings, lengths: Sequence[Sequence[int]],
             start: int = 0) -> Iterator[tuple[int, int, list[int]]]:
    """(step, task index, post indices) from ``start`` on; the same for a resumed run as for an unbroken one."""
    seen = [0] * len(lengths)
    current: dict[int, tuple[int, list[list[int]]]] = {}  # task -> (pass number, that pass's batches)
    for step in range(settings.steps):
        task = task_of_step(settings, step)
        if step >= start:
            n_pass, slot = divmod(seen[task], max(1, len(lengths[task]) // settings.batch_size))
            if current.get(task, (-1, []))[0] != n_pass:
                current[task] = (n_pass, pass_batches(settings, task, lengths[task], n_pass))
            yield step, task, current[task][1][slot]
        seen[task] += 1


def learning_rate_factor(settings: BackboneSettings, step: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# --------------------------------------------------------------------------- the run


def _check_run(out: Path, identity: dict[str, Any]) -> None:
    path = out / RUN_FILE
    if path.exists():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        if recorded != identity:
            changed = sorted(k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k))
            if changed == ["init_from"] and "init_from" in recorded:
                raise ConfigError(f"{out} was trained on from a saved backbone (adapter "
                                  f"{recorded['init_from']['adapter_sha256'][:16]}…): rerun with the same --init-from")
            raise ConfigError(f"{out} holds another backbone run (differs in: {', '.join(changed)}); "
                              "choose another --out or delete it to start over")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(identity, ensure_ascii=False, indent=2, sort_keys=True))


def _trim_logs(out: Path, step: int) -> None:
    """Drop the log rows of steps after the checkpoint (and a torn last row): the resumed run trains those steps
    again and logs them anew, so each step is logged once."""
    evaluations = out / EVAL_FILE
    if evaluations.exists():
        kept = [row for _, row in read_jsonl(evaluations, ConfigError, repair_tail=True) if row["step"] <= step]
        write_jsonl(evaluations, kept)
    steps = out / LOG_FILE
    if steps.exists():
        lines = [line.text(keep_end=True) for line in read_lines(steps, repair_tail=True)]
        kept_lines = [line for line in lines if not line.split(",", 1)[0].isdigit() or int(line.split(",", 1)[0]) <= step]
        if len(kept_lines) != len(lines):
            atomic_write_text(steps, "".join(kept_lines))


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def evaluate(model: Any, tokenizer: Any, heads: BackboneHeads, data: Sequence[TaskData], settings: BackboneSettings,
             *, limit: int | None) -> dict[str, Any]:
    """Each task's official metric on (at most ``limit`` of) its validation posts, thresholds tuned as at the end."""
    scores: dict[str, Any] = {}
    model.eval()
    for task_data in data:
        chosen = np.arange(len(task_data.validation))
        if limit is not None and len(chosen) > limit:
            chosen = np.sort(np.random.default_rng([settings.seed, 3]).choice(len(chosen), limit, replace=False))
        pooled = embed_texts(model, tokenizer, [task_data.validation[i].text for i in chosen], settings.max_length)
        proba = heads.probabilities(task_data.task.id, pooled)
        value, thresholds = score_probabilities(task_data.task, proba, task_data.y_validation[chosen])
        scores[task_data.task.id] = {"value": round(value, 4), "posts": int(len(chosen)), "thresholds": thresholds}
    scores["mean"] = round(float(np.mean([scores[d.task.id]["value"] for d in data])), 4)
    model.train()
    return scores


def train_backbone(data: Sequence[TaskData], settings: BackboneSettings, out: Path, *,
                   progress: Callable[[int, int, float], None] | None = None,
                   stop_after: int | None = None, init_from: Path | None = None) -> Path:
    """Train (or resume, or find finished) the run in ``out``; returns ``out/final``.

    ``stop_after`` ends this call after that many steps (a checkpoint is written): for sessions with a deadline.
    ``init_from`` (a saved backbone) starts the adapter and heads from its weights instead of from scratch, with a
    fresh optimiser and schedule: a finished run trained on. The run records that backbone's digests, so it resumes
    only from the same one.
    """
    identity = {**settings.identity(),
                "data": {d.task.id: {"train": posts_sha256(d.train), "validation": posts_sha256(d.validation)}
                         for d in data}}
    lineage = {} if init_from is None else {"init_from": warm_start_digests(init_from)}
    identity.update(lineage)
    _check_run(out, identity)
    if (out / DONE_FILE).exists():
        return out / FINAL_DIR
    if [d.task.id for d in data] != list(settings.tasks):
        raise ConfigError("the task data must come in the order of settings.tasks")
    torch.manual_seed(settings.seed)
    tokenizer = load_backbone_tokenizer(settings.base)
    model = _lora_model(settings)
    heads = BackboneHeads.new({d.task.id: (list(d.task.classifier_labels), d.task.is_multi_label) for d in data},
                              hidden=model.config.hidden_size, seed=settings.seed)
    lora_params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": lora_params, "lr": settings.lr},
                                   {"params": list(heads.parameters()), "lr": settings.head_lr}], weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(settings, s))
    pos_weights = {d.task.id: positive_weights(d.y_train, settings.pos_weight) for d in data if d.task.is_multi_label}
    state: dict[str, Any] = {"step": 0, "best": None, "history": []}
    checkpoint = out / CHECKPOINT_FILE
    if checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=False)
        missing = set(_trainable_state(model)) - set(saved["lora"])
        if missing:
            raise ConfigError(f"{checkpoint} does not match this run's adapter ({len(missing)} tensors missing); "
                              "delete it to start over")
        model.load_state_dict(saved["lora"], strict=False)
        heads.load_state_dict(saved["heads"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        log.info("resuming %s at step %d of %d", out, state["step"], settings.steps)
    elif init_from is not None:
        _warm_start(model, heads, init_from, settings)
    # a fresh start keeps no log row (an interrupted first validation of a warm start included)
    _trim_logs(out, state["step"] if checkpoint.exists() else -1)

    def save(step: int) -> None:
        state["step"] = step
        _save_checkpoint(checkpoint, {"lora": _trainable_state(model), "heads": heads.state_dict(),
                                      "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                      "state": state})

    def validate(step: int) -> None:
        scores = evaluate(model, tokenizer, heads, data, settings, limit=settings.eval_limit)
        record = {"step": step, **scores}
        state["history"].append(record)
        with JsonlAppender(out / EVAL_FILE) as appender:
            appender.write([record])
        if state["best"] is None or scores["mean"] > state["best"]["mean"]:
            state["best"] = record
            save_backbone(model, heads, out / BEST_DIR, settings=_saved_settings(settings),
                          extra={"step": step, "validation": scores, **lineage})
        log.info("step %d validation %s", step, json.dumps(scores, ensure_ascii=False))

    if init_from is not None and not state["history"]:
        validate(0)  # where the run starts is a candidate too: training on never leaves a worse best/
        save(0)
    model.train()
    started, done_here = time.perf_counter(), 0
    new_log = not (out / LOG_FILE).exists()
    with (out / LOG_FILE).open("a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if new_log:
            writer.writerow(["step", "task", "loss", "lr", "seconds"])
        for step, task_index, rows in schedule(settings, [[len(p.text) for p in d.train] for d in data],
                                                   start=state["step"]):
            task_data = data[task_index]
            torch.manual_seed(settings.seed * 1_000_003 + step)  # dropout: the same on resume
            pooled = pooled_states(model, tokenizer, [task_data.train[i].text for i in rows], settings.max_length)
            logits = heads.logits(task_data.task.id, pooled)
            y = torch.as_tensor(task_data.y_train[rows])
            if task_data.task.is_multi_label:
                loss = nn.functional.binary_cross_entropy_with_logits(
                    logits, y, pos_weight=pos_weights[task_data.task.id])
            else:
                loss = nn.functional.cross_entropy(logits, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*lora_params, *heads.parameters()], 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            writer.writerow([step + 1, task_data.task.id, round(loss.item(), 5), f"{scheduler.get_last_lr()[0]:.3g}",
                             round(time.perf_counter() - started, 1)])
            done_here += 1
            finished = step + 1
            if progress is not None:
                progress(finished, settings.steps, loss.item())
            if finished % settings.eval_every == 0 or finished == settings.steps:
                handle.flush()
                validate(finished)
            if finished % settings.checkpoint_every == 0 or finished == settings.steps:
                handle.flush()
                save(finished)
            if stop_after is not None and done_here >= stop_after and finished < settings.steps:
                save(finished)
                return out / FINAL_DIR
    return _finish(data, settings, out, state, model, heads, tokenizer, lineage)


def _finish(data: Sequence[TaskData], settings: BackboneSettings, out: Path, state: dict[str, Any], model: Any,
            heads: BackboneHeads, tokenizer: Any, lineage: dict[str, Any]) -> Path:
    """Put the best step's weights back into the model in memory (no second base is loaded), tune thresholds on
    the whole validation split, write ``final`` and ``done.json``."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    best = out / BEST_DIR
    set_peft_model_state_dict(model, load_file(str(best / ADAPTER_DIR / ADAPTER_WEIGHTS)))
    heads.heads.load_state_dict(load_heads(best).heads.state_dict())
    full = evaluate(model, tokenizer, heads, data, settings, limit=None)
    for task_data in data:
        heads.thresholds[task_data.task.id] = full[task_data.task.id]["thresholds"] if task_data.task.is_multi_label \
            else []
    summary = {"best_step": state["best"]["step"], "validation": full, "history": state["history"],
               "steps": settings.steps, "settings": asdict(settings), **lineage}
    save_backbone(model, heads, out / FINAL_DIR, settings=_saved_settings(settings), extra=summary)
    atomic_write_text(out / DONE_FILE, json.dumps(summary, ensure_ascii=False, indent=2))
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    return out / FINAL_DIR


INIT_FROM_FIX = "point --init-from at a saved backbone (a run's best/ or final/)"


def warm_start_digests(directory: Path) -> dict[str, str]:
    """The SHA-256 of a saved backbone's adapter and heads: what a run trained on from it is tied to."""
    for path in (directory / ADAPTER_DIR / ADAPTER_WEIGHTS, directory / HEADS_FILE):
        if not path.exists():
            raise BackboneFileError(path, "missing", INIT_FROM_FIX)
    return {"adapter_sha256": sha256_file(directory / ADAPTER_DIR / ADAPTER_WEIGHTS),
            "heads_sha256": sha256_file(directory / HEADS_FILE)}


def _warm_start(model: Any, heads: BackboneHeads, directory: Path, settings: BackboneSettings) -> None:
    """Load a saved backbone's adapter and heads into a new run's model; refused, by name, where the saved one was
    made on another base, another cut, another adapter shape or other task classes."""
    from peft import set_peft_model_state_dict
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_backbone_meta(directory)
    if meta["base"] != settings.base or meta.get("layers") != settings.layers:
        raise ConfigError(f"--init-from {directory}: trained on {meta['base']} ({meta.get('layers') or 'all'} layers), "
                          f"this run is {settings.base} ({settings.layers or 'all'} layers)")
    saved = load_heads(directory, meta)
    if saved.tasks != heads.tasks:
        raise ConfigError(f"--init-from {directory}: its heads ({', '.join(saved.tasks)}) are not this run's "
                          f"({', '.join(heads.tasks)}) with the same classes")
    config_path = directory / ADAPTER_DIR / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackboneFileError(config_path, f"unreadable ({exc})", INIT_FROM_FIX) from exc
    theirs = (config.get("r"), config.get("lora_alpha"), sorted(config.get("target_modules") or []))
    ours = (settings.lora_rank, settings.lora_alpha, sorted(LORA_TARGETS))
    if theirs != ours:  # another alpha would scale the same weights otherwise: the start would not be the source
        raise ConfigError(f"--init-from {directory}: its adapter (r, alpha, modules) is {theirs}, this run's {ours}")
    weights = directory / ADAPTER_DIR / ADAPTER_WEIGHTS
    try:
        result = set_peft_model_state_dict(model, load_file(str(weights)))
    except (OSError, RuntimeError, ValueError, SafetensorError) as exc:  # other shapes, truncated file
        raise BackboneFileError(weights, f"does not fit this run's adapter ({type(exc).__name__}: {exc})",
                                INIT_FROM_FIX) from exc
    missing = [key for key in result.missing_keys if "lora_" in key]
    unexpected = [key for key in result.unexpected_keys if "lora_" in key]
    if missing or unexpected:
        raise BackboneFileError(weights, f"does not hold this run's adapter tensors ({len(missing)} missing, "
                                         f"{len(unexpected)} unexpected)", INIT_FROM_FIX)
    heads.heads.load_state_dict(saved.heads.state_dict())
    log.info("adapter and heads start from %s", directory)


def _saved_settings(settings: BackboneSettings) -> dict[str, Any]:
    """What a saved backbone needs to be read again: its base and how long a post may be."""
    return {"base": settings.base, "layers": settings.layers, "max_length": settings.max_length}


def _lora_model(settings: BackboneSettings) -> Any:
    from peft import LoraConfig, get_peft_model

    base = load_backbone_base(settings.base, settings.layers)
    lora = LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                      target_modules=LORA_TARGETS)
    return get_peft_model(base, lora)
