"""Merge a trained LoRA adapter into full safetensors weights, and optionally convert them to GGUF.

Merged weights load in any transformers / vLLM server without PEFT. GGUF conversion is delegated to
llama.cpp's own ``convert_hf_to_gguf.py``: it tracks every architecture's tensor naming and tokenizer quirks
(GLM-4's included), which a home-made converter would get subtly wrong. The script is not in
llama-cpp-python's wheel nor in the ``gguf`` package, but it is in llama-cpp-python's *source distribution*
(``vendor/llama.cpp``) on PyPI, together with the ``gguf-py`` it was written against. So, when no converter is
configured, the one matching the installed llama-cpp-python is fetched from the package index once and cached;
offline, the error says how to point at a llama.cpp checkout instead.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
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
            f"in: {', '.join(looked)}). `mentalglm export --gguf` fetches the one in llama-cpp-python's source "
            f"distribution from PyPI when the package index is reachable; otherwise install it with `git clone https://github.com/ggml-org/llama.cpp && pip "
            f"install -r llama.cpp/requirements/requirements-convert_hf_to_gguf.txt`, then set {LLAMA_CPP_DIR_ENV}="
            f"path/to/llama.cpp (or {CONVERTER_ENV}=path/to/{CONVERTER}) and rerun; the merged safetensors are "
            "already written")


SDIST_PACKAGE = "llama-cpp-python"
VENDORED = "vendor/llama.cpp/"  # inside the sdist: the converter and its matching gguf-py


def converter_cache_dir() -> Path:
    """`$MENTALGLM_CACHE/llama.cpp-converter`, else ~/.cache/mentalglm/llama.cpp-converter."""
    from mentalglm.backends.weights import CACHE_ENV

    return Path(os.environ.get(CACHE_ENV) or "~/.cache/mentalglm").expanduser() / "llama.cpp-converter"


def unpack_converter(sdist: Path, target: Path) -> Path:
    """Extract the converter and what it imports (its `conversion` package, gguf-py) from a llama-cpp-python
    sdist into `target`."""
    wanted = (CONVERTER, "conversion/", "gguf-py/")
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        with tarfile.open(sdist) as archive:
            members = []
            for member in archive.getmembers():
                _, _, inner = member.name.partition("/" + VENDORED)
                if inner and inner.startswith(wanted) and (member.isfile() or member.isdir()):
                    member.name = inner
                    members.append(member)
            if not any(m.name == CONVERTER for m in members):
                raise MentalGLMError(f"{sdist} has no {VENDORED}{CONVERTER}; it is not a llama-cpp-python sdist")
            archive.extractall(staging, members=members, filter="data")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # whole or nothing: an interrupted fetch leaves no half converter
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / CONVERTER


def fetch_converter(version: str | None = None) -> Path:
    """The converter vendored in the llama-cpp-python sdist of `version` (default: the installed one), cached."""
    if version is None:
        try:
            version = metadata.version(SDIST_PACKAGE)
        except metadata.PackageNotFoundError as exc:
            raise ConverterNotFoundError(["llama-cpp-python is not installed"]) from exc
    target = converter_cache_dir() / version
    if (target / CONVERTER).is_file():
        return target / CONVERTER
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as download:
        command = [sys.executable, "-m", "pip", "download", f"{SDIST_PACKAGE}=={version}", "--no-binary", ":all:",
                   "--no-deps", "--quiet", "--dest", download]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        archives = sorted(Path(download).glob("*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise ConverterNotFoundError([f"the {SDIST_PACKAGE}=={version} sdist could not be downloaded "
                                          f"({result.stderr.strip()[-300:] or 'no archive'})"])
        return unpack_converter(archives[0], target)


def find_converter(*, fetch: bool = False) -> Path:
    """llama.cpp's converter from the environment variables, PATH, the cache, or (with `fetch`) PyPI's sdist."""
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
    candidates.extend(sorted(converter_cache_dir().glob(f"*/{CONVERTER}"), reverse=True))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if fetch:
        return fetch_converter()
    looked = [f"${CONVERTER_ENV}", f"${LLAMA_CPP_DIR_ENV}", "PATH", "site-packages/llama_cpp", "site-packages/gguf",
              str(converter_cache_dir())]
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


def merge_adapter(adapter: Path, out: Path, *, base: str | None = None, dtype: str | None = None,
                  base_adapter: Path | None = None) -> Path:
    """Load the base, apply the adapter, merge it and save safetensors plus the tokenizer into `out`;
    ``base_adapter`` replaces the path of the adapter it was trained above (its digest is still checked)."""
    from peft import PeftModel

    from mentalglm.train.sft import load_base_model, load_tokenizer

    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter} is not a LoRA adapter directory (no adapter_config.json); point --adapter "
                          "at <output_dir>/<stage>/adapter")
    arguments = base_arguments(adapter)
    if base:
        arguments = dataclasses.replace(arguments, name_or_path=base, gguf_file=None)
    if dtype:
        arguments.dtype = dtype
    if base_adapter is not None:
        arguments = dataclasses.replace(arguments, base_adapter=str(base_adapter))
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
    converter = find_converter(fetch=True)
    command = [sys.executable, str(converter), str(merged), "--outfile", str(outfile), "--outtype", outtype]
    environment = dict(os.environ)
    vendored_gguf = converter.parent / "gguf-py"
    if vendored_gguf.is_dir():  # the gguf-py the script was written against, before any installed gguf
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(vendored_gguf), environment.get("PYTHONPATH")]))
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
    if result.returncode != 0:
        raise MentalGLMError(f"{converter} failed (exit {result.returncode}): {result.stderr.strip()[-800:]}")
    return outfile
