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


@pytest.fixture(autouse=True)
def _empty_converter_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MENTALGLM_CACHE", str(tmp_path / "cache"))


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

    def offline(version: str | None = None) -> Path:
        raise ConverterNotFoundError(["the sdist could not be downloaded (offline)"])

    monkeypatch.setattr("mentalglm.train.export.fetch_converter", offline)
    result = runner.invoke(app, ["export", "--adapter", str(tmp_path / "a"), "--out", str(tmp_path / "o"), "--gguf"])
    assert isinstance(result.exception, ConverterNotFoundError)
    assert not (tmp_path / "o").exists()


def _fake_sdist(path: Path, with_converter: bool = True) -> Path:
    """A tarball laid out like llama-cpp-python's sdist: the converter and gguf-py under vendor/llama.cpp."""
    import io
    import tarfile

    files = {"llama_cpp_python-9.9.9/vendor/llama.cpp/gguf-py/gguf/__init__.py": b"VERSION = 'vendored'\n",
             "llama_cpp_python-9.9.9/vendor/llama.cpp/conversion/__init__.py": b"",
             "llama_cpp_python-9.9.9/vendor/llama.cpp/README.md": b"not needed\n",
             "llama_cpp_python-9.9.9/pyproject.toml": b"[project]\n"}
    if with_converter:
        files["llama_cpp_python-9.9.9/vendor/llama.cpp/convert_hf_to_gguf.py"] = (
            b"import sys, gguf\nopen(sys.argv[sys.argv.index('--outfile') + 1], 'w').write(gguf.VERSION)\n")
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_converter_unpacked_from_the_sdist_with_its_own_gguf(tmp_path: Path) -> None:
    from mentalglm.train.export import unpack_converter

    target = tmp_path / "cache" / "9.9.9"
    target.parent.mkdir(parents=True)
    converter = unpack_converter(_fake_sdist(tmp_path / "x.tar.gz"), target)
    assert converter == target / "convert_hf_to_gguf.py" and converter.is_file()
    assert (target / "gguf-py" / "gguf" / "__init__.py").is_file() and (target / "conversion" / "__init__.py").is_file()
    assert not (target / "README.md").exists() and not (target / "pyproject.toml").exists()
    assert [p.name for p in target.parent.iterdir()] == ["9.9.9"]  # no staging directory left behind


def test_an_archive_without_the_converter_is_refused(tmp_path: Path) -> None:
    from mentalglm.errors import MentalGLMError
    from mentalglm.train.export import unpack_converter

    (tmp_path / "cache").mkdir()
    with pytest.raises(MentalGLMError, match="not a llama-cpp-python sdist"):
        unpack_converter(_fake_sdist(tmp_path / "x.tar.gz", with_converter=False), tmp_path / "cache" / "1")
    assert not (tmp_path / "cache" / "1").exists()


def test_fetched_converter_is_cached_and_runs_against_its_vendored_gguf(monkeypatch, tmp_path: Path) -> None:
    import subprocess

    from mentalglm.train import export

    calls: list[list[str]] = []
    real_run = subprocess.run

    def fake_pip(command: list[str], **kwargs):
        if command[1:3] == ["-m", "pip"]:
            calls.append(command)
            _fake_sdist(Path(command[command.index("--dest") + 1]) / "llama_cpp_python-9.9.9.tar.gz")
            return subprocess.CompletedProcess(command, 0, "", "")
        return real_run(command, **kwargs)

    monkeypatch.setattr(export.subprocess, "run", fake_pip)
    first = export.fetch_converter("9.9.9")
    assert export.fetch_converter("9.9.9") == first and len(calls) == 1  # the second call reads the cache
    assert "llama-cpp-python==9.9.9" in calls[0] and ":all:" in calls[0]
    monkeypatch.delenv("LLAMA_CPP_CONVERTER", raising=False)
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert export.find_converter() == first
    out = export.convert_to_gguf(tmp_path, tmp_path / "m.gguf", "q8_0")
    assert out.read_text() == "vendored"  # the script imported the sdist's gguf-py, not site-packages' gguf
