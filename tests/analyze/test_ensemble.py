"""The accurate tier: TF-IDF averaged with a LoRA encoder, weight chosen on validation, saved and reloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from tiny_analyzer import HIGH, LOW, fit_model  # noqa: E402
from tiny_encoder import build_tiny_xlmr  # noqa: E402

from mentalglm.analyze.artifacts import encoder_path, load_task_model, save_task_model  # noqa: E402
from mentalglm.analyze.engine import Analyzer  # noqa: E402
from mentalglm.analyze.ensemble import WEIGHT_GRID, AveragedEncoders, Ensemble, fit_ensemble  # noqa: E402
from mentalglm.data.records import Post  # noqa: E402
from mentalglm.errors import MissingDataError  # noqa: E402
from mentalglm.tasks import get_task  # noqa: E402
from mentalglm.train.encoder import FINAL_DIR, EncoderSettings, fit_encoder  # noqa: E402

TASK = get_task("imhi_dr")
LABELS = [("yes",)] * len(HIGH) + [("no",)] * len(LOW)


class _FixedEncoder:
    """Probabilities looked up by text: an encoder whose answers the test chooses."""

    def __init__(self, proba: dict[str, list[float]]) -> None:
        self.proba = proba

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return np.array([self.proba[t] for t in texts])


def test_the_weight_is_the_one_with_the_best_validation_metric() -> None:
    tfidf = fit_model("imhi_dr", HIGH + LOW, LABELS).classifier
    texts = HIGH + LOW
    high_index = tfidf.classes.index("yes")
    wrong = {t: [0.0, 0.0] for t in texts}  # an encoder that is confidently wrong on every post
    for t, labels in zip(texts, LABELS, strict=True):
        wrong[t][high_index] = 0.0 if labels == ("yes",) else 1.0
        wrong[t][1 - high_index] = 1.0 - wrong[t][high_index]
    ensemble, record = fit_ensemble(TASK, tfidf, _FixedEncoder(wrong), texts, LABELS)  # type: ignore[arg-type]
    by_weight = record[f"validation_{TASK.official_metric}_by_weight"]
    assert set(by_weight) == {str(w) for w in WEIGHT_GRID} and by_weight["0.0"] == 0.0
    assert ensemble.weight == record["weight_on_tfidf"] and by_weight[str(ensemble.weight)] == 1.0
    assert ensemble.weight >= 0.5  # the wrong encoder may only be outvoted
    assert record["validation_win_rate_over_tfidf"] == 0.0  # a tie with TF-IDF alone is no win

    right = {t: [1.0 - p for p in row] for t, row in wrong.items()}
    ensemble, record = fit_ensemble(TASK, tfidf, _FixedEncoder(right), texts, LABELS)  # type: ignore[arg-type]
    assert ensemble.weight == 0.0  # the first weight reaching the best score: the perfect encoder alone
    proba = ensemble.predict_proba(texts)
    assert np.allclose(proba, np.array([right[t] for t in texts]))
    assert ensemble.predict(texts) == LABELS


POSTS = [Post(f"p{i}", t, labels, "toy") for i, (t, labels) in enumerate(zip(HIGH + LOW, LABELS, strict=True))]


@pytest.fixture(scope="module")
def tiny_settings(tmp_path_factory: pytest.TempPathFactory) -> EncoderSettings:
    model = build_tiny_xlmr(tmp_path_factory.mktemp("tiny") / "tiny-xlmr", "".join(HIGH + LOW) + "。，")
    return EncoderSettings(model=f"hf:{model}", epochs=3, batch_size=4, max_length=32, lr=1e-2, seed=5,
                           warmup_ratio=0.0, eval_batch_size=8, lora_rank=4)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_settings: EncoderSettings) -> Path:
    root = tmp_path_factory.mktemp("ensemble")
    fit_encoder(TASK, POSTS, POSTS, tiny_settings, root / "run", progress=False)
    return root / "run"


def _member(seed: int, run: Path, used: bool = True) -> dict[str, object]:
    return {"seed": seed, "dir": f"seed-{seed}", "final_dir": str(run / FINAL_DIR), "used": used}


def test_an_ensemble_is_saved_with_its_adapter_and_reloads_to_the_same_answers(lora_run: Path, tmp_path: Path) -> None:
    from mentalglm.train.encoder_classifier import EncoderClassifier

    tfidf = fit_model("imhi_dr", HIGH + LOW, LABELS).classifier
    ensemble = Ensemble(tfidf, EncoderClassifier.load(lora_run / FINAL_DIR), 0.4)
    card = {"task": TASK.id, "ensemble": {"weight_on_tfidf": 0.4, "thresholds": None,
                                          "encoder": {"seeds": 1, "members": [_member(5, lora_run)]}}}
    model = fit_model("imhi_dr", HIGH + LOW, LABELS)
    model.classifier, model.card = ensemble, card
    save_task_model(model, tmp_path)
    assert (encoder_path(tmp_path, TASK.id) / "seed-5" / "encoder" / "adapter_model.safetensors").is_file()

    loaded = load_task_model(TASK.id, tmp_path)
    assert isinstance(loaded.classifier, Ensemble) and loaded.classifier.weight == 0.4
    assert loaded.tfidf.classes == tfidf.classes  # the verifier still reads with TF-IDF
    texts = HIGH + LOW
    assert np.allclose(loaded.classifier.predict_proba(texts), ensemble.predict_proba(texts), atol=1e-5)

    with Analyzer(tasks=[TASK.id], engine="attribution", models={TASK.id: loaded}) as analyzer:
        result = analyzer.analyze(HIGH[0]).tasks[TASK.id]
    assert result.labels and result.evidence  # attribution reads the ensemble like any classifier

    model.classifier, model.card = tfidf, {"task": TASK.id}
    save_task_model(model, tmp_path)  # a TF-IDF-only rebuild leaves no stale encoder behind
    assert not encoder_path(tmp_path, TASK.id).exists()
    (tmp_path / f"{TASK.id}.card.json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(MissingDataError, match="encoder"):
        load_task_model(TASK.id, tmp_path)


class _Uniform:
    """An encoder with no opinion: every label equally likely."""

    def __init__(self, width: int = 2) -> None:
        self.width = width

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return np.full((len(texts), self.width), 1.0 / self.width)


@pytest.mark.data
@pytest.mark.parametrize(("weight", "win_rate"), [(0.5, 0.99), (1.0, 0.0), (0.5, 0.6)])
def test_training_keeps_the_ensemble_only_when_it_surely_beats_tfidf(data_dir, monkeypatch, weight, win_rate) -> None:
    from mentalglm.analyze import recipe

    def fitted(task, tfidf, train, validation, settings, runs, log, seeds):  # noqa: ANN001, ANN202 - for training
        return Ensemble(tfidf, _Uniform(len(tfidf.classes)), weight), {  # type: ignore[arg-type]
            "weight_on_tfidf": weight, "thresholds": None, "validation_win_rate_over_tfidf": win_rate,
            "encoder": {"seeds": seeds, "members": [_member(13, Path("unused"))]}}

    monkeypatch.setattr(recipe, "_fit_ensemble", fitted)
    settings = EncoderSettings(lora_rank=16)
    real = get_task("suicide_level")  # a real task without a screen: the tier's ensemble decides on its own
    model = recipe.train_task_model(real.id, data_dir, c_grid=(1.0,), log=lambda _: None, encoder=settings)
    if win_rate < 0.95:  # no sure gain: TF-IDF alone, and the card says the encoder was tried
        assert model.classifier is model.tfidf and "ensemble" not in model.card
        assert model.card["ensemble_rejected"]["weight_on_tfidf"] == weight
    else:
        assert isinstance(model.classifier, Ensemble) and model.card["ensemble"]["weight_on_tfidf"] == 0.5
        assert model.card["model"]["kind"].startswith("ensemble: 0.5 x char TF-IDF")
        # the card's scores are the ensemble's: a uniform encoder at half weight leaves TF-IDF's argmax unchanged
        metric = real.official_metric
        assert model.card["test"][metric] == pytest.approx(
            recipe.train_task_model(real.id, data_dir, c_grid=(1.0,), log=lambda _: None).card["test"][metric])


def test_each_task_trains_its_encoder_with_its_own_recipe() -> None:
    from mentalglm.analyze.recipe import ENCODER_RECIPES, encoder_settings

    distortion = encoder_settings("cognitive_distortion")
    assert (distortion.epochs, distortion.warmup_ratio, distortion.pos_weight) == (10.0, 0.3, 10.0)
    assert encoder_settings("emotion").epochs == ENCODER_RECIPES["emotion"]["epochs"]
    assert encoder_settings("emotion").pos_weight == 0.0 and encoder_settings("emotion").lora_rank == 16
    overridden = encoder_settings("cognitive_distortion", epochs=1.0)  # --encoder-epochs changes epochs only
    assert overridden.epochs == 1.0 and overridden.pos_weight == 10.0
    assert overridden.identity() != distortion.identity()


def test_a_card_written_before_seed_averaging_still_loads_its_one_encoder(lora_run: Path, tmp_path: Path) -> None:
    import shutil

    model = fit_model("imhi_dr", HIGH + LOW, LABELS)
    save_task_model(model, tmp_path)
    card = {"task": TASK.id, "ensemble": {"weight_on_tfidf": 0.4, "thresholds": None,
                                          "encoder": {"final_dir": str(lora_run / FINAL_DIR)}}}
    (tmp_path / f"{TASK.id}.card.json").write_text(json.dumps(card), encoding="utf-8")
    shutil.copytree(lora_run / FINAL_DIR, encoder_path(tmp_path, TASK.id))  # the former layout: no seed-N folder
    loaded = load_task_model(TASK.id, tmp_path)
    assert isinstance(loaded.classifier, Ensemble) and not isinstance(loaded.classifier.encoder, AveragedEncoders)


def test_seeds_are_trained_averaged_saved_and_reloaded_and_a_collapsed_one_is_left_out(
        tiny_settings: EncoderSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mentalglm.analyze import recipe
    from mentalglm.train import encoder as encoder_module

    real_fit = encoder_module.fit_encoder
    seen: list[Path] = []

    def fit(task, train, validation, settings, out, **kwargs):  # noqa: ANN001, ANN202 - the real one, seed 7 "collapsed"
        seen.append(out)
        classifier, summary = real_fit(task, train, validation, settings, out, progress=False)
        return classifier, {**summary, "collapsed": settings.seed == 7}

    monkeypatch.setattr(encoder_module, "fit_encoder", fit)
    tfidf = fit_model("imhi_dr", HIGH + LOW, LABELS).classifier
    ensemble, record = recipe._fit_ensemble(TASK, tfidf, POSTS, POSTS, tiny_settings, tmp_path / "runs",
                                               lambda _: None, seeds=3)
    assert [m["seed"] for m in record["encoder"]["members"]] == [5, 6, 7] and len(set(seen)) == 3  # a run per seed
    assert [m["used"] for m in record["encoder"]["members"]] == [True, True, False]
    averaged = ensemble.encoder
    assert isinstance(averaged, AveragedEncoders) and len(averaged.members) == 2
    texts = HIGH + LOW
    members = [m.predict_proba(texts) for m in averaged.members]
    assert not np.allclose(members[0], members[1])  # different seeds, different encoders
    assert np.allclose(averaged.predict_proba(texts), (members[0] + members[1]) / 2)

    model = fit_model("imhi_dr", HIGH + LOW, LABELS)
    model.classifier, model.card = ensemble, {"task": TASK.id, "ensemble": record}
    save_task_model(model, tmp_path / "out")
    assert sorted(p.name for p in encoder_path(tmp_path / "out", TASK.id).iterdir()) == ["seed-5", "seed-6"]
    loaded = load_task_model(TASK.id, tmp_path / "out")
    assert np.allclose(loaded.classifier.predict_proba(texts), ensemble.predict_proba(texts), atol=1e-5)

    again, _ = recipe._fit_ensemble(TASK, tfidf, POSTS, POSTS, tiny_settings, tmp_path / "runs",
                                       lambda _: None, seeds=2)  # fewer seeds: the finished runs are reused
    assert len(set(seen)) == 3 and len(seen) == 5
    assert np.allclose(again.encoder.predict_proba(texts), averaged.predict_proba(texts), atol=1e-5)


def test_the_seed_benchmark_cuts_disjoint_stratified_folds_and_refuses_multi_label_cv() -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "encoder_seeds.py"
    spec = importlib.util.spec_from_file_location("encoder_seeds_benchmark", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    posts = [Post(f"p{i}", f"帖子{i}", ("yes",) if i % 4 == 0 else ("no",), "toy") for i in range(40)]
    held = module.folds(posts, 5)
    assert sorted(np.concatenate(held).tolist()) == list(range(40))  # every post held out exactly once
    assert all(sum(posts[i].labels == ("yes",) for i in fold) == 2 for fold in held)  # 10 high posts, 2 a fold
    assert [f.tolist() for f in module.folds(posts, 5)] == [f.tolist() for f in held]  # fixed folds: runs resume
    with pytest.raises(SystemExit, match="multi-label"):
        module.cross_validate(get_task("cognitive_distortion"), "unused", [13], Path("unused"), 5, 1.0)
