"""The backbone tier as it is loaded and run: the Qwen base with its LoRA adapter, and one head per task.

Training is train/backbone.py. A saved backbone directory holds ``adapter/`` (PEFT), ``heads.safetensors`` and
``backbone.json`` (base, tasks with their classes, thresholds, the run's summary). Loading names the file that is
missing or unreadable and never falls back to another tier.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mentalglm.errors import ConfigError, MentalGLMError
from mentalglm.files import atomic_write_text
from mentalglm.train.classical import decide
from mentalglm.train.encoder_classifier import probabilities

ADAPTER_DIR, HEADS_FILE, META_FILE = "adapter", "heads.safetensors", "backbone.json"
MERGED_DIR, MERGED_STAMP, ADAPTER_WEIGHTS = "merged", "mentalglm_merged.json", "adapter_model.safetensors"
EXPORT_AGAIN = "write it again with `mentalglm backbone export`"
BASE_FILE = "mentalglm_base.json"  # train/sft.py's name: export reads it
EMBED_BATCH = 16


class BackboneFileError(MentalGLMError):
    """A backbone directory with a file missing or unreadable: which one, and how to get it back."""

    RETRAIN = ("retrain with `mentalglm backbone train` or point --backbone at a complete directory (no other tier "
               "is used in its place)")

    def __init__(self, path: Path, reason: str, fix: str = RETRAIN) -> None:
        super().__init__(f"backbone file {path}: {reason}; {fix}")


def _model_arguments(base: str, layers: int | None = None) -> Any:
    from mentalglm.train.config import ModelArguments

    return ModelArguments(name_or_path=base, dtype="float32", num_layers=layers)


def load_backbone_tokenizer(base: str) -> Any:
    from mentalglm.train.sft import load_tokenizer

    return load_tokenizer(_model_arguments(base))


def load_backbone_base(base: str, layers: int | None = None) -> Any:
    """The causal LM (float32), cut to its first ``layers`` decoder layers when given; the heads read its
    transformer, the LM head writes explanations."""
    from mentalglm.train.sft import load_base_model

    return load_base_model(_model_arguments(base, layers))


def _transformer(model: Any) -> Any:
    """The decoder stack without the LM head (whose 150k-wide logits pooling does not need)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.model


def pooled_states(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int) -> torch.Tensor:
    """Mean of the last hidden states over each text's real tokens: (len(texts), hidden)."""
    batch = tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    hidden = _transformer(model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def embed_texts(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int,
                batch_size: int = EMBED_BATCH) -> np.ndarray:
    """Pooled states of many texts in input order, batched by length so that little padding is computed."""
    texts = list(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), _transformer(model).config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            out[chunk] = pooled_states(model, tokenizer, [texts[i] for i in chunk], max_length).float().numpy()
    return out


class BackboneHeads(nn.Module):
    """One dropout + linear head per task over the pooled state; its classes, kind and thresholds."""

    def __init__(self, tasks: dict[str, tuple[list[str], bool]], hidden: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.tasks = {task: (list(classes), bool(multi)) for task, (classes, multi) in tasks.items()}
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({task: nn.Linear(hidden, len(classes)) for task, (classes, _) in tasks.items()})
        self.thresholds: dict[str, list[float]] = {task: [] for task in tasks}

    @classmethod
    def new(cls, tasks: dict[str, tuple[list[str], bool]], hidden: int, seed: int) -> BackboneHeads:
        torch.manual_seed(seed)
        return cls(tasks, hidden)

    def logits(self, task: str, pooled: torch.Tensor) -> torch.Tensor:
        return self.heads[task](self.dropout(pooled.float()))

    def probabilities(self, task: str, pooled: np.ndarray) -> np.ndarray:
        """Probabilities from pooled states (numpy in, numpy out; the head is one matrix product)."""
        layer = self.heads[task]
        weight, bias = layer.weight.detach().numpy(), layer.bias.detach().numpy()
        return probabilities(np.asarray(pooled, dtype=np.float32) @ weight.T + bias, self.tasks[task][1])

    def decide(self, task: str, proba: np.ndarray) -> list[tuple[str, ...]]:
        classes, multi = self.tasks[task]
        return decide(proba, classes, multi, self.thresholds.get(task, []))


def save_backbone(model: Any, heads: BackboneHeads, directory: Path, *, settings: dict[str, Any],
                  extra: dict[str, Any] | None = None) -> Path:
    """Adapter, heads and metadata; the metadata is written last, so a directory with it is complete."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / META_FILE).unlink(missing_ok=True)
    model.save_pretrained(directory / ADAPTER_DIR)
    # how to load the base again: `mentalglm export --adapter DIR/adapter --gguf` merges and converts it
    atomic_write_text(directory / ADAPTER_DIR / BASE_FILE,
                      json.dumps(asdict(_model_arguments(settings["base"], settings.get("layers"))), indent=1))
    save_file({k: v.detach().cpu().contiguous() for k, v in heads.heads.state_dict().items()},
              str(directory / HEADS_FILE))
    meta = {**settings, "tasks": {task: {"classes": classes, "multi_label": multi, "thresholds": heads.thresholds[task]}
                                  for task, (classes, multi) in heads.tasks.items()},
            "hidden": int(next(iter(heads.heads.values())).in_features), "pooling": "mean", **(extra or {})}
    atomic_write_text(directory / META_FILE, json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
    return directory


def read_backbone_meta(directory: Path) -> dict[str, Any]:
    path = directory / META_FILE
    if not path.exists():
        raise BackboneFileError(path, "missing (an unfinished or interrupted save)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        meta["tasks"], meta["base"], meta["hidden"]  # noqa: B018 - the keys every loader needs
    except (ValueError, KeyError) as exc:
        raise BackboneFileError(path, f"unreadable ({exc})") from exc
    return dict(meta)


def load_heads(directory: Path, meta: dict[str, Any] | None = None) -> BackboneHeads:
    """The heads alone (numpy-speed inference over pooled states that came from anywhere, e.g. llama.cpp)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = meta or read_backbone_meta(directory)
    heads = BackboneHeads({t: (v["classes"], v["multi_label"]) for t, v in meta["tasks"].items()}, int(meta["hidden"]))
    path = directory / HEADS_FILE
    try:
        heads.heads.load_state_dict(load_file(str(path)))
    except (OSError, RuntimeError, ValueError, SafetensorError) as exc:  # missing, truncated, other shapes
        raise BackboneFileError(path, f"unreadable ({type(exc).__name__}: {exc})") from exc
    heads.thresholds = {t: [float(x) for x in v.get("thresholds", [])] for t, v in meta["tasks"].items()}
    return heads.eval()


def load_backbone(directory: Path, *, merge: bool = False) -> tuple[Any, BackboneHeads, dict[str, Any]]:
    """(model, heads, metadata). ``merge`` folds the adapter into the base for inference speed."""
    from peft import PeftModel

    meta = read_backbone_meta(directory)
    heads = load_heads(directory, meta)
    adapter = directory / ADAPTER_DIR
    if not (adapter / "adapter_config.json").exists():
        raise BackboneFileError(adapter / "adapter_config.json", "missing")
    try:
        model = PeftModel.from_pretrained(load_backbone_base(meta["base"], meta.get("layers")), str(adapter))
    except (OSError, RuntimeError, ValueError) as exc:
        raise BackboneFileError(adapter, f"unreadable ({type(exc).__name__}: {exc})") from exc
    if merge:
        model = model.merge_and_unload()
    return model.eval(), heads, meta


def check_tasks(meta: dict[str, Any], tasks: Sequence[str]) -> None:
    missing = [t for t in tasks if t not in meta["tasks"]]
    if missing:
        raise ConfigError(f"the backbone has no head for {', '.join(missing)} (it has {', '.join(meta['tasks'])})")


# --------------------------------------------------------------------------- reading posts


class TorchReader:
    """Pooled states from the base with the adapter merged in (transformers, float32); ``int8`` quantises the MLP's
    gate and up projections dynamically (``INT8_LAYERS``: about 1.4x float32's speed here; ``auto`` takes it only
    when the export's check finds it close).

    Loads ``merged/`` (written by ``backbone export``) when it is there and was merged from this adapter: seconds,
    against a minute or more to dequantise the GGUF base and merge the adapter at every start."""

    def __init__(self, directory: Path, max_length: int | None = None, *, int8: bool = False) -> None:
        self.engine = "torch-int8" if int8 else "torch"
        self.meta = read_backbone_meta(directory)
        merged = directory / MERGED_DIR
        if (merged / MERGED_STAMP).is_file():  # the tokenizer saved beside it: no GGUF vocabulary to convert
            from transformers import AutoTokenizer

            self.model, self.heads = load_merged(directory), load_heads(directory, self.meta)
            self.tokenizer = AutoTokenizer.from_pretrained(str(merged))
        else:
            self.model, self.heads, self.meta = load_backbone(directory, merge=True)
            self.tokenizer = load_backbone_tokenizer(self.meta["base"])
        if int8:
            self.model = quantise_int8(self.model)
        self.max_length = int(max_length or self.meta.get("max_length", 128))

    def pooled(self, texts: Sequence[str]) -> np.ndarray:
        return embed_texts(self.model, self.tokenizer, texts, self.max_length)


# The decoder's linear layers quantised by ``torch-int8``: the MLP's gate and up projections only. Qwen's hidden states
# carry a few very large activation channels, and one activation scale a batch rounds the rest away where they are
# read: every linear layer quantised gave a pooled-state cosine of 0.79 against float32 (77 % identical labels), every
# one but down_proj 0.80, all but down_proj and the first two layers 0.987; gate and up alone 0.991 (98 % identical
# labels, 1.37x float32's speed; 150 validation posts, docs/backbone.md).
INT8_LAYERS = ("gate_proj", "up_proj")


def quantise_int8(model: Any) -> Any:
    """The decoder's ``INT8_LAYERS`` as int8 with dynamic activation scales (weights per channel); pooling never reads
    the LM head, so it is left alone."""
    import warnings

    decoder = _transformer(model)
    spec = {name: torch.ao.quantization.per_channel_dynamic_qconfig for name, module in decoder.named_modules()
            if isinstance(module, nn.Linear) and name.endswith(INT8_LAYERS)}
    if not spec:  # another architecture's names: quantising nothing would pass the check and gain nothing
        raise ConfigError(f"torch-int8: no linear layer named {' or '.join(INT8_LAYERS)} in the decoder")
    with warnings.catch_warnings():  # torch marks torch.ao.quantization deprecated; 2.13 (pinned) has it all
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.ao.quantization.quantize_dynamic(decoder, spec, dtype=torch.qint8, inplace=True)
    return model


def merge_for_reading(directory: Path) -> Path:
    """``merged/``: the adapter folded into the base, saved as safetensors (float32) with the SHA-256 of the
    adapter it came from, so that a reader starts in seconds and never reads a copy of another adapter."""
    import shutil
    import tempfile

    from mentalglm.files import sha256_file
    from mentalglm.train.export import merge_adapter

    meta = read_backbone_meta(directory)
    target = directory / MERGED_DIR
    with tempfile.TemporaryDirectory(prefix="backbone-merged-", dir=directory) as scratch:
        staged = merge_adapter(directory / ADAPTER_DIR, Path(scratch) / MERGED_DIR, base=meta["base"], dtype="float32")
        stamp = {"adapter_sha256": sha256_file(directory / ADAPTER_DIR / ADAPTER_WEIGHTS)}
        atomic_write_text(staged / MERGED_STAMP, json.dumps(stamp, indent=1) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(staged, target)
    return target


def check_merged(directory: Path) -> None:
    """Refuse ``merged/`` unless its stamp names this directory's adapter (a cheap check: no weights are read)."""
    from mentalglm.files import sha256_file

    merged, adapter = directory / MERGED_DIR, directory / ADAPTER_DIR / ADAPTER_WEIGHTS
    try:
        stamp = json.loads((merged / MERGED_STAMP).read_text(encoding="utf-8"))
        same = stamp["adapter_sha256"] == sha256_file(adapter)
    except (OSError, ValueError, KeyError) as exc:
        raise BackboneFileError(merged / MERGED_STAMP, f"unreadable ({exc})", EXPORT_AGAIN) from exc
    if not same:
        raise BackboneFileError(merged, f"merged from another adapter than {adapter}", EXPORT_AGAIN)


def load_merged(directory: Path) -> Any:
    """The merged copy, after checking that it was merged from this directory's adapter."""
    from transformers import AutoModelForCausalLM

    check_merged(directory)
    merged = directory / MERGED_DIR
    try:
        return AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    except (OSError, RuntimeError, ValueError) as exc:
        raise BackboneFileError(merged, f"unreadable ({type(exc).__name__}: {exc})", EXPORT_AGAIN) from exc


class LlamaCppReader:
    """Pooled states from the merged model exported to GGUF, read by llama.cpp in embedding mode (mean pooling:
    the same vector as TorchReader's, up to the GGUF's rounding; the backbone card records the measured gap)."""

    engine = "llamacpp"

    def __init__(self, directory: Path, gguf: Path, threads: int | None = None) -> None:
        import llama_cpp

        from mentalglm.backends.llamacpp import default_threads

        self.meta = read_backbone_meta(directory)
        self.heads = load_heads(directory, self.meta)
        if not gguf.is_file():
            raise BackboneFileError(gguf, "missing", "write it with `mentalglm backbone export`")
        self.max_length = int(self.meta.get("max_length", 128))
        threads = threads or default_threads()  # reading a post is all batch work: both counts matter
        self.llm = llama_cpp.Llama(str(gguf), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                                   n_ctx=self.max_length * 8, n_batch=self.max_length * 8,
                                   n_ubatch=self.max_length * 8, n_seq_max=8, n_threads=threads,
                                   n_threads_batch=threads, verbose=False)

    def pooled(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), int(self.meta["hidden"])), dtype=np.float32)
        for start in range(0, len(texts), 8):
            chunk = [self._clip(t) for t in texts[start:start + 8]]
            out[start:start + len(chunk)] = np.asarray(self.llm.embed(chunk, normalize=False), dtype=np.float32)
        return out

    def _clip(self, text: str) -> str:
        """The text cut to ``max_length`` tokens, as the tokenizer cut it in training."""
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if len(tokens) <= self.max_length:
            return text
        return self.llm.detokenize(tokens[:self.max_length]).decode("utf-8", errors="ignore")


@dataclass
class SharedReader:
    """One reader for every task's head: a post read once serves all of them (the last call's texts are kept)."""

    reader: TorchReader | LlamaCppReader
    _last: tuple[list[str], np.ndarray] | None = field(default=None, repr=False)

    def pooled(self, texts: Sequence[str]) -> np.ndarray:
        """An empty text (a post less its only clause, in occlusion) reads as the zero vector: what a padded torch
        batch already gave it, and what no reader can compute alone (no token to pool)."""
        texts = list(texts)
        if self._last is None or self._last[0] != texts:
            read = [i for i, text in enumerate(texts) if text]
            out = np.zeros((len(texts), int(self.reader.meta["hidden"])), dtype=np.float32)
            if read:
                out[read] = self.reader.pooled([texts[i] for i in read])
            self._last = (texts, out)
        return self._last[1]


@dataclass
class BackboneHead:
    """One task's head over the shared reader: the Classifier protocol (train/classical.py)."""

    shared: SharedReader
    task_id: str

    @property
    def classes(self) -> list[str]:
        return self.shared.reader.heads.tasks[self.task_id][0]

    @property
    def multi_label(self) -> bool:
        return self.shared.reader.heads.tasks[self.task_id][1]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.shared.reader.heads.probabilities(self.task_id, self.shared.pooled(texts))

    def decide(self, proba: np.ndarray) -> list[tuple[str, ...]]:
        return self.shared.reader.heads.decide(self.task_id, proba)

    def predict(self, texts: Sequence[str]) -> list[tuple[str, ...]]:
        return self.decide(self.predict_proba(texts))


# --------------------------------------------------------------------------- GGUF


def gguf_path(directory: Path, gguf_type: str) -> Path:
    return directory / f"backbone-{gguf_type}.gguf"


def export_gguf(directory: Path, gguf_type: str = "q8_0") -> Path:
    """The merged model (``merged/``, written first when missing) converted to GGUF beside the heads
    (``backbone-<type>.gguf``)."""
    from mentalglm.train.export import find_converter

    find_converter(fetch=True)  # fail before the slow merge when there is none to be had
    merged = directory / MERGED_DIR
    try:
        check_merged(directory)
    except BackboneFileError:  # missing, unreadable or from another adapter: this command writes it again
        merge_for_reading(directory)
    return _convert_whole(merged, gguf_path(directory, gguf_type), gguf_type)


def _convert_whole(merged: Path, target: Path, gguf_type: str) -> Path:
    """Convert to a partial file beside ``target``, then move it in: a GGUF there is never a cut one."""
    import shutil

    from mentalglm.train.export import convert_to_gguf

    partial = target.with_name(target.name + ".partial")
    convert_to_gguf(merged, partial, gguf_type)
    shutil.move(partial, target)
    return target


# --------------------------------------------------------------------------- the explaining half

EXPLAINER_KEY = "explainer"  # backbone.json: the explainer GGUF beside the heads, and what it was made from


def attach_explainer(directory: Path, adapter: Path, gguf_type: str = "q8_0") -> Path:
    """The explaining half beside the heads: an SFT adapter trained above this backbone's adapter (its
    ``base_adapter``, configs/cpu-backbone-explainer.yaml) merged into the base and converted to GGUF
    (``explainer-<type>.gguf``), recorded in backbone.json; the analyzer's LLM engines then explain with it.

    An adapter trained above another backbone is refused: its lower layers would not be the ones the heads read."""
    import tempfile

    from mentalglm.files import sha256_file
    from mentalglm.train.export import GGUF_TYPES, base_arguments, find_converter, merge_adapter

    own = directory / ADAPTER_DIR / ADAPTER_WEIGHTS
    if not own.is_file():
        raise BackboneFileError(own, "missing")
    if not (adapter / ADAPTER_WEIGHTS).is_file():
        raise ConfigError(f"{adapter} is not a LoRA adapter directory (no {ADAPTER_WEIGHTS}); point --adapter at "
                          "<output_dir>/explainer/adapter")
    trained_above = base_arguments(adapter).base_adapter_sha256
    if trained_above != sha256_file(own):
        raise ConfigError(f"{adapter} was not trained above this backbone's adapter {own} (it records "
                          f"{(trained_above or 'no base adapter')[:12]}): train it with base_adapter: "
                          f"{directory / ADAPTER_DIR}")
    if gguf_type not in GGUF_TYPES:
        raise ConfigError(f"GGUF type {gguf_type!r} is not one of {', '.join(GGUF_TYPES)}")
    find_converter(fetch=True)  # fail before the slow merge when there is none to be had
    target = directory / f"explainer-{gguf_type}.gguf"
    with tempfile.TemporaryDirectory(prefix="backbone-merged-", dir=directory) as scratch:
        # folded from this copy's adapter (its digest checked above), wherever the one trained with now lives
        merged = merge_adapter(adapter, Path(scratch) / MERGED_DIR, base_adapter=own.parent)
        _convert_whole(merged, target, gguf_type)
    meta = read_backbone_meta(directory)
    meta[EXPLAINER_KEY] = {"file": target.name, "bytes": target.stat().st_size,
                           "adapter_sha256": sha256_file(adapter / ADAPTER_WEIGHTS), "trained_above": trained_above}
    atomic_write_text(directory / META_FILE, json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
    return target


def explainer_gguf(directory: Path) -> tuple[Path, str] | None:
    """The explainer GGUF that backbone.json records and the digest of the adapter it was merged from (None: the
    backbone has none). A recorded one that is missing, cut short, or trained above another adapter than this
    directory's (the heads were retrained since) is refused by name, never replaced by another LLM."""
    from mentalglm.files import sha256_file

    record = read_backbone_meta(directory).get(EXPLAINER_KEY)
    if not record:
        return None
    path, again = directory / record["file"], "write it again with `mentalglm backbone explainer`"
    if not path.is_file():
        raise BackboneFileError(path, "missing", again)
    if path.stat().st_size != record.get("bytes", path.stat().st_size):
        raise BackboneFileError(path, f"{path.stat().st_size} bytes, {record['bytes']} recorded (a cut copy)", again)
    if record.get("trained_above") != sha256_file(directory / ADAPTER_DIR / ADAPTER_WEIGHTS):
        raise BackboneFileError(path, "trained above another adapter than this backbone's (retrained since)",
                                "retrain the explainer above it, then " + again)
    return path, str(record.get("adapter_sha256", ""))


def agreement(reference: Any, other: Any, texts: dict[str, list[str]]) -> dict[str, Any]:
    """Two readers on the same posts: pooled-state cosine, label agreement, largest probability gap."""
    heads = reference.heads
    cosines, same, gaps = [], [], []
    for task_id, task_texts in texts.items():
        a, b = reference.pooled(task_texts), other.pooled(task_texts)
        cosines += list((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12))
        pa, pb = heads.probabilities(task_id, a), heads.probabilities(task_id, b)
        same += [x == y for x, y in zip(heads.decide(task_id, pa), heads.decide(task_id, pb), strict=True)]
        gaps.append(float(np.abs(pa - pb).max()) if len(pa) else 0.0)
    return {"posts": len(same), "cosine_min": round(float(min(cosines, default=1.0)), 5),
            "same_labels": round(float(np.mean(same)) if same else 1.0, 4),
            "max_probability_gap": round(max(gaps, default=0.0), 4)}


def check_engines(directory: Path, gguf: Path | None, texts: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """The faster engines against transformers float32 on the same posts, kept in backbone.json (``gguf`` per
    file, ``int8``): the analyzer's ``auto`` reads with an engine only when its check is recorded and close."""
    reference = TorchReader(directory)
    records = {"int8": {**agreement(reference, TorchReader(directory, int8=True), texts), "layers": list(INT8_LAYERS)}}
    if gguf is not None:
        records["gguf"] = {"file": gguf.name, **agreement(reference, LlamaCppReader(directory, gguf), texts)}
    meta = read_backbone_meta(directory)
    meta["int8"] = records["int8"]
    if gguf is not None:
        meta.setdefault("gguf", {})[gguf.name] = records["gguf"]
    atomic_write_text(directory / META_FILE, json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
    return records


ENGINES = ("auto", "torch", "torch-int8", "llamacpp")
# The q8_0 export of the first real run: min cosine 0.9992 over 150 validation posts, 98 % identical labels
# (the rest on a threshold), largest probability gap 0.017 (`backbone export`); a GGUF below this floor is not
# read unless forced.
GGUF_MIN_COSINE = 0.999
INT8_MIN_COSINE = 0.99  # per-channel int8 weights round more than q8_0's 32-value blocks


def choose_engine(directory: Path, engine: str = "auto") -> tuple[str, Path | None]:
    """(engine, GGUF) for reading posts; ``torch``, ``torch-int8`` and ``llamacpp`` force one.

    ``auto`` reads with the fastest engine whose check ``backbone export`` recorded as close to transformers
    float32 (benchmarks/bench_backbone.py, docs/backbone.md): torch int8 from the merged copy, else llama.cpp on
    a GGUF (pooled cosine >= ``GGUF_MIN_COSINE`` on every checked post), else transformers float32. The analyzer
    tunes its weights and thresholds on the engine that reads and records it, so a saved model keeps reading with it.
    """
    if engine not in ENGINES:
        raise ConfigError(f"backbone engine {engine!r} is not one of {', '.join(ENGINES)}")
    meta = read_backbone_meta(directory)
    int8 = meta.get("int8", {})  # checked with the layers int8 quantises now (a check of other layers is stale)
    if engine == "auto" and (directory / MERGED_DIR / MERGED_STAMP).is_file() \
            and int8.get("layers") == list(INT8_LAYERS) and int8.get("cosine_min", 0.0) >= INT8_MIN_COSINE:
        return "torch-int8", None
    checked = {name: rec for name, rec in meta.get("gguf", {}).items() if (directory / name).is_file()}
    faithful = sorted(name for name, rec in checked.items() if rec.get("cosine_min", 0.0) >= GGUF_MIN_COSINE)
    if engine == "llamacpp" or (engine == "auto" and faithful):
        if not checked:
            raise BackboneFileError(directory / "backbone-q8_0.gguf", "missing",
                                    "write it with `mentalglm backbone export`, or read with the torch engine")
        return "llamacpp", directory / (faithful or sorted(checked))[0]
    return ("torch-int8" if engine == "torch-int8" else "torch"), None


_SHARED: dict[tuple[str, str], SharedReader] = {}


def shared_backbone(directory: Path, task_id: str, *, engine: str = "auto") -> BackboneHead:
    """A task's head on the one reader of ``directory`` in this process (loaded once for every task)."""
    chosen, gguf = choose_engine(directory, engine)
    key = (str(directory.resolve()), chosen)
    if key not in _SHARED:
        reader = LlamaCppReader(directory, gguf) if gguf is not None else \
            TorchReader(directory, int8=chosen == "torch-int8")
        _SHARED[key] = SharedReader(reader)
    check_tasks(_SHARED[key].reader.meta, [task_id])
    return BackboneHead(_SHARED[key], task_id)
