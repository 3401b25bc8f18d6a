"""Tiny model, synthetic chat data and a run-config writer shared by the training tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

SAMPLES = [  # invented, not rows of any dataset
    ("帖子：“今天又失眠了，什么都不想做。”问题：这个帖子是否显示抑郁？", "是。推理：“什么都不想做”显示兴趣丧失。"),
    ("帖子：“周末和朋友去爬山，好开心！”问题：这个帖子是否显示抑郁？", "否。推理：帖子表达了愉快的情绪。"),
    ("Post: I can't sleep and nothing matters. Question: Does the poster suffer from depression?",
     "Yes. Reasoning: the poster reports insomnia and hopelessness."),
    ("帖子：“考试没考好，有点难过。”问题：这个帖子是否显示抑郁？", "否。推理：短暂的难过不等于抑郁。"),
]


def write_chat_jsonl(path: Path, n: int = 8) -> Path:
    rows = []
    for i in range(n):
        user, answer = SAMPLES[i % len(SAMPLES)]
        rows.append({"id": f"s{i}", "task": "toy", "messages": [
            {"role": "system", "content": "你是一名心理健康分析助手。"},
            {"role": "user", "content": user}, {"role": "assistant", "content": answer}]})
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mentalglm.backends.tiny import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def run_yaml(tmp_path: Path, tiny_model: Path):
    """Write a two-stage tiny run config; keyword arguments replace top-level keys."""
    stage1 = write_chat_jsonl(tmp_path / "stage1.chat.jsonl")
    cimhi = tmp_path / "cimhi"
    cimhi.mkdir()
    write_chat_jsonl(cimhi / "train.chat.jsonl", n=6)

    def make(**overrides: Any) -> Path:
        raw: dict[str, Any] = {
            "name_or_path": str(tiny_model), "dtype": "float32",
            "stages": [{"name": "imhi", "datasets": [str(stage1)]},
                       {"name": "cimhi", "datasets": [f"cimhi:{cimhi}"]}],
            "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": "all-linear",
            "output_dir": str(tmp_path / "run"), "learning_rate": 1e-3, "max_steps": 3,
            "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 256,
            "save_steps": 2, "logging_steps": 1, "warmup_ratio": 0.0, "seed": 7,
        }
        raw.update(overrides)
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
        return path

    return make
