"""The report's clinical generalisation section: the user's pathway files, every level, the published number."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mentalglm.backends.fake import FakeBackend
from mentalglm.evaluate.pathway import (
    evaluate_predictions,
    read_pathway_files,
    report_context,
    run_classifier,
    run_llm,
)
from mentalglm.evaluate.report import load_results, write_report
from mentalglm.train.pathway import train_pathway

FIXTURE = Path(__file__).parents[1] / "fixtures" / "pathway"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("report")
    files = read_pathway_files(FIXTURE)
    train_pathway(FIXTURE, root / "model", kinds=["tfidf"], n_resamples=0, log=lambda _: None)
    classifier = run_classifier(root / "model", files, root / "clf.jsonl", progress=False)
    llm = run_llm(FakeBackend(default="标签：情绪反应、情感效应\n推理：……"), "fake:emotion", files, root / "llm.jsonl",
                  progress=False)
    return [path for predictions in (classifier, llm) for path in evaluate_predictions(predictions, files, n_resamples=20)]


def test_the_section_shows_the_files_each_level_and_the_published_number(tmp_path: Path, results) -> None:
    loaded = load_results(results)
    markdown, page = write_report(loaded, tmp_path / "report", report_context(FIXTURE))
    text = markdown.read_text(encoding="utf-8")
    assert "## Clinical generalisation: Cognitive pathway extraction" in text
    assert "| test | 16 | 5 | 6 | 4 | 3 | 8 |" in text  # sentences and parents per part, from the fixture
    micro = loaded[0]["metrics"]["flexible"]["micro_f1"]
    row = next(line for line in text.splitlines() if line.startswith("| pathway-tfidf |"))
    assert f"| {micro:.4f} [" in row and row.endswith("| these files |")
    assert "(published) |  | 0.6234 |" in text
    emotion_row = next(line for line in text.splitlines() if line.startswith("| 情绪反应##情感效应 |"))
    f1 = loaded[1]["metrics"]["flexible"]["per_label"]["child"]["情绪反应##情感效应"]["f1"]
    assert emotion_row.endswith(f"| {f1:.4f} |")
    assert text.count("## Cognitive pathway extraction") == 0  # pathway results live in the section only
    assert "Clinical generalisation" in page.read_text(encoding="utf-8")


def test_results_from_other_files_are_marked(tmp_path: Path, results) -> None:
    other = tmp_path / "other"
    shutil.copytree(FIXTURE, other)
    with (other / "test.txt").open("a", encoding="utf-8") as handle:
        handle.write("又一句发明的话\t驳斥\n")
    markdown, _ = write_report(load_results(results[:1]), tmp_path / "report", report_context(other))
    row = next(line for line in markdown.read_text(encoding="utf-8").splitlines() if line.startswith("| pathway-tfidf"))
    assert row.endswith("| OTHER files |")


def test_without_a_pathway_dir_the_results_get_an_ordinary_task_section(tmp_path: Path, results) -> None:
    markdown, _ = write_report(load_results(results), tmp_path / "report")
    text = markdown.read_text(encoding="utf-8")
    assert "Clinical generalisation" not in text and "## Cognitive pathway extraction (cognitive_pathway" in text
    assert (tmp_path / "report/figures/cognitive_pathway-per-label-f1.png").is_file()
    payload = json.loads(results[0].read_text(encoding="utf-8"))
    assert payload["run"]["pathway_files_sha256"]["test.txt"] in json.dumps(report_context(FIXTURE))
