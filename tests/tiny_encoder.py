"""A random XLM-R encoder (hidden 32, 2 layers) with a character vocabulary: the encoder and ensemble tests'."""

from __future__ import annotations

from pathlib import Path


def build_tiny_xlmr(directory: Path, text: str) -> Path:
    """Save the model and its tokenizer (the characters of ``text``) under ``directory``; returns it."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizer

    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁", *sorted(set(text)), "<mask>"]
    vocab = [(p, 0.0 if p.startswith("<") else -1.0) for p in pieces]
    tokenizer = XLMRobertaTokenizer(vocab=vocab, model_max_length=64)
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(pieces), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=37, max_position_embeddings=80, pad_token_id=1, bos_token_id=0,
                              eos_token_id=2)
    XLMRobertaModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
