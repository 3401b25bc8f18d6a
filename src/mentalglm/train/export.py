"""Merge a trained LoRA adapter into full safetensors weights, and optionally convert them to GGUF.

Merged weights load in any transformers / vLLM server without PEFT. GGUF conversion is delegated to
llama.cpp's own ``convert_hf_to_gguf.py``: it tracks every architecture's tensor naming and tokenizer quirks
(GLM-4's included), which a home-made converter would get subtly wrong. That script ships neither in
llama-cpp-python's wheel nor in the ``gguf`` package, so it is looked up and, when absent, the error says
what to install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mentalglm.errors import ConfigError, MentalGLMError
from mentalglm.train.config import ModelArguments

CONVERTER = "convert_hf_to_gguf.py"
CONVERTER_ENV = "LLAMA_CPP_CONVERTER"  # path to convert_hf_to_gguf.py
LLAMA_CPP_DIR_ENV = "LLAMA_CPP_DIR"  # a llama.cpp checkout
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0", "auto")


class ConverterNotFoundError(MentalGLMError):
    def __init__(self, looked: list[str]) -> None:
        super().__init__(
            f"no GGUF converter found ({CONVERTER} is not shipped by llama-cpp-python or the gguf package; looked "
            f"in: {', '.join(looked)}). Install it with `git clone https://github.com/ggml-org/llama.cpp && pip "
            f"install -r llama.cpp/requirements/requirements-convert_hf_to_gguf.txt`, then set {LLAMA_CPP_DIR_ENV}="
            f"path/to/llama.cpp (or {CONVERTER_ENV}=path/to/{CONVERTER}) and rerun; the merged safetensors are "
            "already written")


def find_converter() -> Path:
    """llama.cpp's converter from the environment variables, PATH or a package that vendors llama.cpp."""
    candidates: list[Path] = []
    if value := os.environ.get(CONVERTER_ENV):
        candidates.append(Path(value))
    if value := os.environ.get(LLAMA_CPP_DIR_ENV):
        candidates.append(Path(value) / CONVERTER)
    if found := shutil.which(CONVERTER):
        candidates.append(Path(found))
    for package in ("llama_cpp", "gguf"):
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                candidates.extend(Path(location).rglob(CONVERTER))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = [f"${CONVERTER_ENV}", f"${LLAMA_CPP_DIR_ENV}", "PATH", "site-packages/llama_cpp", "site-packages/gguf"]
    raise ConverterNotFoundError(looked)


def base_arguments(adapter: Path) -> ModelArguments:
    """How the adapter's base was loaded in training (written beside it), else PEFT's recorded base path."""
    from mentalglm.train.sft import BASE_FILE

    recorded = adapter / BASE_FILE
    if recorded.is_file():
        return ModelArguments(**json.loads(recorded.read_text(encoding="utf-8")))
    config = adapter / "adapter_config.json"
    if not config.is_file():
        raise ConfigError(f"{adapter} is not a LoRA adapter directory (no adapter_config.json)")
    base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{config} does not name its base model; pass --base")
    return ModelArguments(name_or_path=base)


def merge_adapter(adapter: Path, out: Path, *, base: str | None = None, dtype: str | None = None) -> Path:
    """Load the base, apply the adapter, merge it and save safetensors plus the tokenizer into `out`."""
    from peft import PeftModel

    from mentalglm.train.sft import load_base_model, load_tokenizer

    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter} is not a LoRA adapter directory (no adapter_config.json); point --adapter "
                          "at <output_dir>/<stage>/adapter")
    arguments = base_arguments(adapter)
    if base:
        arguments = ModelArguments(name_or_path=base, dtype=arguments.dtype,
                                   trust_remote_code=arguments.trust_remote_code,
                                   chat_template=arguments.chat_template)
    if dtype:
        arguments.dtype = dtype
    model = PeftModel.from_pretrained(load_base_model(arguments), str(adapter))
    merged = model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out), safe_serialization=True)
    tokenizer = load_tokenizer(arguments)
    tokenizer.save_pretrained(str(out))
    return out


def convert_to_gguf(merged: Path, outfile: Path, outtype: str = "bf16") -> Path:
    """Run llama.cpp's converter on merged weights (quantise further with llama.cpp's `llama-quantize`)."""
    if outtype not in GGUF_TYPES:
        raise ConfigError(f"GGUF type {outtype!r} is not one of {', '.join(GGUF_TYPES)}")
    converter = find_converter()
    command = [sys.executable, str(converter), str(merged), "--outfile", str(outfile), "--outtype", outtype]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise MentalGLMError(f"{converter} failed (exit {result.returncode}): {result.stderr.strip()[-800:]}")
    return outfile
