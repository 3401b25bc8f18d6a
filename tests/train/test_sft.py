"""LoRA SFT on the tiny model: loss masks, a few steps, resume after a kill, stage 2 from stage 1."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from mentalglm.train.config import load_run_config
from mentalglm.train.sft import build_trainer, read_log, run_training

torch.set_num_threads(1)

GENERATION_TEMPLATE = (  # ChatML with {% generation %} markers around the assistant's answer
    "{%- for message in messages %}{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


class StepCounter(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps.append(state.global_step)


class KillAfterSave(TrainerCallback):
    """Simulates a kill right after a checkpoint is written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated kill")


def _masked_text(trainer: Any, index: int = 0) -> str:
    row = trainer.train_dataset[index]
    kept = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
    return trainer.processing_class.decode(kept)


@pytest.mark.parametrize("template", [None, GENERATION_TEMPLATE], ids=["prompt-completion", "generation-markers"])
def test_loss_mask_covers_exactly_the_answer(run_yaml, template: str | None) -> None:
    config = load_run_config(run_yaml(chat_template=template) if template else run_yaml())
    stage = config.data.stages[0]
    trainer = build_trainer(config, stage, None)
    tokenizer = trainer.processing_class
    row = trainer.train_dataset[0]
    messages = [json.loads(line)["messages"] for line in Path(stage.datasets[0]).read_text().splitlines()]
    # the dataset is shuffled: find this row's conversation through its rendered text
    rendered = tokenizer.decode(row["input_ids"])
    conversation = next(m for m in messages if tokenizer.apply_chat_template(m, tokenize=False) == rendered)
    full = tokenizer.apply_chat_template(conversation, tokenize=False)
    prompt = tokenizer.apply_chat_template(conversation[:-1], tokenize=False, add_generation_prompt=True)
    answer = conversation[-1]["content"]
    assert full.startswith(prompt) and full[len(prompt):] == answer + "<|im_end|>\n"
    expected = answer + "<|im_end|>" + ("" if template else "\n")  # the marked block ends before the newline
    assert _masked_text(trainer) == expected


def test_three_steps_finite_loss_and_csv_log(run_yaml, tmp_path: Path) -> None:
    config = load_run_config(run_yaml(stages=[{"name": "s1", "datasets": [str(tmp_path / "stage1.chat.jsonl")]}]))
    (adapter,) = run_training(config)
    rows = read_log(Path(config.training.output_dir) / "s1" / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(math.isfinite(float(r["loss"])) for r in rows) and rows[1]["learning_rate"] != ""
    tokens = [float(r["num_tokens"]) for r in rows]  # what tokens/s is computed from, with the wall clock
    assert tokens[0] > 0 and tokens == sorted(tokens) and float(rows[-1]["time"]) >= float(rows[0]["time"]) > 0
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "mentalglm_base.json").is_file()
    done = json.loads((adapter.parent / "done.json").read_text())
    assert done["global_step"] == 3 and math.isfinite(done["train_loss"])


def test_same_seed_same_adapter(run_yaml, tmp_path: Path) -> None:
    stages = [{"name": "s1", "datasets": [str(tmp_path / "stage1.chat.jsonl")]}]
    first = run_training(load_run_config(run_yaml(stages=stages, output_dir=str(tmp_path / "a"))))[0]
    second = run_training(load_run_config(run_yaml(stages=stages, output_dir=str(tmp_path / "b"))))[0]
    a, b = load_file(first / "adapter_model.safetensors"), load_file(second / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_kill_continues_and_finished_stage_is_skipped(run_yaml, tmp_path: Path) -> None:
    stages = [{"name": "s1", "datasets": [str(tmp_path / "stage1.chat.jsonl")]}]
    config = load_run_config(run_yaml(stages=stages, max_steps=4, save_steps=2))
    stage_dir = Path(config.training.output_dir) / "s1"
    with pytest.raises(KeyboardInterrupt):
        run_training(config, callbacks=[KillAfterSave(2)])
    assert (stage_dir / "checkpoint-2").is_dir() and not (stage_dir / "done.json").exists()

    counter = StepCounter()
    run_training(config, callbacks=[counter])
    assert counter.steps == [3, 4]  # continued from checkpoint-2: steps 1-2 were not redone
    assert [int(r["step"]) for r in read_log(stage_dir / "train_log.csv")] == [1, 2, 3, 4]
    done = json.loads((stage_dir / "done.json").read_text())
    assert done["global_step"] == 4 and done["resumed_from"].endswith("checkpoint-2")

    again = StepCounter()
    run_training(config, callbacks=[again])
    assert again.steps == []  # a finished stage is skipped, never redone


def test_stage_two_starts_from_stage_one_adapter(run_yaml) -> None:
    config = load_run_config(run_yaml(max_steps=2))
    stage1, stage2 = config.data.stages
    adapter1 = run_training(config.__class__(config.model, config.data.__class__([stage1]), config.lora,
                                             config.training))[0]
    trainer = build_trainer(config, stage2, adapter1)
    trained = load_file(adapter1 / "adapter_model.safetensors")
    state = {k.replace(".default", ""): v for k, v in trainer.model.state_dict().items() if "lora_" in k}
    assert trained.keys() == state.keys()
    assert all(torch.equal(trained[k], state[k]) for k in trained)
    assert any(p.requires_grad for n, p in trainer.model.named_parameters() if "lora_" in n)

    adapters = run_training(config)
    assert json.loads((adapters[1].parent / "done.json").read_text())["previous_adapter"] == str(adapters[0])
    after = load_file(adapters[1] / "adapter_model.safetensors")
    assert any(not torch.equal(trained[k], after[k]) for k in trained)
