"""Run configs: shipped examples validate; mistakes fail early with the key, the path or the fix."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from mentalglm.errors import ConfigError
from mentalglm.train.config import RunConfig, load_run_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXPLAINER = CONFIGS / "cpu-backbone-explainer.yaml"  # one stage on the builder's explainer rows, not the recipe
SHIPPED = sorted(p for p in CONFIGS.glob("*.yaml") if p != EXPLAINER)


def test_configs_are_shipped() -> None:
    names = {p.name for p in SHIPPED}
    assert {"paper-glm4-9b-chat.yaml", "paper-glm4-9b.yaml", "cpu-qwen2.5-0.5b.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_validates(path: Path) -> None:
    config = load_run_config(path, check_files=False, check_model=False)
    assert isinstance(config, RunConfig)
    assert [s.name for s in config.data.stages][0].startswith("imhi")
    # English IMHI first, then one or more Chinese C-IMHI stages (the long CPU run adds a suicide-risk stage)
    assert len(config.data.stages) >= 2
    assert all(d.startswith("cimhi:") for stage in config.data.stages[1:] for d in stage.datasets)
    assert isinstance(config.training.learning_rate, float) and config.training.learning_rate > 0
    assert isinstance(config.lora.lora_r, int)


def test_the_explainer_config_trains_above_the_backbone_adapter() -> None:
    config = load_run_config(EXPLAINER, check_files=False, check_model=False)
    assert config.model.base_adapter == "runs/backbone-l12/best/adapter"
    assert config.lora.layers_to_transform == list(range(12, 24))  # the heads read the first 12 layers
    assert config.data.stages[0].datasets[0].endswith("train.explainer.jsonl")


def test_paper_configs_use_glm4() -> None:
    chat = load_run_config(CONFIGS / "paper-glm4-9b-chat.yaml", check_files=False, check_model=False)
    base = load_run_config(CONFIGS / "paper-glm4-9b.yaml", check_files=False, check_model=False)
    assert chat.model.name_or_path == "THUDM/glm-4-9b-chat" and base.model.name_or_path == "THUDM/glm-4-9b"
    assert chat.training.bf16 and chat.model.dtype == "bfloat16" and chat.model.trust_remote_code
    assert chat.data.stages[1].datasets[0].startswith("cimhi:")


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_accelerate_configs_parse(name: str) -> None:
    raw = yaml.safe_load((CONFIGS / "accelerate" / f"{name}.yaml").read_text())
    expected = {"ddp": "MULTI_GPU", "fsdp": "FSDP"}.get(name, "DEEPSPEED")
    assert raw["distributed_type"] == expected
    if name.startswith("deepspeed"):
        assert raw["deepspeed_config"]["zero_stage"] == int(name[-1])


def test_unknown_key_names_it_and_the_known_ones(run_yaml) -> None:
    with pytest.raises(ConfigError) as error:
        load_run_config(run_yaml(lora_rank=8))
    message = str(error.value)
    assert "'lora_rank'" in message and "did you mean 'lora_r'" in message and "learning_rate" in message


def test_unknown_stage_key(run_yaml, tmp_path: Path) -> None:
    path = run_yaml(stages=[{"name": "s", "datasets": [str(tmp_path / "stage1.chat.jsonl")], "epochs": 2}])
    with pytest.raises(ConfigError, match=r"stages\[0\].*'epochs'.*num_train_epochs"):
        load_run_config(path)


def test_wrong_type_names_the_key(run_yaml) -> None:
    with pytest.raises(ConfigError, match="lora_r must be int"):
        load_run_config(run_yaml(lora_r="eight"))


def test_yaml_exponent_string_is_a_float(run_yaml) -> None:
    assert load_run_config(run_yaml(learning_rate="1e-4")).training.learning_rate == 1e-4


def test_missing_dataset_file_is_named(run_yaml, tmp_path: Path) -> None:
    missing = tmp_path / "nope.chat.jsonl"
    with pytest.raises(ConfigError, match=str(missing)):
        load_run_config(run_yaml(stages=[{"name": "s", "datasets": [str(missing)]}]))


def test_bad_imhi_part(run_yaml) -> None:
    with pytest.raises(ConfigError, match="DR/train"):
        load_run_config(run_yaml(stages=[{"name": "s", "datasets": ["imhi:DR/trian"]}]))


def test_missing_model_directory(run_yaml, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(run_yaml(name_or_path=str(tmp_path / "no-model")))


def test_uncached_hub_id_offline_suggests_a_local_path(run_yaml, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    started = time.monotonic()
    with pytest.raises(ConfigError, match="local-dir") as error:
        load_run_config(run_yaml(name_or_path="THUDM/glm-4-9b-chat"))
    assert "name_or_path" in str(error.value)
    assert time.monotonic() - started < 5


def test_weights_must_match_datasets(run_yaml, tmp_path: Path) -> None:
    path = run_yaml(stages=[{"name": "s", "datasets": [str(tmp_path / "stage1.chat.jsonl")], "weights": [1, 2]}])
    with pytest.raises(ConfigError, match="one weight per dataset"):
        load_run_config(path)
