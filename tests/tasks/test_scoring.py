import json
import os

import numpy as np
import pytest

from mentalglm import files
from mentalglm.evaluate.results import read_predictions, write_predictions, write_results
from mentalglm.tasks import counts, get_task, metrics
from mentalglm.tasks.metrics import score
from mentalglm.tasks.parsing import Parsed, parse
from mentalglm.tasks.registry import task_from_mapping


def _toy(report_metrics=("macro_f1", "weighted_f1", "micro_f1", "accuracy", "confusion_matrix", "invalid_rate")):
    return task_from_mapping(
        {
            "id": "abc", "name_zh": "三类", "name_en": "three classes", "language": "zh", "type": "single-label",
            "source": "tests", "instruction": "?", "question": "?", "official_metric": "macro_f1",
            "parsing": {"strict": ["label-line"], "flexible": ["mentions-anywhere"]},
            "report_metrics": list(report_metrics),
            "labels": [{"id": c, "zh": c.upper(), "en": c} for c in "abc"],
        }
    )


GOLD = [("a",), ("a",), ("b",), ("b",), ("c",), ("c",)]


def test_three_class_macro_f1_by_hand():
    # a: P=1/2 R=1/2 F=1/2; b: P=2/3 R=1 F=4/5; c: P=1 R=1/2 F=2/3
    result = score(_toy(), GOLD, [("a",), ("b",), ("b",), ("b",), ("c",), ("a",)], n_resamples=0)
    assert result["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert result["weighted_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)  # equal supports
    assert result["accuracy"] == pytest.approx(4 / 6) and result["micro_f1"] == pytest.approx(4 / 6)
    assert result["n"] == 6 and result["n_invalid"] == 0 and result["invalid_rate"] == 0


def test_invalid_counts_as_wrong_and_only_costs_recall():
    pred = [("a",), Parsed((), False, "strict"), ("b",), ("b",), ("c",), ("a",)]
    result = score(_toy(), GOLD, pred, n_resamples=0)
    # a: TP1 FP1 FN1 -> 1/2; b: 1; c: P=1 R=1/2 -> 2/3. The INVALID row is a miss for a, a hit for nobody.
    assert result["macro_f1"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    assert result["accuracy"] == pytest.approx(4 / 6)  # not 4/5: the INVALID row stays in the denominator
    # micro: P = 4/5 over the answers that name a class, R = 4/6 -> F = 8/11
    assert result["micro_f1"] == pytest.approx(8 / 11)
    assert result["n_invalid"] == 1 and result["invalid_rate"] == pytest.approx(1 / 6)
    assert result["confusion_matrix"] == {
        "rows": ["a", "b", "c"],
        "columns": ["a", "b", "c", "INVALID"],
        "matrix": [[1, 0, 0, 1], [0, 2, 0, 0], [1, 0, 1, 0]],
    }


def test_none_empty_and_several_labels_are_invalid_on_single_label_tasks():
    result = score(_toy(), GOLD, [None, (), ("a", "b"), ("b",), ("c",), "c"], n_resamples=0)
    assert result["n_invalid"] == 3 and result["accuracy"] == pytest.approx(3 / 6)


def test_f1_positive_and_binary_confusion_matrix():
    task = get_task("suicide_risk")
    gold = [("high",), ("high",), ("high",), ("low",), ("low",)]
    pred = [("high",), ("low",), None, ("high",), ("low",)]
    result = score(task, gold, pred, n_resamples=0)
    assert result["f1_positive"] == pytest.approx(0.4)  # high: P=1/2, R=1/3
    assert result["confusion_matrix"]["rows"] == ["none", "low", "high"]  # none: the screen's answer, no gold here
    assert result["confusion_matrix"]["matrix"] == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]]
    assert set(result) >= set(task.report_metrics) | {"n", "n_invalid", "ci95"}


def test_multi_label_metrics_by_hand():
    task = get_task("cognitive_distortion")
    gold = [("mind_reading", "labeling"), ("overgeneralization",), ("labeling",)]
    pred = [("mind_reading",), ("overgeneralization", "labeling"), None]
    result = score(task, gold, pred, n_resamples=0)
    assert result["micro_f1"] == pytest.approx(4 / 7)  # TP=2, FP=1, FN=2
    assert result["samples_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert result["exact_match"] == 0.0
    assert result["macro_f1"] == pytest.approx(2 / 12)  # 12 declared labels, two with F1=1
    assert result["weighted_f1"] == pytest.approx((1 + 1 + 0) / 4)  # supports 1, 1, 2
    assert result["per_label"]["labeling"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert result["n_invalid"] == 1
    exact = score(task, gold, gold, n_resamples=0)
    assert exact["exact_match"] == 1.0 and exact["micro_f1"] == 1.0


def test_parsed_answers_are_scored_directly():
    task = get_task("emotion")
    answers = ["标签：悲伤\n推理：……", "我觉得是高兴", "标签：开心死了"]
    parsed = [parse(task, a, "strict") for a in answers]
    result = score(task, [("sad",), ("happy",), ("happy",)], parsed, n_resamples=0)
    assert result["accuracy"] == pytest.approx(1 / 3) and result["n_invalid"] == 2


def _bigger_sample():
    gold = [(c,) for c in "aabbcc" * 8]
    pred = [(c,) for c in "abbbca" * 8]
    pred[3] = None
    return gold, pred


def test_bootstrap_ci_is_seeded_and_contains_the_point_estimate():
    gold, pred = _bigger_sample()
    task = _toy()
    first = score(task, gold, pred, n_resamples=300, seed=3)
    assert first == score(task, gold, pred, n_resamples=300, seed=3)
    assert first["ci95"] != score(task, gold, pred, n_resamples=300, seed=4)["ci95"]
    assert list(first["ci95"]) == ["macro_f1", "weighted_f1", "micro_f1", "accuracy"]
    for name, (lo, hi) in first["ci95"].items():
        assert lo <= first[name] <= hi and lo < hi
    assert first["bootstrap"] == {"n_resamples": 300, "seed": 3, "method": "percentile"}
    assert score(task, gold, pred, n_resamples=0)["ci95"] == {}


def test_default_bootstrap_covers_the_official_metric():
    task = get_task("suicide_risk")
    gold = [("high",), ("low",)] * 20
    pred = [("high",), ("high",), ("low",), ("low",)] * 10
    result = score(task, gold, pred)
    assert result["bootstrap"]["n_resamples"] == 1000
    lo, hi = result["ci95"]["f1_positive"]
    assert lo <= result["f1_positive"] <= hi
    json.dumps(result, allow_nan=False)


def test_bad_inputs_are_reported():
    task = _toy()
    with pytest.raises(ValueError, match="aligned"):
        score(task, GOLD, [("a",)])
    with pytest.raises(ValueError, match="gold row 0: unknown labels"):
        score(task, [("z",)], [("a",)])
    with pytest.raises(ValueError, match="prediction 0: unknown labels"):
        score(task, [("a",)], [("z",)])
    with pytest.raises(ValueError, match="gold row 0"):
        score(task, [("a", "b")], [("a",)])
    with pytest.raises(ValueError, match="unknown metrics"):
        score(_toy(["macro_f2"]), GOLD, GOLD)
    with pytest.raises(ValueError, match="marks no label positive"):
        score(_toy(["f1_positive"]), GOLD, GOLD)
    with pytest.raises(ValueError, match="only defined for multi-label"):
        score(_toy(["samples_f1"]), GOLD, GOLD)


def test_results_and_predictions_files(tmp_path):
    task = get_task("emotion")
    parsed = parse(task, "标签：悲伤", "strict")
    result = score(task, [("sad",)], [parsed], n_resamples=10)
    path = write_results(tmp_path / "out" / "results.json", task, {"strict": result}, {"seed": 0, "nan": float("nan")})
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["task"] == "emotion" and saved["official_metric"] == "macro_f1"
    assert saved["metrics"]["strict"]["per_label"]["sad"]["support"] == 1 and saved["run"]["nan"] is None
    rows = [{"id": "t:1", "gold": ("sad",), "strict": parsed, "raw": "标签：悲伤"}]
    write_predictions(tmp_path / "out" / "predictions.jsonl", rows)
    assert read_predictions(tmp_path / "out" / "predictions.jsonl") == [
        {"id": "t:1", "gold": ["sad"], "strict": parsed.to_dict(), "raw": "标签：悲伤"}
    ]


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = write_predictions(tmp_path / "p.jsonl", [{"a": 1}])

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)  # the shared atomic writer metrics uses
    with pytest.raises(OSError, match="disk full"):
        write_predictions(path, [{"a": 2}])
    assert read_predictions(path) == [{"a": 1}]
    assert os.listdir(tmp_path) == ["p.jsonl"]


def test_read_predictions_names_the_bad_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"a": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"p.jsonl:2: not JSON"):
        read_predictions(path)


@pytest.mark.parametrize("task_id", ["emotion", "suicide_risk", "cognitive_distortion"])
def test_bootstrap_fast_path_equals_scikit_learn_on_the_sample(task_id):
    """The CI machinery (RowCounts) must score the unweighted sample exactly as scikit-learn does."""
    task = get_task(task_id)
    rng = np.random.default_rng(11)
    k = len(task.labels)

    def draw(allow_empty):
        if not task.is_multi_label:
            return (task.label_ids[rng.integers(k)],)
        row = tuple(i for i in task.label_ids if rng.random() < 0.2)
        return row if row or allow_empty else (task.label_ids[0],)

    gold = [draw(allow_empty=True) for _ in range(120)]
    pred = [None if rng.random() < 0.15 else draw(allow_empty=False) for _ in range(120)]
    reference = score(task, gold, pred, n_resamples=0)
    enc = metrics.encode(task, gold, pred)
    positive = task.label_ids.index(task.positive_label.id) if task.positive_label else None
    fast = counts.RowCounts(enc, positive).scores(np.ones((1, len(gold))))
    for name, value in reference.items():
        if name in fast:
            assert fast[name][0] == pytest.approx(value), name


def test_paired_win_rate_counts_resamples_where_one_system_beats_the_other():
    task = get_task("suicide_risk")
    gold = [("high",), ("low",)] * 20
    right = list(gold)
    half = [("high",) if i % 4 < 2 else ("low",) for i in range(40)]  # every second high post missed
    assert metrics.paired_win_rate(task, gold, right, half, n_resamples=200) == 1.0
    assert metrics.paired_win_rate(task, gold, half, right, n_resamples=200) == 0.0
    assert metrics.paired_win_rate(task, gold, right, right, n_resamples=200) == 0.0  # a tie is no win
    one_more = list(half)
    one_more[2] = ("high",)  # one more high post found: better on the resamples that draw post 2
    rate = metrics.paired_win_rate(task, gold, one_more, half, n_resamples=500, seed=1)
    assert 0.3 < rate < 1.0


def test_an_empty_decision_of_a_screened_multi_label_task_is_an_answer_not_invalid():
    task = get_task("cognitive_distortion")  # its screen may answer 未见明显认知歪曲: no label
    gold = [("labeling",), ("labeling",)]
    result = score(task, gold, [("labeling",), ()], n_resamples=0)
    assert result["n_invalid"] == 0 and result["micro_f1"] == pytest.approx(2 / 3)  # P 1/1, R 1/2
    assert score(task, gold, [("labeling",), None], n_resamples=0)["n_invalid"] == 1
