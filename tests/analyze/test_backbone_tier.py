"""The backbone tier in the analyzer: a task's head averaged with TF-IDF, saved once for every task, reloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("peft")

from tiny_analyzer import EMOTION, fit_model  # noqa: E402

from mentalglm.analyze.artifacts import backbone_path, load_task_model, save_task_model  # noqa: E402
from mentalglm.analyze.card import add_backbone  # noqa: E402
from mentalglm.analyze.engine import Analyzer  # noqa: E402
from mentalglm.analyze.ensemble import Ensemble, fit_ensemble  # noqa: E402
from mentalglm.backends.tiny import build_tiny_chat_model  # noqa: E402
from mentalglm.data.records import Post  # noqa: E402
from mentalglm.errors import ConfigError, MissingDataError  # noqa: E402
from mentalglm.files import sha256_file  # noqa: E402
from mentalglm.tasks import get_task  # noqa: E402
from mentalglm.train.backbone import BackboneSettings, TaskData, train_backbone  # noqa: E402
from mentalglm.train.backbone_model import HEADS_FILE, BackboneHead, choose_engine, shared_backbone  # noqa: E402

TEXTS = [t for texts in EMOTION.values() for t in texts]
LABELS = [(label,) for label, texts in EMOTION.items() for _ in texts]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("backbone")
    posts = [Post(f"p{i}", t, label, "t") for i, (t, label) in enumerate(zip(TEXTS, LABELS, strict=True))]
    data = [TaskData(get_task("emotion"), posts, posts)]
    settings = BackboneSettings(base=str(build_tiny_chat_model(root / "tiny")), layers=None, tasks=("emotion",),
                                task_weights=(1.0,), steps=4, batch_size=4, eval_every=2, checkpoint_every=2,
                                warmup_steps=1)
    return train_backbone(data, settings, root / "run")


def _model_with_backbone(backbone: Path, **card):
    model = fit_model("emotion", TEXTS, LABELS)
    head = shared_backbone(backbone, "emotion")
    ensemble, record = fit_ensemble(model.task, model.classifier, head, TEXTS, LABELS)
    ensemble.weight = record["weight_on_tfidf"] = 0.5  # both parts count, whatever the tiny model learned
    record.update(source=str(backbone), heads_sha256=sha256_file(backbone / HEADS_FILE), engine="auto")
    model.card = {"task": "emotion", "model": {"kind": "char TF-IDF"}, "limitations": [], **card}
    add_backbone(model.card, record, kept=True)
    model.classifier = ensemble
    return model


def test_without_a_checked_gguf_the_engine_is_transformers_and_a_forced_llamacpp_names_the_file(
        backbone: Path) -> None:
    assert choose_engine(backbone) == ("torch", None)
    with pytest.raises(Exception, match=r"backbone-q8_0\.gguf: missing"):
        choose_engine(backbone, "llamacpp")
    with pytest.raises(ConfigError, match="not one of"):
        choose_engine(backbone, "onnx")


def test_a_kept_backbone_is_saved_once_and_reloads_to_the_same_answers(backbone: Path, tmp_path: Path) -> None:
    model = _model_with_backbone(backbone)
    assert isinstance(model.classifier.encoder, BackboneHead)
    assert model.card["model"]["kind"].startswith("ensemble: 0.5 x")
    save_task_model(model, tmp_path)
    assert (backbone_path(tmp_path) / HEADS_FILE).is_file()

    loaded = load_task_model("emotion", tmp_path)
    assert isinstance(loaded.classifier, Ensemble) and isinstance(loaded.classifier.encoder, BackboneHead)
    assert np.allclose(loaded.classifier.predict_proba(TEXTS), model.classifier.predict_proba(TEXTS), atol=1e-5)
    with Analyzer(tasks=["emotion"], engine="attribution", models={"emotion": loaded}) as analyzer:
        result = analyzer.analyze(TEXTS[0]).tasks["emotion"]
    assert result.labels and result.evidence  # attribution reads the backbone ensemble like any classifier

    other = fit_model("emotion", TEXTS, LABELS)
    other.card = {"task": "emotion"}
    save_task_model(other, tmp_path)  # a task without the backbone leaves the shared copy for the others
    assert (backbone_path(tmp_path) / HEADS_FILE).is_file()


def test_a_backbone_that_beat_the_frozen_ensemble_replaces_it_on_the_card_and_on_disk(backbone: Path,
                                                                                      tmp_path: Path) -> None:
    from mentalglm.analyze.artifacts import frozen_path

    frozen = {"kept": True, "weights": {"tfidf": 0.5, "e5": 0.5}}
    model = _model_with_backbone(backbone, frozen_ensemble=frozen)
    assert "frozen_ensemble" not in model.card and model.card["frozen_ensemble_replaced"] == frozen
    frozen_path(tmp_path, "emotion").write_bytes(b"an older analyzer's frozen encoders")
    save_task_model(model, tmp_path)
    assert not frozen_path(tmp_path, "emotion").exists()
    loaded = load_task_model("emotion", tmp_path)
    assert isinstance(loaded.classifier, Ensemble) and isinstance(loaded.classifier.encoder, BackboneHead)


def test_a_missing_or_other_backbone_is_refused_by_name(backbone: Path, tmp_path: Path) -> None:
    model = _model_with_backbone(backbone)
    save_task_model(model, tmp_path)
    heads = backbone_path(tmp_path) / HEADS_FILE
    heads.write_bytes(heads.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ConfigError, match="not the backbone"):
        load_task_model("emotion", tmp_path)
    heads.unlink()
    with pytest.raises(MissingDataError, match="backbone"):
        load_task_model("emotion", tmp_path)
    card = json.loads((tmp_path / "emotion.card.json").read_text(encoding="utf-8"))
    assert card["backbone"]["weight_on_tfidf"] == 0.5 and "source" in card["backbone"]


def test_auto_reads_with_llamacpp_only_from_a_gguf_checked_faithful(backbone: Path, tmp_path: Path) -> None:
    import shutil

    from mentalglm.train.backbone_model import GGUF_MIN_COSINE, META_FILE

    copy = tmp_path / "backbone"
    shutil.copytree(backbone, copy)
    meta = json.loads((copy / META_FILE).read_text(encoding="utf-8"))
    (copy / "backbone-q8_0.gguf").write_bytes(b"GGUF")
    for cosine, expected in ((GGUF_MIN_COSINE - 0.01, "torch"), (GGUF_MIN_COSINE, "llamacpp")):
        meta["gguf"] = {"backbone-q8_0.gguf": {"cosine_min": cosine, "same_labels": 0.98}}
        (copy / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
        assert choose_engine(copy)[0] == expected
    assert choose_engine(copy, "torch") == ("torch", None)  # forced, as a saved model's card forces its engine
    (copy / "backbone-q8_0.gguf").unlink()
    assert choose_engine(copy)[0] == "torch"  # a check whose file is gone is not trusted


class _NoOpinion:
    """A reader with no opinion: every class equally likely."""

    def __init__(self, width: int) -> None:
        self.width = width

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return np.full((len(texts), self.width), 1.0 / self.width)


@pytest.mark.data
def test_with_a_backbone_suicide_risk_still_fits_its_frozen_ensemble_and_the_head_must_beat_it(
        data_dir, monkeypatch) -> None:
    from mentalglm.analyze import frozen, recipe, screened

    seen: dict[str, object] = {}

    def frozen_fit(task, tfidf, train, validation, encoders, log):  # noqa: ANN001, ANN202 - stands in for the fit
        return Ensemble(tfidf, _NoOpinion(len(tfidf.classes)), 0.5), {"kept": True, "weights": {"tfidf": 0.5,
                                                                                                 "e5": 0.5}}

    def backbone_fit(task, tfidf, current, against, validation, backbone, log, engine):  # noqa: ANN001, ANN202
        seen.update(current=current, against=against)
        return current, {"weight_on_tfidf": 0.5}, False

    monkeypatch.setattr(frozen, "fit_frozen_ensemble", frozen_fit)
    monkeypatch.setattr(recipe, "_fit_backbone", backbone_fit)
    monkeypatch.setattr(screened, "fit_screened", lambda task, classifier, *a, **k: (classifier, {"kind": "none"}))
    monkeypatch.setattr(screened, "screening_card", lambda *a, **k: {})
    model = recipe.train_task_model("suicide_risk", data_dir, c_grid=(1.0,), log=lambda _: None,
                                    backbone=Path("unused"))
    assert seen["against"] == "the frozen ensemble" and isinstance(seen["current"], Ensemble)
    assert model.classifier is seen["current"]  # the head lost: the frozen ensemble reads suicide risk
    assert model.card["frozen_ensemble"]["kept"] and "backbone_rejected" in model.card
