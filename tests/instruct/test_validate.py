import csv
import json
from collections import Counter

import numpy as np
import pytest
from openpyxl import load_workbook
from typer.testing import CliRunner

from mentalglm.data.instructions import make_instruction
from mentalglm.data.records import Post
from mentalglm.instruct.agreement import agreement, cohen_kappa, fleiss_kappa, krippendorff_alpha
from mentalglm.instruct.export import write_jsonl
from mentalglm.instruct.rubric import ACCEPT, SCALE_BY_KEY
from mentalglm.instruct.sheets import (
    HEADERS,
    ValidationSheetError,
    export_round,
    manifest_path,
    stratified_sample,
)
from mentalglm.instruct.validate import import_round
from mentalglm.instruct.validate_cli import app
from mentalglm.tasks import get_task

# Invented posts only: (task, labels, how many).
POOL = [("emotion", ("happy",), 60), ("emotion", ("sad",), 12), ("emotion", ("angry",), 2),
        ("suicide_risk", ("low",), 30), ("suicide_risk", ("high",), 3),
        ("cognitive_distortion", ("labeling", "mind_reading"), 4), ("cognitive_distortion", ("blaming",), 1)]
RATING_COLUMNS = {key: HEADERS.index(h) + 1 for key in SCALE_BY_KEY for h in HEADERS if h.split()[0] == key}


def chat_rows() -> list[dict]:
    rows = []
    for task_id, labels, count in POOL:
        task = get_task(task_id)
        for i in range(count):
            post = Post(f"{task_id}:{'-'.join(labels)}:{i}", f"第{i}天，我很累。联系我 13812345678", labels, "fixture")
            rows.append(make_instruction(task, post, "帖子说“我很累”，与标签相符。").to_chat())
    return rows


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "train.chat.jsonl"
    write_jsonl(path, chat_rows())
    return path


def test_stratification_respects_minimums_proportions_and_seed():
    rows = chat_rows()
    picked = stratified_sample(rows, 30, min_per_label=2, seed=13)
    assert len(picked) == 30 and len({r["id"] for r in picked}) == 30
    per_label = Counter((r["task"], label) for r in picked for label in r["labels"])
    for task_id, labels, count in POOL:
        for label in labels:
            assert per_label[task_id, label] >= min(2, count)
    assert per_label["emotion", "happy"] > per_label["suicide_risk", "low"] > per_label["emotion", "sad"]
    assert [r["task"] for r in picked] == sorted(r["task"] for r in picked)  # grouped by task
    assert [r["id"] for r in stratified_sample(rows, 30, seed=13)] == [r["id"] for r in picked]
    assert {r["id"] for r in stratified_sample(rows, 30, seed=14)} != {r["id"] for r in picked}
    assert len(stratified_sample(rows, 1000)) == len(rows)


def test_stratification_refuses_an_n_below_the_minimums():
    with pytest.raises(ValidationSheetError, match="too small"):
        stratified_sample(chat_rows(), 5, min_per_label=2)


def test_export_writes_identical_rater_sheets_with_scrubbed_text_and_dropdowns(source, tmp_path):
    out = tmp_path / "sheets" / "round1.xlsx"
    manifest = export_round(source, out, n=20, seed=13, raters=3)
    sheets = [out.with_name(f"round1.rater{r}.xlsx") for r in (1, 2, 3)]
    assert manifest["sheets"] == [p.name for p in sheets] and manifest_path(out).is_file()
    assert len(manifest["samples"]) == 20 and len(manifest["source_sha256"]) == 64
    contents = []
    for path in sheets:
        book = load_workbook(path)
        assert book.sheetnames == ["samples", "instructions"]
        rows = [list(r) for r in book["samples"].iter_rows(values_only=True)]
        contents.append(rows)
        assert [r[0] for r in rows[1:]] == [s["id"] for s in manifest["samples"]]
        validations = {str(v.sqref): v.formula1 for v in book["samples"].data_validations.dataValidation}
        assert '"0,1,2"' in validations.values() and '"yes,no"' in validations.values()
        guide = "\n".join(str(r[0]) for r in book["instructions"].iter_rows(values_only=True) if r[0])
        assert "0 = contradicts the label" in guide and "0 = 与标签矛盾" in guide
    assert contents[0] == contents[1] == contents[2]
    text = json.dumps(contents[0], ensure_ascii=False)
    assert "13812345678" not in text and "[电话]" in text
    assert any(r[3] == "高自杀风险" for r in contents[0][1:])
    assert any(r[3] == "读心术、乱贴标签" for r in contents[0][1:])


def fill(path, answers):
    """Write ratings into an exported sheet as a rater would: answers[row] = (consistency, rel, prof, accept)."""
    book = load_workbook(path)
    sheet = book["samples"]
    for row, values in enumerate(answers, start=2):
        for key, value in zip(("consistency", "reliability", "professionalism", "accept"), values, strict=True):
            sheet.cell(row, RATING_COLUMNS[key], value)
    book.save(path)


def test_round_trip_three_raters_report_and_apply(source, tmp_path):
    out = tmp_path / "round1.xlsx"
    manifest = export_round(source, out, n=15, seed=3, raters=3)
    n = len(manifest["samples"])
    votes = [["yes", "yes", "no"], ["yes", "no", "no"], ["yes", "yes", "yes"]]  # majority: yes, no, yes
    for rater in range(3):
        fill(out.with_name(f"round1.rater{rater + 1}.xlsx"),
             [(2, 5 - rater, 4, votes[i % 3][rater]) for i in range(n)])
    sheets = [out.with_name(f"round1.rater{r}.xlsx") for r in (1, 2, 3)]
    rated, report = import_round(sheets, manifest_path(out))
    overall = report["overall"]
    assert overall["rated"] == n and overall["accepted"] == sum(1 for i in range(n) if i % 3 != 1)
    assert overall["mean"] == {"consistency": 2.0, "reliability": 4.0, "professionalism": 4.0}
    assert set(report["per_task"]) == {s["task"] for s in manifest["samples"]}
    assert "fleiss_kappa" in overall["agreement"]["accept"] and "krippendorff_alpha" in overall["agreement"]["accept"]
    assert overall["agreement"]["accept"]["items"] == n

    runner = CliRunner()
    accepted = tmp_path / "accepted.jsonl"
    result = runner.invoke(app, ["import", *map(str, sheets), "--manifest", str(manifest_path(out)),
                                 "--out", str(tmp_path / "report.json"), "--md", str(tmp_path / "report.md"),
                                 "--apply", str(source), "--accepted-out", str(accepted)])
    assert result.exit_code == 0, result.output
    kept = [json.loads(line)["id"] for line in accepted.read_text(encoding="utf-8").splitlines()]
    assert kept == [r["id"] for r in map(json.loads, source.read_text(encoding="utf-8").splitlines())
                    if report["decisions"].get(r["id"]) == "accepted"]
    assert "Fleiss" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_cli_export_then_two_rater_csv_import(source, tmp_path):
    out = tmp_path / "round1.csv"
    result = CliRunner().invoke(app, ["export", "--input", str(source), "--n", "15", "--out", str(out),
                                      "--raters", "2"])
    assert result.exit_code == 0, result.output
    for rater, accept in ((1, "yes"), (2, "是")):
        path = out.with_name(f"round1.rater{rater}.csv")
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.reader(handle))
        for i, row in enumerate(rows[1:]):
            row[5:9] = [str(i % 3), str(1 + i % 5), "5", accept if i % 2 else "no"]
        with path.open("w", encoding="utf-8-sig", newline="") as handle:
            csv.writer(handle).writerows(rows)
    sheets = [out.with_name(f"round1.rater{r}.csv") for r in (1, 2)]
    _, report = import_round(sheets, manifest_path(out))
    assert report["overall"]["agreement"]["consistency"]["cohen_kappa"] == pytest.approx(1.0)
    assert report["overall"]["agreement"]["accept"]["cohen_kappa"] == pytest.approx(1.0)
    assert report["overall"]["agreement"]["professionalism"]["cohen_kappa"] is None  # one value: undefined


def test_cohen_kappa_on_a_hand_computed_2x2_table():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5, kappa = 0.4
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b, ordinal=False, labels=[0, 1]) == pytest.approx(0.4)
    # Krippendorff's nominal alpha on the same data: 1 - (n-1) * 30 / (2 * 55 * 45) with n = 100 values = 0.4
    assert krippendorff_alpha(np.array([a, b], dtype=float), level="nominal", domain=[0, 1]) == pytest.approx(0.4)


def test_quadratic_weighted_kappa_by_hand():
    # A = 0,1,2,2 and B = 0,2,2,1 on a 0-2 scale; weights (i-j)^2: observed 0.125, expected 0.34375 -> 7/11
    assert cohen_kappa([0, 1, 2, 2], [0, 2, 2, 1], ordinal=True, labels=[0, 1, 2]) == pytest.approx(7 / 11)


def test_fleiss_kappa_on_the_classic_example():
    # Wikipedia's worked example (14 raters, 10 subjects, 5 categories): P_bar = 0.378, P_e = 0.213, kappa = 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)
    with pytest.raises(ValueError):
        fleiss_kappa([[2, 1], [1, 1]])


def test_agreement_skips_missing_ratings_and_reports_items():
    matrix = np.array([[1, 0, 1, np.nan], [1, 0, 1, 1], [1, 0, 0, 1]], dtype=float)
    result = agreement(matrix, ACCEPT)
    assert result["items"] == 3 and result["fleiss_kappa"] == pytest.approx(fleiss_kappa([[0, 3], [3, 0], [1, 2]]))


@pytest.fixture
def one_sheet(source, tmp_path):
    out = tmp_path / "r.xlsx"
    manifest = export_round(source, out, n=14, seed=1)
    fill(out, [(2, 4, 4, "yes")] * len(manifest["samples"]))
    return out


def test_a_tampered_id_names_the_file_and_row(one_sheet):
    book = load_workbook(one_sheet)
    book["samples"].cell(4, 1, "invented:999")
    book.save(one_sheet)
    with pytest.raises(ValidationSheetError, match=r"r\.xlsx: row 4: sample_id 'invented:999' is not in the manifest"):
        import_round([one_sheet], manifest_path(one_sheet))


def test_out_of_range_and_empty_cells(one_sheet):
    book = load_workbook(one_sheet)
    book["samples"].cell(3, RATING_COLUMNS["reliability"], 7)
    book.save(one_sheet)
    with pytest.raises(ValidationSheetError, match=r"row 3: reliability value 7 is out of range; allowed: 1, 2, 3, 4, 5"):
        import_round([one_sheet], manifest_path(one_sheet))
    book["samples"].cell(3, RATING_COLUMNS["reliability"]).value = None
    book["samples"].cell(5, RATING_COLUMNS["accept"]).value = None
    book.save(one_sheet)
    with pytest.raises(ValidationSheetError, match=r"row 3: reliability is empty.*--allow-incomplete"):
        import_round([one_sheet], manifest_path(one_sheet))
    _, report = import_round([one_sheet], manifest_path(one_sheet), allow_incomplete=True)
    assert report["raters"][0]["incomplete_rows"] == 2
    assert report["overall"]["rated"] == report["overall"]["samples"] - 1


def test_apply_refuses_a_different_source(one_sheet, source, tmp_path):
    changed = tmp_path / "other.jsonl"
    changed.write_text(source.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["import", str(one_sheet), "--manifest", str(manifest_path(one_sheet)),
                                      "--out", str(tmp_path / "rep.json"), "--apply", str(changed),
                                      "--accepted-out", str(tmp_path / "acc.jsonl")])
    assert isinstance(result.exception, ValidationSheetError) and "differs from the manifest" in str(result.exception)
