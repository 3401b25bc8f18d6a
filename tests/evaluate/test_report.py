"""The report renders a Markdown table and a self-contained HTML page; summary records have fixed keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mentalglm.data.records import Post
from mentalglm.errors import ConfigError
from mentalglm.evaluate.predict import ClassifierSystem, run_predictions
from mentalglm.evaluate.report import SUMMARY_KEYS, load_results, summary_records, write_report
from mentalglm.evaluate.runner import evaluate_file, index_of
from mentalglm.tasks import get_task

POSTS = [Post(f"t{i}", f"帖子{i}", (label,), "toy") for i, label in enumerate(["high", "low", "low", "high", "low"])]


def _results(tmp_path: Path) -> list[Path]:
    task = get_task("suicide_risk")
    paths = []
    for name, label in (("always-low", "low"), ("always-high", "high")):
        preds = tmp_path / f"{name}.jsonl"
        run_predictions(task, "test", POSTS, ClassifierSystem(name, lambda texts, lab=label: [(lab,)] * len(texts)),
                        preds, progress=False)
        paths += evaluate_file(preds, index=index_of({"test": POSTS}), n_resamples=20)
    return paths


def test_report_has_a_markdown_table_and_inline_png(tmp_path: Path) -> None:
    markdown, page = write_report(load_results(_results(tmp_path)), tmp_path / "report")
    text = markdown.read_text(encoding="utf-8")
    assert "| system | split | n | f1_positive (flexible) [95% CI] |" in text
    assert "| always-high | test | 5 | 0.5714 [" in text  # high: TP 2, FP 3 -> F1 4/7
    assert "(published)" in text and "Qi et al." in text  # the task YAML's published numbers and citation
    assert "](figures/suicide_risk-confusion-0.png)" in text and (tmp_path / "report/figures").is_dir()
    html = page.read_text(encoding="utf-8")
    assert '<img src="data:image/png;base64,iVBOR' in html and "<table>" in html


def test_summary_records_have_exactly_the_documented_keys(tmp_path: Path) -> None:
    records = summary_records(load_results(_results(tmp_path)))
    assert [tuple(r) for r in records] == [SUMMARY_KEYS] * 2
    low = records[0]
    assert low["system"] == "always-low" and low["metric"] == "f1_positive" and low["value"] == 0.0
    assert low["invalid_rate"] == 0.0 and len(low["ci95"]) == 2 and "cores" in low["machine"]
    json.dumps(records)


def test_a_predictions_file_is_not_a_results_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a results file"):
        load_results([bad])


def test_evaluate_and_report_commands(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mentalglm.cli import app

    preds = tmp_path / "p.jsonl"
    run_predictions(get_task("suicide_risk"), "test", POSTS, ClassifierSystem("always-low", lambda t: [("low",)] * len(t)),
                    preds, progress=False)
    runner = CliRunner()
    scored = runner.invoke(app, ["evaluate", str(preds), "--no-check-ids", "--resamples", "10"])
    assert scored.exit_code == 0, scored.output
    assert (tmp_path / "p.results.json").is_file()
    reported = runner.invoke(app, ["report", str(tmp_path / "p.results.json"), "--out", str(tmp_path / "r")])
    assert reported.exit_code == 0, reported.output
    assert (tmp_path / "r/report.html").is_file() and (tmp_path / "r/report.md").is_file()
