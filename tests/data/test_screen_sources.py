"""The screens' own data: the invented seed posts and CogDis's fixed buckets."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mentalglm.data.loaders.cogdis import BUCKETS, bucket
from mentalglm.data.loaders.screen_seed import ScreenSeed, seed_path
from mentalglm.tasks import get_task


def test_seed_posts_load_with_the_task_labels_and_every_kind_of_hard_case() -> None:
    train, _ = ScreenSeed().load(None, "suicide_risk.train")  # package data: no data directory needed
    validation, _ = ScreenSeed().load(None, "suicide_risk.validation")
    assert not {p.text for p in train} & {p.text for p in validation} and len(validation) < len(train)
    posts = train + validation
    labels = Counter(p.labels[0] for p in posts)
    assert set(labels) == set(get_task("suicide_risk").label_ids) and labels["none"] > labels["high"] > 0
    kinds = {p.meta["kind"] for p in posts}
    assert {"hyperbole", "news", "help", "past", "fiction", "obfuscated", "traditional"} <= kinds
    assert len({p.text for p in posts}) == len(posts)


def test_seed_rows_are_plain_json_with_text_and_label() -> None:
    for line in seed_path("suicide_risk").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        assert row["text"].strip() and row["label"] in ("none", "low", "high")


def test_no_seed_post_is_a_post_of_the_screening_benchmark() -> None:
    """The invented training posts and the benchmark's invented hard sets are written apart: a post in both would
    score the screen on what it trained on."""
    from mentalglm.data.splits import normalise_text

    bench_dir = Path(__file__).resolve().parents[2] / "benchmarks" / "screening"
    bench = {normalise_text(json.loads(line)["text"]) for path in sorted(bench_dir.glob("hard_*.jsonl"))
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    seed = {normalise_text(json.loads(line)["text"])
            for line in seed_path("suicide_risk").read_text(encoding="utf-8").splitlines()}
    assert len(bench) >= 200 and len(seed) >= 800
    assert not bench & seed


def test_cogdis_buckets_are_fixed_and_cover_every_sentence_once() -> None:
    assert bucket("我总是把事情搞砸") == bucket("我总是把事情搞砸。")  # by the normalised text
    owners = [name for b in range(10) for name, r in BUCKETS.items() if b in r]
    assert sorted(owners) == sorted(["train"] * 7 + ["validation"] + ["test"] * 2)


@pytest.mark.data
def test_cogdis_parts_split_the_file_without_overlap(data_dir) -> None:
    from mentalglm.data.registry import get_loader

    loader = get_loader("cogdis")
    parts = {name: {p.text for p in loader.load(data_dir, name)[0]} for name in BUCKETS}
    everything = {p.text for p in loader.load(data_dir, "all")[0]}
    assert set().union(*parts.values()) == everything
    assert not (parts["train"] & parts["test"]) and not (parts["validation"] & parts["test"])
