"""Two-stage LoRA instruction tuning with TRL's SFTTrainer (the MentalGLM recipe: IMHI English, then C-IMHI).

Design choices, and why:

* Loss on the answer only. When the chat template marks the assistant turn with ``{% generation %}`` the
  samples stay ``messages`` and ``assistant_only_loss=True`` is used. Most templates (Qwen2.5's ChatML, GLM-4's)
  lack the markers, so samples become TRL's conversational prompt/completion pairs (system + user -> the
  assistant turn) and ``completion_only_loss`` masks the prompt. That works with any template because TRL
  renders the prompt with ``add_generation_prompt=True`` and trains on what the full render adds after it: the
  answer and the template's end-of-turn text. Every C-IMHI / IMHI sample is one turn, so nothing is lost.
* Stage 2 continues stage 1's adapter (loaded with ``is_trainable=True``) instead of merging it and adding a
  new LoRA: one adapter of one rank carries both stages, export merges once, and nothing is merged into a bf16
  (or dequantised GGUF) base twice, which would round the stage-1 update away. The LoRA settings of later
  stages are those of stage 1's adapter.
* Resume: each stage writes checkpoints under ``<output_dir>/<stage>/``; a rerun resumes the newest one
  (optimizer, scheduler, RNG and data order included), and a stage with ``done.json`` is skipped, never redone.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mentalglm.errors import ConfigError
from mentalglm.files import read_jsonl
from mentalglm.train.config import (
    EMBEDDED_PREFIX,
    ModelArguments,
    RunConfig,
    StageArguments,
    dataset_specs,
)

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
DONE_FILE = "done.json"
BASE_FILE = "mentalglm_base.json"  # beside the adapter: how to load its base again (export needs it)
LOG_FILE = "train_log.csv"


# ---------------------------------------------------------------- data

def _read_jsonl(path: Path) -> list[list[dict[str, str]]]:
    rows = []
    for number, row in read_jsonl(path, ConfigError):
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages:
            raise ConfigError(f"{path}:{number}: a chat row needs a non-empty 'messages' list "
                              "(write it with `mentalglm instruct export --format chat`)")
        rows.append([{"role": m["role"], "content": m["content"]} for m in messages])
    return rows


def _read_imhi(part: str, data_dir: str | None) -> list[list[dict[str, str]]]:
    from mentalglm.data.datadir import resolve_data_dir
    from mentalglm.data.instructions import make_imhi_instruction
    from mentalglm.data.loaders.imhi import SETS, IMHILoader
    from mentalglm.tasks import get_task

    root = resolve_data_dir(Path(data_dir) if data_dir else None)
    posts, _ = IMHILoader().load(root, part)
    task = get_task(SETS[part.split("/", 1)[0]])
    return [make_imhi_instruction(task, post).messages for post in posts]


def stage_conversations(stage: StageArguments, data_dir: str | None, seed: int) -> list[list[dict[str, str]]]:
    """The stage's mixture: each dataset scaled by its weight, shuffled with the seed, capped at max_samples."""
    rng = random.Random(seed)
    mixed: list[list[dict[str, str]]] = []
    weights = stage.weights or [1.0] * len(stage.datasets)
    for spec, weight in zip(dataset_specs(stage), weights, strict=True):
        rows = _read_imhi(spec.target, data_dir) if spec.kind == "imhi" else _read_jsonl(spec.path())  # type: ignore[arg-type]
        whole, fraction = int(weight), weight - int(weight)
        mixed.extend(rows * whole)
        mixed.extend(rng.sample(rows, round(len(rows) * fraction)))
    rng.shuffle(mixed)
    if stage.max_samples is not None:
        mixed = mixed[: stage.max_samples]
    for messages in mixed:
        if messages[-1]["role"] != "assistant":
            raise ConfigError(f"stage {stage.name}: every sample must end with the assistant's answer, got a "
                              f"{messages[-1]['role']!r} turn last")
    return mixed


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and "generation" in template and "endgeneration" in template  # type: ignore[operator]


def to_training_rows(conversations: Sequence[list[dict[str, str]]], tokenizer: Any) -> list[dict[str, Any]]:
    """`messages` rows when the template marks the answer, else prompt/completion rows (see module docstring)."""
    if has_generation_markers(tokenizer.chat_template):
        return [{"messages": m} for m in conversations]
    return [{"prompt": m[:-1], "completion": m[-1:]} for m in conversations]


# ---------------------------------------------------------------- model

def _dtype(name: str) -> Any:
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def resolve_model_source(model: ModelArguments) -> tuple[str, str | None]:
    """(directory or hub id, GGUF file name or None); 'embedded:<name>' assembles the shipped GGUF."""
    if model.name_or_path.startswith(EMBEDDED_PREFIX):
        from mentalglm.backends.weights import ensure_default_model

        path = ensure_default_model(model.name_or_path.removeprefix(EMBEDDED_PREFIX))
        return str(path.parent), path.name
    return model.name_or_path, model.gguf_file


def load_tokenizer(model: ModelArguments) -> Any:
    from transformers import AutoTokenizer

    source, gguf = resolve_model_source(model)
    kwargs: dict[str, Any] = {"trust_remote_code": model.trust_remote_code}
    if gguf:
        kwargs["gguf_file"] = gguf
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    if model.chat_template:
        template = model.chat_template
        tokenizer.chat_template = Path(template).read_text(encoding="utf-8") if template.endswith(".jinja") else template
    if not tokenizer.chat_template:
        raise ConfigError(f"the tokenizer of {model.name_or_path} has no chat template; set chat_template in the config")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(model: ModelArguments) -> Any:
    from transformers import AutoModelForCausalLM

    source, gguf = resolve_model_source(model)
    kwargs: dict[str, Any] = {"dtype": _dtype(model.dtype), "trust_remote_code": model.trust_remote_code}
    if not gguf:
        return keep_layers(with_base_adapter(AutoModelForCausalLM.from_pretrained(source, **kwargs), model),
                           model.num_layers)
    from transformers import GgufConfig

    # transformers 5 keeps GGUF blocks packed by default, and packed weights cannot be trained or merged:
    # unpack them into a plain dense model and drop the quantizer, so PEFT and the Trainer see ordinary weights.
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf, **kwargs,
                                                  quantization_config=GgufConfig(gguf_file=gguf, dequantize=True))
    quantizer = getattr(loaded, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(loaded)
    return keep_layers(with_base_adapter(loaded, model), model.num_layers)


def with_base_adapter(model: Any, arguments: ModelArguments) -> Any:
    """The model with ``arguments.base_adapter`` folded into its weights (unchanged without one).

    An adapter trained on a shallower cut of the base (the backbone tier's first 12 layers) names only those
    layers, so it folds into the whole base as well: the layers it names become exactly what the cut model had."""
    if not arguments.base_adapter:
        return model
    from peft import PeftModel

    adapter = Path(arguments.base_adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"base_adapter {adapter} is not a LoRA adapter directory (no adapter_config.json)")
    digest = base_adapter_digest(adapter)
    if arguments.base_adapter_sha256 and digest != arguments.base_adapter_sha256:
        raise ConfigError(f"base_adapter {adapter} changed since this adapter was trained above it (SHA-256 "
                          f"{digest[:12]}, trained with {arguments.base_adapter_sha256[:12]}): retrain, or point "
                          "base_adapter at the adapter it was trained with")
    return PeftModel.from_pretrained(model, str(adapter), config=_config_of_named_layers(adapter)).merge_and_unload()


def _config_of_named_layers(adapter: Path) -> Any:
    """The adapter's LoRA config, limited to the layers its weights name.

    An adapter trained on a cut of the base declares no ``layers_to_transform``; PEFT would then add LoRA to every
    layer of the whole base and warn that the upper layers' weights are missing (they fold as zero: harmless, but
    the warning reads as a failed load)."""
    from peft import PeftConfig
    from safetensors import safe_open

    config = PeftConfig.from_pretrained(str(adapter))
    weights = adapter / "adapter_model.safetensors"
    if config.layers_to_transform is not None or isinstance(config.target_modules, str) or not weights.is_file():
        return config
    with safe_open(str(weights), "pt") as handle:
        layers = [re.search(r"\.layers\.(\d+)\.", key) for key in handle.keys()]
    if layers and all(layers):  # a module outside the layers (lm_head) would be dropped by layers_to_transform
        config.layers_to_transform = sorted({int(m.group(1)) for m in layers if m})
    return config


def base_adapter_digest(adapter: Path) -> str:
    """SHA-256 of an adapter's weights file (PEFT's safetensors, else its .bin)."""
    from mentalglm.files import sha256_file

    weights = [adapter / name for name in ("adapter_model.safetensors", "adapter_model.bin") if (adapter / name).is_file()]
    if not weights:
        raise ConfigError(f"base_adapter {adapter} has no adapter_model.safetensors")
    return sha256_file(weights[0])


def keep_layers(model: Any, num_layers: int | None) -> Any:
    """The model cut to its first ``num_layers`` decoder layers (config included, so that a merged copy saves and
    converts to GGUF as the shallower model); None leaves it whole."""
    if num_layers is None:
        return model
    layers = model.get_decoder().layers
    if not 1 <= num_layers <= len(layers):
        raise ConfigError(f"num_layers {num_layers} is outside 1..{len(layers)} (the base has {len(layers)} layers)")
    model.get_decoder().layers = type(layers)(list(layers)[:num_layers])
    model.config.num_hidden_layers = num_layers
    if isinstance(getattr(model.config, "layer_types", None), list):  # newer configs list a type per layer
        model.config.layer_types = model.config.layer_types[:num_layers]
    return model


def _peft_model(config: RunConfig, previous_adapter: Path | None) -> Any:
    from peft import LoraConfig, PeftModel, get_peft_model

    base = load_base_model(config.model)
    if previous_adapter is not None:
        return PeftModel.from_pretrained(base, str(previous_adapter), is_trainable=True)
    lora = LoraConfig(r=config.lora.lora_r, lora_alpha=config.lora.lora_alpha, lora_dropout=config.lora.lora_dropout,
                      target_modules=config.lora.target_modules, layers_to_transform=config.lora.layers_to_transform,
                      task_type="CAUSAL_LM")
    return get_peft_model(base, lora)


# ---------------------------------------------------------------- logging

def _csv_callback_class() -> type:
    from transformers import TrainerCallback

    class CsvLogCallback(TrainerCallback):
        """Append loss / learning rate rows to a CSV that survives resumes (plots need no TensorBoard).

        ``num_tokens`` (TRL's count of trained tokens so far) and the wall-clock ``time`` give tokens/s.
        """

        columns = ("step", "epoch", "loss", "learning_rate", "grad_norm", "num_tokens", "mean_token_accuracy", "time")

        def __init__(self, path: Path) -> None:
            self.path = path

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            new = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                if new:
                    writer.writerow(self.columns)
                writer.writerow([state.global_step, logs.get("epoch", state.epoch)]
                                + [logs.get(c, "") for c in self.columns[2:-1]] + [round(time.time(), 1)])

    return CsvLogCallback


def read_log(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- stages

def stage_done(stage_dir: Path) -> bool:
    return (stage_dir / DONE_FILE).is_file() and (stage_dir / ADAPTER_DIR).is_dir()


def last_checkpoint(stage_dir: Path) -> str | None:
    if not stage_dir.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(stage_dir))


def build_trainer(config: RunConfig, stage: StageArguments, previous_adapter: Path | None,
                  *, max_steps: int | None = None, callbacks: Sequence[Any] = ()) -> Any:
    """An SFTTrainer for one stage: seeded model + LoRA, the stage's data, CSV (and TensorBoard) logging."""
    import torch
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    t = config.training
    set_seed(t.seed)  # before LoRA init: the same seed gives the same adapter
    tokenizer = load_tokenizer(config.model)
    rows = to_training_rows(stage_conversations(stage, config.data.data_dir, t.seed), tokenizer)
    if not rows:
        raise ConfigError(f"stage {stage.name}: no training samples")
    markers = "messages" in rows[0]
    stage_dir = config.stage_dir(stage)
    steps = max_steps if max_steps is not None else (stage.max_steps if stage.max_steps is not None else t.max_steps)
    args = SFTConfig(
        output_dir=str(stage_dir),
        learning_rate=stage.learning_rate if stage.learning_rate is not None else t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,  # transformers 5: a value below 1 is a ratio of the total steps
        num_train_epochs=stage.num_train_epochs if stage.num_train_epochs is not None else t.num_train_epochs,
        max_steps=steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        max_length=t.max_length,
        packing=t.packing,
        seed=t.seed,
        data_seed=t.seed,
        bf16=t.bf16,
        activation_checkpointing=t.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        logging_steps=t.logging_steps,
        report_to=["tensorboard"] if t.tensorboard else "none",
        assistant_only_loss=markers,
        completion_only_loss=None if markers else True,
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),  # without it, CPU processes under torchrun train alone, not DDP
    )
    model = _peft_model(config, previous_adapter)
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                      callbacks=[_csv_callback_class()(stage_dir / LOG_FILE), *callbacks])


def run_stage(config: RunConfig, stage: StageArguments, previous_adapter: Path | None,
              *, max_steps: int | None = None, callbacks: Sequence[Any] = ()) -> Path:
    """Train one stage (resuming its last checkpoint) and return its adapter directory."""
    stage_dir = config.stage_dir(stage)
    adapter_dir = stage_dir / ADAPTER_DIR
    if stage_done(stage_dir):
        log.info("stage %s is finished (%s): skipped", stage.name, stage_dir / DONE_FILE)
        return adapter_dir
    trainer = build_trainer(config, stage, previous_adapter, max_steps=max_steps, callbacks=callbacks)
    checkpoint = last_checkpoint(stage_dir) if config.training.resume else None
    if checkpoint:
        log.info("stage %s: resuming from %s", stage.name, checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(adapter_dir))
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(adapter_dir))
        base = asdict(config.model)
        if base["base_adapter"]:  # export may run from another directory, after the base adapter was retrained
            base["base_adapter"] = str(Path(base["base_adapter"]).resolve())
            base["base_adapter_sha256"] = base_adapter_digest(Path(base["base_adapter"]))
        (adapter_dir / BASE_FILE).write_text(json.dumps(base, indent=1), encoding="utf-8")
        done = {"stage": stage.name, "global_step": trainer.state.global_step, "train_loss": result.training_loss,
                "resumed_from": checkpoint, "previous_adapter": str(previous_adapter) if previous_adapter else None}
        tmp = stage_dir / (DONE_FILE + ".tmp")
        tmp.write_text(json.dumps(done, indent=1), encoding="utf-8")
        os.replace(tmp, stage_dir / DONE_FILE)  # written last: a stage is done only with its adapter saved
    trainer.accelerator.wait_for_everyone()
    return adapter_dir


def run_training(config: RunConfig, *, max_steps: int | None = None, callbacks: Sequence[Any] = ()) -> list[Path]:
    """All stages in order, each starting from the previous stage's adapter; returns the adapter directories."""
    adapters: list[Path] = []
    previous: Path | None = None
    for stage in config.data.stages:
        previous = run_stage(config, stage, previous, max_steps=max_steps, callbacks=callbacks)
        adapters.append(previous)
    return adapters


def plan(config: RunConfig) -> list[dict[str, Any]]:
    """What a run would do, without loading a model: samples and state per stage (for --dry-run)."""
    rows = []
    for stage in config.data.stages:
        stage_dir = config.stage_dir(stage)
        samples = len(stage_conversations(stage, config.data.data_dir, config.training.seed))
        state = "done (skipped)" if stage_done(stage_dir) else (
            f"resume {Path(c).name}" if (c := last_checkpoint(stage_dir)) and config.training.resume else "new")
        rows.append({"stage": stage.name, "datasets": len(stage.datasets), "samples": samples, "state": state,
                     "output": str(stage_dir)})
    return rows
