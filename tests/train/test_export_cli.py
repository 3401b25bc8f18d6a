"""`mentalglm train` / `mentalglm export` on the tiny model: dry run, merge, and the GGUF converter error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mentalglm.cli import app
from mentalglm.train.export import ConverterNotFoundError, find_converter

torch.set_num_threads(1)
runner = CliRunner()


def test_dry_run_loads_no_model(run_yaml) -> None:
    result = runner.invoke(app, ["train", "--config", str(run_yaml()), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "config is valid" in result.output and "imhi" in result.output and "cimhi" in result.output


def test_train_then_export_merged_weights_match_the_adapter(run_yaml, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = run_yaml(stages=[{"name": "s1", "datasets": [str(tmp_path / "stage1.chat.jsonl")]}],
                      learning_rate=0.05)
    result = runner.invoke(app, ["train", "--config", str(config), "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    adapter = tmp_path / "run" / "s1" / "adapter"
    out = tmp_path / "merged"
    result = runner.invoke(app, ["export", "--adapter", str(adapter), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()

    ids = torch.tensor([[5, 17, 42, 99]])
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(_base(adapter), dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, str(adapter))
    torch.testing.assert_close(merged(ids).logits, with_adapter(ids).logits, atol=1e-5, rtol=1e-4)
    with with_adapter.disable_adapter():  # the adapter changed something, so the comparison means something
        assert not torch.allclose(with_adapter(ids).logits, merged(ids).logits, atol=1e-6)


def _base(adapter: Path) -> str:
    import json

    return json.loads((adapter / "mentalglm_base.json").read_text())["name_or_path"]


def test_missing_gguf_converter_says_what_to_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LLAMA_CPP_CONVERTER", raising=False)
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ConverterNotFoundError, match="llama.cpp") as error:
        find_converter()
    assert "convert_hf_to_gguf.py" in str(error.value) and "LLAMA_CPP_DIR" in str(error.value)


def test_converter_found_through_llama_cpp_dir(monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "convert_hf_to_gguf.py").write_text("# stand-in\n")
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path))
    assert find_converter() == tmp_path / "convert_hf_to_gguf.py"


def test_export_gguf_fails_before_merging_without_converter(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LLAMA_CPP_CONVERTER", raising=False)
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    result = runner.invoke(app, ["export", "--adapter", str(tmp_path / "a"), "--out", str(tmp_path / "o"), "--gguf"])
    assert isinstance(result.exception, ConverterNotFoundError)
    assert not (tmp_path / "o").exists()
