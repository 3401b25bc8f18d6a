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


def test_an_adapter_trained_above_a_folded_base_adapter_leaves_the_lower_layers_as_they_were(run_yaml, tmp_path) -> None:
    """The backbone tier's explainer: the heads' adapter folded into the base (``base_adapter``), a new adapter on the
    upper layers only (``layers_to_transform``), so the states the heads read are those of the folded base."""
    from peft import LoraConfig, get_peft_model

    from mentalglm.train.config import ModelArguments
    from mentalglm.train.export import merge_adapter
    from mentalglm.train.sft import load_base_model

    config = load_run_config(run_yaml(max_steps=2))
    base_args = config.model
    plain = load_base_model(base_args)
    n_layers = len(plain.get_decoder().layers)
    linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    heads = get_peft_model(plain, LoraConfig(r=4, lora_alpha=8, target_modules=linear,
                                              layers_to_transform=[0], init_lora_weights=False))
    heads.save_pretrained(tmp_path / "heads")
    folded = load_base_model(ModelArguments(**{**base_args.__dict__, "base_adapter": str(tmp_path / "heads")}))
    again = load_base_model(base_args)
    changed = [name for name, weight in folded.state_dict().items() if not torch.equal(weight, again.state_dict()[name])]
    assert changed and all(".layers.0." in name for name in changed)

    config = load_run_config(run_yaml(max_steps=2, base_adapter=str(tmp_path / "heads"),
                                      target_modules=linear, layers_to_transform=[n_layers - 1]))
    adapters = run_training(config)
    trained = load_file(adapters[-1] / "adapter_model.safetensors")
    assert trained and all(f".layers.{n_layers - 1}." in name for name in trained)
    merged = merge_adapter(adapters[-1], tmp_path / "merged")
    from transformers import AutoModelForCausalLM

    whole = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).state_dict()
    for name, weight in folded.state_dict().items():  # every layer below the explainer's is the folded base's
        if f".layers.{n_layers - 1}." not in name and "lm_head" not in name:
            assert torch.equal(weight, whole[name]), name
    recorded = json.loads((adapters[-1] / "mentalglm_base.json").read_text(encoding="utf-8"))
    assert recorded["base_adapter"] == str((tmp_path / "heads").resolve()) and len(recorded["base_adapter_sha256"]) == 64
    heads.base_model.model.model.layers[0].self_attn.q_proj.lora_B.default.weight.data += 1.0  # a retrained backbone
    heads.save_pretrained(tmp_path / "heads")
    with pytest.raises(Exception, match="changed since"):
        merge_adapter(adapters[-1], tmp_path / "merged-again")
    with pytest.raises(Exception, match="base_adapter"):
        load_run_config(run_yaml(base_adapter=str(tmp_path / "nothing")))
    with pytest.raises(Exception, match="layers_to_transform"):
        load_run_config(run_yaml(layers_to_transform=[0]))  # PEFT needs the module names listed


def test_a_base_adapter_trained_on_a_cut_of_the_base_folds_into_its_layers_without_a_missing_keys_warning(
        run_yaml, tmp_path) -> None:
    """The backbone tier trains its adapter on the first layers only (no ``layers_to_transform`` in its config):
    folded into the whole base it changes those layers and PEFT is not left warning about the others."""
    import warnings

    from peft import LoraConfig, get_peft_model

    from mentalglm.train.config import ModelArguments
    from mentalglm.train.sft import keep_layers, load_base_model

    base_args = load_run_config(run_yaml(max_steps=2)).model
    cut = keep_layers(load_base_model(base_args), 1)
    heads = get_peft_model(cut, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    heads.save_pretrained(tmp_path / "heads")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folded = load_base_model(ModelArguments(**{**base_args.__dict__, "base_adapter": str(tmp_path / "heads")}))
    assert not [w for w in caught if "missing adapter keys" in str(w.message)]
    plain = load_base_model(base_args).state_dict()
    changed = [name for name, weight in folded.state_dict().items() if not torch.equal(weight, plain[name])]
    assert changed and all(".layers.0." in name for name in changed)
    assert len(folded.get_decoder().layers) > 1
