"""`evaluate_file`: checks against the split, strict and flexible scores, files that mix tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mentalglm.data.records import Post
from mentalglm.evaluate.predict import PredictionFileError
from mentalglm.evaluate.runner import evaluate_file

RISK_POSTS = {f"r{i}": Post(f"r{i}", f"帖子{i}", (label,), "toy") for i, label in enumerate(["high", "high", "low", "low"])}
EMOTION_POSTS = {f"e{i}": Post(f"e{i}", f"微博{i}", (label,), "toy") for i, label in enumerate(["sad", "happy", "angry"])}
SPLITS = {("suicide_risk", "test"): RISK_POSTS, ("emotion", "test"): EMOTION_POSTS}


def index(task_id: str, split: str) -> dict[str, Post]:
    return SPLITS[(task_id, split)]


def row(post_id: str, task: str, strict: list[str] | None, flexible: list[str] | None, **extra: Any) -> dict[str, Any]:
    gold = list(SPLITS[(task, "test")][post_id].labels) if post_id in SPLITS[(task, "test")] else ["low"]
    return {"id": post_id, "task": task, "split": "test", "prompt": "", "raw_output": "", "gold": gold,
            "pred_strict": strict or [], "pred_flexible": flexible or [], "valid_strict": strict is not None,
            "valid_flexible": flexible is not None, "explanation": None, "latency_s": 0.5, "system": "toy", **extra}


def write(path: Path, rows: list[dict[str, Any]], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + tail, encoding="utf-8")
    return path


RISK_ROWS = [row("r0", "suicide_risk", ["high"], ["high"]), row("r1", "suicide_risk", None, ["high"]),
             row("r2", "suicide_risk", ["high"], ["high"]), row("r3", "suicide_risk", ["low"], ["low"])]


def test_strict_and_flexible_are_scored_side_by_side(tmp_path: Path) -> None:
    (results,) = evaluate_file(write(tmp_path / "p.jsonl", RISK_ROWS), index=index, n_resamples=50)
    payload = json.loads(results.read_text(encoding="utf-8"))
    m = payload["metrics"]
    # flexible: high TP2 FP1 FN0 -> F1 4/5; strict: r1 INVALID -> TP1 FP1 FN1 -> F1 1/2
    assert m["flexible"]["f1_positive"] == pytest.approx(0.8) and m["strict"]["f1_positive"] == pytest.approx(0.5)
    assert m["strict"]["n_invalid"] == 1 and m["flexible"]["n_invalid"] == 0
    assert m["headline"] == {"mode": "flexible", "metric": "f1_positive", "value": pytest.approx(0.8),
                             "ci95": m["flexible"]["ci95"]["f1_positive"], "invalid_rate": 0.0}
    assert set(m["strict"]["per_label"]) == {"none", "low", "high"}  # added for the report even if the task omits it
    assert m["posts_per_s"] == pytest.approx(2.0) and m["split_size"] == 4
    assert results.name == "p.results.json" and payload["run"]["system"] == "toy"


def test_an_id_outside_the_split_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", [*RISK_ROWS[:2], row("r99", "suicide_risk", ["low"], ["low"])])
    with pytest.raises(PredictionFileError, match=r"p\.jsonl:3: id 'r99' is not in task 'suicide_risk', split 'test'"):
        evaluate_file(path, index=index, n_resamples=0)


def test_a_duplicated_id_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", [*RISK_ROWS, RISK_ROWS[1]])
    with pytest.raises(PredictionFileError, match=r"p\.jsonl:5: id 'r1' is already on line 2"):
        evaluate_file(path, index=None, n_resamples=0)  # duplicates are caught even without the data


def test_a_truncated_line_names_its_number(tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", RISK_ROWS[:3], tail='{"id": "r3", "task": "suic')
    with pytest.raises(PredictionFileError, match=r"p\.jsonl:4: not a JSON line"):
        evaluate_file(path, index=index, n_resamples=0)


def test_gold_that_differs_from_the_split_is_an_error(tmp_path: Path) -> None:
    wrong = {**RISK_ROWS[0], "gold": ["low"]}
    with pytest.raises(PredictionFileError, match=r"p\.jsonl:1: gold \['low'\] of id 'r0' differs"):
        evaluate_file(write(tmp_path / "p.jsonl", [wrong]), index=index, n_resamples=0)


def test_a_row_without_predictions_is_an_error(tmp_path: Path) -> None:
    broken = {k: v for k, v in RISK_ROWS[0].items() if k != "pred_flexible"}
    with pytest.raises(PredictionFileError, match=r"p\.jsonl:1: row lacks \['pred_flexible'\]"):
        evaluate_file(write(tmp_path / "p.jsonl", [broken]), index=index, n_resamples=0)


def test_a_file_mixing_tasks_is_scored_per_task(tmp_path: Path) -> None:
    emotion = [row("e0", "emotion", ["sad"], ["sad"]), row("e1", "emotion", ["happy"], ["happy"]),
               row("e2", "emotion", None, None)]
    mixed = [RISK_ROWS[0], emotion[0], RISK_ROWS[3], emotion[1], emotion[2]]
    paths = evaluate_file(write(tmp_path / "mixed.jsonl", mixed), tmp_path / "out.json", index=index, n_resamples=0)
    assert [p.name for p in paths] == ["out.suicide_risk.json", "out.emotion.json"]
    risk, emo = (json.loads(p.read_text(encoding="utf-8")) for p in paths)
    assert risk["task"] == "suicide_risk" and risk["metrics"]["n"] == 2
    assert risk["metrics"]["flexible"]["accuracy"] == pytest.approx(1.0)
    assert emo["metrics"]["n"] == 3 and emo["metrics"]["flexible"]["n_invalid"] == 1
    assert emo["metrics"]["flexible"]["accuracy"] == pytest.approx(2 / 3)
    # macro over six labels: sad 1, happy 1, angry 0 (its only post was INVALID), three absent labels 0
    assert emo["metrics"]["flexible"]["macro_f1"] == pytest.approx(2 / 6)


def test_explanations_are_scored_when_rows_carry_them(tmp_path: Path) -> None:
    explained = [{**r, "explanation": "帖子写道“帖子0”，说明风险高。"} for r in RISK_ROWS[:1]]
    (results,) = evaluate_file(write(tmp_path / "p.jsonl", explained), index=index, n_resamples=0)
    scores = json.loads(results.read_text(encoding="utf-8"))["metrics"]["explanations"]
    assert scores["n_explained"] == 1 and scores["grounded_share"] == 1.0 and "rouge_l_f" not in scores
