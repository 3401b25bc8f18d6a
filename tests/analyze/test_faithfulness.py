"""ERASER faithfulness of the analyzer's evidence: the span arithmetic, and the measure on the tiny analyzer."""

from __future__ import annotations

import numpy as np

from mentalglm.analyze.engine import Analyzer
from mentalglm.analyze.faithfulness import faithfulness, keep, merged_ranges, random_clauses, remove
from tests.tiny_analyzer import EMOTION, HIGH, ORDINARY, tiny_models


def test_ranges_merge_and_cut_the_post() -> None:
    assert merged_ranges([(5, 8), (0, 2), (1, 3), (8, 9), (4, 4)]) == [(0, 3), (5, 9)]
    text = "零一二三四五六七八九"
    assert remove(text, [(1, 3), (2, 4)]) == "零四五六七八九"
    assert keep(text, [(6, 8), (1, 3)]) == "一二，六七"


def test_random_clauses_come_from_the_post_and_match_the_length() -> None:
    post = "今天很累，不想说话，晚上吃了面，早点睡吧"
    picked = random_clauses(post, 4, np.random.default_rng(0))
    assert picked and all(post[a:b] in post.split("，") for a, b in picked)
    assert abs(sum(b - a for a, b in picked) - 4) <= 1  # clauses of 4-5 characters: the closest total wins


def test_evidence_of_the_attribution_engine_beats_random_clauses() -> None:
    # Each post: a decisive clause among neutral filler clauses, so removing the evidence must hurt more than chance.
    filler = "今天下午三点开会，记得带电脑，晚上回家吃饭"
    posts = [f"{filler}，{text}" for text in HIGH + EMOTION["sad"]]
    with Analyzer(["suicide_risk"], "attribution", models=tiny_models()) as analyzer:
        result = faithfulness(analyzer, "suicide_risk", [*posts, *ORDINARY[:3], ""], n_resamples=200)
    assert result["n_posts"] == len(posts) + 4
    assert result["skipped"]["input_error"] == 1  # the empty post: counted, never scored
    assert result["n_scored"] + sum(result["skipped"].values()) == result["n_posts"]
    assert result["n_scored"] >= len(HIGH)
    c = result["comprehensiveness"]
    assert c["evidence"]["mean"] > c["random_clauses"]["mean"]
    assert c["evidence_minus_random"]["ci95"][0] > 0
    assert result["quotes_found_in_post"]["mean"] == 1.0  # the attribution engine quotes clauses of the post


def test_report_shows_faithfulness_files_beside_evaluation_results(tmp_path) -> None:
    import json

    from mentalglm.evaluate.report import load_results, summary_records, write_report

    with Analyzer(["suicide_risk"], "attribution", models=tiny_models()) as analyzer:
        result = faithfulness(analyzer, "suicide_risk", HIGH + EMOTION["sad"], n_resamples=50)
    path = tmp_path / "suicide_risk.attribution.test.json"
    path.write_text(json.dumps({**result, "split": "test"}), encoding="utf-8")
    loaded = load_results([path])
    assert summary_records(loaded) == []  # not an evaluation run: no headline row
    markdown, _ = write_report(loaded, tmp_path / "report")
    text = markdown.read_text(encoding="utf-8")
    assert "Faithfulness of the quoted evidence" in text
    assert f"{result['comprehensiveness']['evidence']['mean']:.3f}" in text
