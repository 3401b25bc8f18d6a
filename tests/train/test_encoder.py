"""The encoder baseline end to end on a tiny random XLM-R model and invented posts: training, model selection,
per-label thresholds, resume, and the same prediction and result files as the TF-IDF baseline."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch  # noqa: E402
from tiny_encoder import build_tiny_xlmr  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from mentalglm.data.records import Post  # noqa: E402
from mentalglm.errors import ConfigError  # noqa: E402
from mentalglm.evaluate.predict import read_meta, read_rows  # noqa: E402
from mentalglm.evaluate.runner import run_encoder_baseline  # noqa: E402
from mentalglm.tasks import get_task  # noqa: E402
from mentalglm.train.classical import decide  # noqa: E402
from mentalglm.train.encoder import (  # noqa: E402
    COLLAPSE_SPREAD,
    DONE_FILE,
    FINAL_DIR,
    EncoderSettings,
    fit_encoder,
    positive_weights,
    probability_spread,
    tune_thresholds,
)
from mentalglm.train.encoder_classifier import (  # noqa: E402
    EncoderClassifier,
    PooledClassifier,
    merge_lora,
    resolve_encoder,
)

torch.set_num_threads(1)

# Invented posts (not rows of any dataset). High risk always says one of the phrases in HIGH.
HIGH = ["我不想活了", "活着没意思，想结束一切", "药已经买好了，再见", "明天就从楼上跳下去"]
LOW = ["今天考试没考好", "周末和朋友去爬山", "工作有点累但还行", "晚饭吃了火锅很开心"]
DISTORTIONS = {  # cognitive_distortion label -> a phrase that marks it
    "all_or_nothing": "要么完美要么失败", "mind_reading": "他们肯定都在笑我", "fortune_telling": "以后一定会更糟",
    "labeling": "我就是个废物", "should_statements": "我应该做到最好",
}


def _risk_splits() -> dict[str, list[Post]]:
    def posts(split: str, n: int) -> list[Post]:
        rows = []
        for i in range(n):
            high = i % 2 == 0
            text = (HIGH if high else LOW)[(i // 2) % 4] + ("。" * (i % 3))
            rows.append(Post(f"{split}:{i}", text, ("high" if high else "low",), "toy"))
        return rows

    return {"train": posts("train", 32), "validation": posts("validation", 12), "test": posts("test", 10)}


def _distortion_splits() -> dict[str, list[Post]]:
    names = list(DISTORTIONS)

    def posts(split: str, n: int) -> list[Post]:
        rows = []
        for i in range(n):
            labels = (names[i % 5],) if i % 3 else (names[i % 5], names[(i + 2) % 5])
            rows.append(Post(f"{split}:{i}", "，".join(DISTORTIONS[name] for name in labels), labels, "toy"))
        return rows

    return {"train": posts("train", 40), "validation": posts("validation", 30), "test": posts("test", 10)}


@pytest.fixture(scope="module")
def tiny_xlmr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random XLM-R encoder with a character vocabulary of the invented posts."""
    text = "".join(HIGH + LOW + list(DISTORTIONS.values())) + "。，"
    return build_tiny_xlmr(tmp_path_factory.mktemp("tiny-xlmr") / "tiny-xlmr", text)


def _settings(model: Path, **overrides: Any) -> EncoderSettings:
    # random 32-wide embeddings carry too little to learn from frozen: these runs train them
    values: dict[str, Any] = {"model": f"hf:{model}", "epochs": 4, "batch_size": 8, "max_length": 32, "lr": 3e-3,
                              "seed": 5, "warmup_ratio": 0.0, "eval_batch_size": 16, "freeze_embeddings": False}
    values.update(overrides)
    return EncoderSettings(**values)


def test_thresholds_are_tuned_per_label_only_where_validation_has_enough_positives() -> None:
    rng = np.random.default_rng(0)
    y = np.zeros((200, 3), dtype=int)
    y[:100, 0] = 1  # label 0: positives score 0.35-0.45, negatives below 0.3 -> needs a low threshold
    y[100:200, 1] = 1  # label 1: negatives reach 0.8, positives score 0.85-0.95 -> needs a high one
    y[:4, 2] = 1  # label 2: four positives, too few for a threshold of its own
    proba = np.zeros((200, 3))
    proba[:, 0] = np.where(y[:, 0], rng.uniform(0.35, 0.45, 200), rng.uniform(0.0, 0.3, 200))
    proba[:, 1] = np.where(y[:, 1], rng.uniform(0.85, 0.95, 200), rng.uniform(0.5, 0.8, 200))
    proba[:, 2] = np.where(y[:, 2], 0.9, rng.uniform(0.0, 0.3, 200))
    thresholds = tune_thresholds(proba, y, min_support=10)
    assert 0.3 <= thresholds[0] <= 0.35 and 0.8 <= thresholds[1] <= 0.85  # both separate their label exactly
    shared = tune_thresholds(proba, y, min_support=10_000)  # nobody qualifies: everyone keeps the shared one
    assert len(set(shared)) == 1 and thresholds[2] == shared[2] and shared[1] < thresholds[1]
    chosen = decide(proba, ["a", "b", "c"], True, thresholds)
    assert chosen[0] == ("a", "c") and chosen[150] == ("b",)
    assert decide(np.array([[0.1, 0.2, 0.05]]), ["a", "b", "c"], True, [0.5] * 3) == [("b",)]  # never empty


def test_unknown_models_are_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'e5-small'"):
        resolve_encoder("e5-smal")
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_encoder(f"hf:{tmp_path}")
    with pytest.raises(ConfigError, match="max-steps"):
        EncoderSettings(max_steps=0)


def test_single_label_run_learns_writes_tfidf_style_files_and_reloads(tiny_xlmr: Path, tmp_path: Path) -> None:
    splits = _risk_splits()
    settings = _settings(tiny_xlmr)
    out = tmp_path / "run"
    predictions, results = run_encoder_baseline("suicide_risk", None, splits=splits, settings=settings, out=out,
                                                predictions_dir=tmp_path / "pred", results_dir=tmp_path / "res",
                                                n_resamples=20, progress=False)
    assert predictions == tmp_path / "pred" / "suicide_risk.test.encoder-tiny-xlmr.jsonl"
    assert results == tmp_path / "res" / "suicide_risk.test.encoder-tiny-xlmr.results.json"
    rows = [row for _, row in read_rows(predictions)]
    assert [r["id"] for r in rows] == [p.id for p in splits["test"]]
    assert all(r["valid_strict"] and r["valid_flexible"] and r["system"] == "encoder-tiny-xlmr" for r in rows)
    payload = json.loads(results.read_text(encoding="utf-8"))
    assert payload["task"] == "suicide_risk" and payload["metrics"]["headline"]["metric"] == "f1_positive"
    assert payload["metrics"]["headline"]["value"] == 1.0  # the phrases are trivially separable
    config = read_meta(predictions)["config"]
    assert config["train_posts"] == 32 and config["best_checkpoint_step"] in (4, 8, 12, 16)
    assert [h["step"] for h in config["validation_history"]] == [4, 8, 12, 16]  # one evaluation per epoch
    assert config["validation_f1_positive"] == max(h["f1_positive"] for h in config["validation_history"])

    assert (out / DONE_FILE).is_file() and not list(out.glob("checkpoint-*"))
    reloaded = EncoderClassifier.load(out / FINAL_DIR)
    texts = [p.text for p in splits["test"]]
    assert reloaded.predict(texts) == [tuple(r["pred_flexible"]) for r in rows]

    again, summary = fit_encoder(get_task("suicide_risk"), splits["train"], splits["validation"], settings, out,
                                 progress=False)  # finished: loaded, not retrained
    assert summary == json.loads((out / DONE_FILE).read_text(encoding="utf-8"))
    assert np.allclose(again.predict_proba(texts), reloaded.predict_proba(texts))

    calls = []
    forward = reloaded.model.forward
    reloaded.model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)  # type: ignore[method-assign]
    reloaded.predict_proba(texts[:3])  # other texts than the last call's: read
    assert len(calls) == 1
    first = reloaded.predict_proba(texts)
    first[:] = -1.0  # the caller's copy: changing it must not change the remembered answer
    assert np.allclose(reloaded.predict_proba(texts), again.predict_proba(texts)) and len(calls) == 2
    with pytest.raises(ConfigError, match="other lr;"):
        fit_encoder(get_task("suicide_risk"), splits["train"], splits["validation"], _settings(tiny_xlmr, lr=1e-3),
                    out, progress=False)


def test_multi_label_run_tunes_per_label_thresholds_on_validation(tiny_xlmr: Path, tmp_path: Path) -> None:
    splits = _distortion_splits()
    task = get_task("cognitive_distortion")
    classifier, summary = fit_encoder(task, splits["train"], splits["validation"],
                                      _settings(tiny_xlmr, epochs=6, lr=5e-3), tmp_path / "run", progress=False)
    assert len(classifier.thresholds) == len(task.label_ids) == len(summary["thresholds"])
    saved = json.loads((tmp_path / "run" / FINAL_DIR / "classifier.json").read_text(encoding="utf-8"))
    assert saved["thresholds"] == classifier.thresholds and saved["multi_label"] is True
    predicted = classifier.predict([p.text for p in splits["test"]])
    gold = [set(p.labels) for p in splits["test"]]
    assert all(predicted)  # at least one label each
    hits = sum(len(set(p) & g) for p, g in zip(predicted, gold, strict=True))
    assert 2 * hits / (sum(map(len, predicted)) + sum(map(len, gold))) >= 0.9  # micro-F1 on invented posts
    assert summary["validation_micro_f1"] >= 0.9


class _Crash(TrainerCallback):
    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 4:
            raise KeyboardInterrupt("killed after the first checkpoint")


def test_a_run_without_validation_posts_trains_to_its_last_step(tiny_xlmr: Path, tmp_path: Path) -> None:
    splits, task = _risk_splits(), get_task("suicide_risk")  # e.g. a cross-validation fold: nothing to select on
    classifier, summary = fit_encoder(task, splits["train"], [], _settings(tiny_xlmr, max_steps=6), tmp_path / "run",
                                      progress=False)
    assert summary["global_step"] == 6 and summary["validation_history"] == [] and summary["validation_posts"] == 0
    assert (tmp_path / "run" / DONE_FILE).is_file() and classifier.predict(["我不想活了"])[0][0] in ("high", "low")


def test_a_killed_run_resumes_from_its_checkpoint(tiny_xlmr: Path, tmp_path: Path) -> None:
    splits, task, out = _risk_splits(), get_task("suicide_risk"), tmp_path / "run"
    settings = _settings(tiny_xlmr, max_steps=8, freeze_embeddings=True)
    with pytest.raises(KeyboardInterrupt):
        fit_encoder(task, splits["train"], splits["validation"], settings, out, progress=False, callbacks=[_Crash()])
    assert (out / "checkpoint-4").is_dir() and not (out / DONE_FILE).exists()
    classifier, summary = fit_encoder(task, splits["train"], splits["validation"], settings, out, progress=False)
    assert summary["resumed_from"].endswith("checkpoint-4") and summary["global_step"] == 8
    assert [h["step"] for h in summary["validation_history"]] == [4, 8]
    from transformers import AutoModel

    initial = AutoModel.from_pretrained(tiny_xlmr).get_input_embeddings().weight
    trained = classifier.model.encoder.get_input_embeddings().weight
    assert torch.equal(initial, trained)  # frozen by default
    assert not torch.equal(AutoModel.from_pretrained(tiny_xlmr).encoder.layer[0].output.dense.weight,
                           classifier.model.encoder.encoder.layer[0].output.dense.weight)


def test_cli_baseline_encoder_passes_its_options(tiny_xlmr: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import mentalglm.data.splits
    from mentalglm.cli import app

    report = SimpleNamespace(pool=SimpleNamespace(dropped=3), dropped_against_test={"validation": 1})
    monkeypatch.setattr(mentalglm.data.splits, "canonical_splits", lambda *a, **k: (_risk_splits(), report))
    result = CliRunner().invoke(app, [
        "baseline", "encoder", "--task", "suicide_risk", "--model", f"hf:{tiny_xlmr}", "--max-steps", "3",
        "--batch-size", "4", "--max-length", "16", "--lr", "1e-3", "--seed", "2", "--limit-train", "12",
        "--warmup-ratio", "0.25", "--out", str(tmp_path / "run"), "--predictions-dir", str(tmp_path), "--results-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    meta = read_meta(tmp_path / "suicide_risk.test.encoder-tiny-xlmr-train12.jsonl")
    assert meta["config"]["settings"] == {**meta["config"]["settings"], "max_steps": 3, "batch_size": 4,
                                          "max_length": 16, "lr": 1e-3, "seed": 2, "limit_train": 12,
                                          "freeze_embeddings": True, "warmup_ratio": 0.25}
    assert meta["config"]["train_posts"] == 12 and meta["config"]["global_step"] == 3
    assert meta["config"]["pool_dropped"] == 3
    assert (tmp_path / "suicide_risk.test.encoder-tiny-xlmr-train12.results.json").is_file()


def test_a_lora_run_keeps_only_the_adapter_and_reloads_it_on_the_base(tiny_xlmr: Path, tmp_path: Path) -> None:
    splits, task, out = _risk_splits(), get_task("suicide_risk"), tmp_path / "run"
    settings = _settings(tiny_xlmr, lora_rank=4, freeze_embeddings=True, lr=1e-2, epochs=6)
    classifier, summary = fit_encoder(task, splits["train"], splits["validation"], settings, out, progress=False)
    encoder_dir = out / FINAL_DIR / "encoder"
    assert (encoder_dir / "adapter_model.safetensors").is_file() and (encoder_dir / "adapter_config.json").is_file()
    assert not (encoder_dir / "model.safetensors").exists() and not (encoder_dir / "tokenizer_config.json").exists()
    base_parameters = sum(p.numel() for p in classifier.model.encoder.parameters())
    assert 0 < summary["trainable_parameters"] < base_parameters / 2  # adapters and head, not the encoder
    assert json.loads((out / FINAL_DIR / "classifier.json").read_text(encoding="utf-8"))["base"] == f"hf:{tiny_xlmr}"
    texts = [p.text for p in splits["test"]]
    reloaded = EncoderClassifier.load(out / FINAL_DIR)  # base weights from hf:PATH, adapter merged in
    assert np.allclose(reloaded.predict_proba(texts), classifier.predict_proba(texts), atol=1e-5)
    from peft import PeftModel
    from transformers import AutoModel

    def base() -> Any:  # as training loaded it: no pooler
        return AutoModel.from_pretrained(tiny_xlmr, add_pooling_layer=False)

    by_peft = PeftModel.from_pretrained(base(), encoder_dir).merge_and_unload()
    by_hand = merge_lora(base(), encoder_dir)
    assert by_peft.state_dict().keys() == by_hand.state_dict().keys()
    assert all(torch.allclose(by_peft.state_dict()[k], v, atol=1e-6) for k, v in by_hand.state_dict().items())
    assert not torch.equal(base().encoder.layer[0].attention.self.query.weight,
                           by_hand.encoder.layer[0].attention.self.query.weight)  # something was merged
    assert summary["validation_f1_positive"] == 1.0  # the adapters learned the invented phrases
    with pytest.raises(ConfigError, match="lora-rank"):
        EncoderSettings(lora_rank=-1)

    # a second classifier on the same base shares its word embeddings and leaves the first one's weights alone
    again = EncoderClassifier.load(out / FINAL_DIR)
    first, second = reloaded.model.encoder, again.model.encoder
    assert first.get_input_embeddings().weight.data_ptr() == second.get_input_embeddings().weight.data_ptr()
    query = first.encoder.layer[0].attention.self.query.weight
    assert query.data_ptr() != second.encoder.layer[0].attention.self.query.weight.data_ptr()
    assert torch.equal(query, by_hand.encoder.layer[0].attention.self.query.weight)  # merged once, not twice
    assert np.allclose(again.predict_proba(texts), classifier.predict_proba(texts), atol=1e-5)
    config = json.loads((encoder_dir / "adapter_config.json").read_text(encoding="utf-8"))
    (encoder_dir / "adapter_config.json").write_text(json.dumps({**config, "use_rslora": True}), encoding="utf-8")
    own = EncoderClassifier.load(out / FINAL_DIR)  # not plain: peft merges into a base of its own
    assert own.model.encoder.get_input_embeddings().weight.data_ptr() != first.get_input_embeddings().weight.data_ptr()


def test_positive_weights_follow_label_rarity_within_the_cap() -> None:
    y = np.array([[1, 0, 1], [0, 0, 1], [0, 0, 1], [0, 1, 1]], dtype=np.float32)  # 1, 1, 4 positives of 4
    assert positive_weights(y, 0.0) is None
    assert positive_weights(y, 10.0).tolist() == [3.0, 3.0, 1.0]  # negatives/positives; never below 1
    assert positive_weights(y, 2.0).tolist() == [2.0, 2.0, 1.0]
    with pytest.raises(ConfigError, match="pos-weight"):
        EncoderSettings(pos_weight=-1)
    risk = _risk_splits()
    with pytest.raises(ConfigError, match="one label a post"):  # refused before any model is loaded
        fit_encoder(get_task("suicide_risk"), risk["train"], risk["validation"],
                    EncoderSettings(model="hf:/nonexistent", pos_weight=5.0), Path("/nonexistent/run"))


def test_weighted_positives_raise_the_loss_of_missed_labels(tiny_xlmr: Path) -> None:
    from transformers import AutoModel

    torch.manual_seed(0)
    encoder = AutoModel.from_pretrained(tiny_xlmr)
    ids, mask, labels = torch.tensor([[0, 5, 6, 2]]), torch.ones(1, 4, dtype=torch.long), torch.tensor([[1.0, 0.0]])
    plain = PooledClassifier(encoder, 2, multi_label=True).eval()
    weighted = PooledClassifier(encoder, 2, multi_label=True, pos_weight=torch.tensor([4.0, 1.0])).eval()
    weighted.classifier.load_state_dict(plain.classifier.state_dict())
    out, heavier = plain(ids, mask, labels=labels), weighted(ids, mask, labels=labels)
    logits = out["logits"]
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, pos_weight=torch.tensor([4.0, 1.0]))
    assert torch.allclose(heavier["loss"], expected) and heavier["loss"] > out["loss"]
    assert "pos_weight" not in weighted.state_dict()  # a training choice, not part of the saved model


def test_run_json_leaves_out_options_at_their_off_value_so_older_runs_resume(tiny_xlmr: Path, tmp_path: Path) -> None:
    splits, task = _distortion_splits(), get_task("cognitive_distortion")
    plain = _settings(tiny_xlmr, max_steps=2)
    assert "pos_weight" not in plain.identity() and plain.identity()["lr"] == plain.lr
    weighted = _settings(tiny_xlmr, max_steps=2, pos_weight=5.0)
    _, summary = fit_encoder(task, splits["train"], splits["validation"], weighted, tmp_path / "run", progress=False)
    assert summary["global_step"] == 2
    recorded = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))["settings"]
    assert recorded["pos_weight"] == 5.0
    with pytest.raises(ConfigError, match="pos_weight"):  # another weighting is another run
        fit_encoder(task, splits["train"], splits["validation"], plain, tmp_path / "run", progress=False)


def test_probability_spread_is_zero_for_a_constant_model() -> None:
    assert probability_spread(np.tile([0.2, 0.8], (5, 1))) == 0.0
    assert probability_spread(np.array([[0.9, 0.1], [0.1, 0.9]])) == pytest.approx(0.4)
    assert probability_spread(np.array([[0.3, 0.7]])) == 0.0  # one post says nothing about spread


def test_a_run_that_learned_nothing_is_reported_collapsed(tiny_xlmr: Path, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    splits, task = _risk_splits(), get_task("suicide_risk")
    _, learned = fit_encoder(task, splits["train"], splits["validation"], _settings(tiny_xlmr, epochs=1),
                             tmp_path / "learned", progress=False)
    assert learned["collapsed"] is False and learned["validation_probability_spread"] >= COLLAPSE_SPREAD
    done = tmp_path / "learned" / DONE_FILE  # a run finished before the check existed is measured when loaded
    older = {k: v for k, v in json.loads(done.read_text(encoding="utf-8")).items()
             if k not in ("collapsed", "validation_probability_spread")}
    done.write_text(json.dumps(older), encoding="utf-8")
    _, reloaded = fit_encoder(task, splits["train"], splits["validation"], _settings(tiny_xlmr, epochs=1),
                              tmp_path / "learned", progress=False)
    assert reloaded == learned
    with caplog.at_level("WARNING", logger="mentalglm.train.encoder"):
        _, frozen = fit_encoder(task, splits["train"], splits["validation"],
                                _settings(tiny_xlmr, epochs=1, lr=1e-12, dropout=0.0), tmp_path / "frozen", progress=False)
    assert frozen["collapsed"] is True and frozen["validation_probability_spread"] < COLLAPSE_SPREAD
    assert "looks collapsed" in caplog.text
