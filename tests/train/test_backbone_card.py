"""The backbone's model card: every number comes from a file a command wrote; what was not measured says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mentalglm.train.backbone_card import CardSources, render_card, write_card


def _backbone(tmp_path: Path) -> Path:
    best = tmp_path / "run" / "best"
    best.mkdir(parents=True)
    meta = {"base": "embedded:qwen2.5-0.5b", "layers": 12, "max_length": 96, "hidden": 8, "pooling": "mean",
            "step": 1234,
            "tasks": {"emotion": {"classes": ["angry", "happy"], "multi_label": False, "thresholds": []},
                      "suicide_risk": {"classes": ["low", "high"], "multi_label": False, "thresholds": []}},
            "validation": {"emotion": {"value": 0.6111, "posts": 1500}, "suicide_risk": {"value": 0.8222, "posts": 57},
                           "mean": 0.71},
            "int8": {"posts": 150, "cosine_min": 0.99333, "same_labels": 0.97, "max_probability_gap": 0.1}}
    (best / "backbone.json").write_text(json.dumps(meta), encoding="utf-8")
    (tmp_path / "run" / "run.json").write_text(json.dumps({"lora_rank": 16, "steps": 4321, "data": {
        "emotion": {"train": "a" * 64, "validation": "b" * 64}}}), encoding="utf-8")
    return best


def _result(directory: Path, task: str, value: float, ci: list[float], n: int) -> None:
    directory.mkdir(exist_ok=True)
    record = {"metrics": {"headline": {"value": value, "ci95": ci}, "strict": {"n": n}}}
    (directory / f"{task}.test.analyzer-backbone.results.json").write_text(json.dumps(record), encoding="utf-8")


def test_the_card_carries_the_measured_numbers_and_names_what_was_not_measured(tmp_path) -> None:
    best = _backbone(tmp_path)
    results = tmp_path / "results"
    _result(results, "emotion", 0.70123, [0.69, 0.71], 4999)
    analyzer = tmp_path / "analyzer"
    analyzer.mkdir()
    (analyzer / "emotion.card.json").write_text(json.dumps({"backbone": {"weight_on_tfidf": 0.3}}))
    (analyzer / "suicide_risk.card.json").write_text(json.dumps({"backbone_rejected": {"x": 1}}))
    sources = CardSources(best, results_dir=results, analyzer=analyzer)
    card = write_card(sources).read_text(encoding="utf-8")

    assert card.startswith("---\nlanguage:\n- zh\n") and "base_model: Qwen/Qwen2.5-Coder-0.5B-Instruct" in card
    assert "| emotion | macro_f1 | 0.701 [0.690, 0.710] | 4999 | yes (weight 0.3 on TF-IDF) |" in card
    assert "| suicide_risk | f1_positive | not scored | – | no: scored with the tier chosen before it |" in card
    assert "0.828" in card  # the published suicide-risk number, read from the task's declaration
    assert sources.missing == ["suicide_risk test results"]
    render_card(sources)
    assert sources.missing == ["suicide_risk test results"]  # rendered twice, listed once
    assert "| emotion | macro_f1 | 0.611 | 1500 |" in card and "| steps | 4321 |" in card
    assert "`aaaaaaaaaaaaaaaa…`" in card and "step 1234" in card and "first 96 tokens" in card
    assert "suicide_risk's validation metric rests on 57 posts" in card
    assert "emotion's validation metric rests" not in card
    assert "| torch int8 (gate, up) | 0.9933 | 97.0% |" in card
    assert "Speed not measured" in card and "Explanations" in card and "Not measured for this copy" in card
    assert "distilled" not in card  # the explainer's limitation only once it was measured
    assert "No explainer attached to this copy" in card
    assert "trained on from" not in card


def test_a_backbone_trained_on_from_another_names_where_it_started(tmp_path) -> None:
    best = _backbone(tmp_path)
    meta = json.loads((best / "backbone.json").read_text(encoding="utf-8"))
    meta["init_from"] = {"adapter_sha256": "c" * 64, "heads_sha256": "d" * 64}
    (best / "backbone.json").write_text(json.dumps(meta), encoding="utf-8")
    card = render_card(CardSources(best))
    assert "| trained on from | a saved backbone: adapter `cccccccccccccccc…`, heads `dddddddddddddddd…`" in card
    assert "came after its own" in card and "the start was kept" not in card
    meta["step"] = 0
    (best / "backbone.json").write_text(json.dumps(meta), encoding="utf-8")
    assert "the start was kept: no step of this run beat it" in render_card(CardSources(best))


def test_the_card_reports_the_speed_and_explanation_benchmarks(tmp_path) -> None:
    best = _backbone(tmp_path)
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"when": "2026-12-05T01:00:00", "threads": "2", "machine": {"cpu": "EPYC", "cores": 64,
                                                                                         "usable_cores": 2},
                                 "engines": [{"engine": "torch-int8", "cold_start_s": 7.6, "posts_per_s": 12.8,
                                              "peak_rss_gb": 1.7}]}))
    explained = tmp_path / "explained.json"
    explained.write_text(json.dumps({"backend": "llamacpp:x.gguf", "per_task": 50, "split": "validation",
                                     "regenerate": 2, "results": {"emotion": {
                                         "kept_within_attempts": {"1": 0.9, "2": 0.96}, "llm_kept": 0.98,
                                         "kept_verifier_agrees_of_all": 0.97, "shown_quotes_found": 1.0,
                                         "seconds_median": 2.5}}}))
    card = render_card(CardSources(best, bench=bench, explanations=explained))
    assert "| torch-int8 | 7.6 | 12.8 | 1.7 |" in card and "EPYC, 2 usable cores, 2 threads, 2026-12-05" in card
    assert "| emotion | 90.0% | 98.0% | 97.0% | 100.0% | 2.5 |" in card and "llamacpp:x.gguf" in card
    assert "distilled" not in card  # measured, but no explainer attached: the analyzer does not explain with it
    assert "Not scored here" in card  # no results directory given


def test_a_backbone_without_its_metadata_is_refused_by_name(tmp_path) -> None:
    with pytest.raises(Exception, match="backbone.json"):
        render_card(CardSources(tmp_path))


def test_the_card_command_writes_the_readme_and_refuses_a_missing_input(tmp_path) -> None:
    from typer.testing import CliRunner

    from mentalglm.cli import app

    best = _backbone(tmp_path)
    missing = CliRunner().invoke(app, ["backbone", "card", "--backbone", str(best), "--bench", str(tmp_path / "no")])
    assert missing.exit_code != 0 and not (best / "README.md").exists()
    done = CliRunner().invoke(app, ["backbone", "card", "--backbone", str(best)])
    assert done.exit_code == 0, done.output
    assert (best / "README.md").read_text(encoding="utf-8").startswith("---\n")
