from pathlib import Path

import pytest

from mentalglm.data.loaders.cognitive_pathway import CognitivePathwayFiles, read_label_file
from mentalglm.tasks import TaskType, get_task
from mentalglm.tasks.layout import render_answer
from mentalglm.tasks.metrics import score
from mentalglm.tasks.parsing import parse
from mentalglm.tasks.pathway import pathway_scores, pathway_task, with_parents

# Invented sentences and children: the real 19 children are not published to us.
FIXTURE = Path(__file__).parent / "fixtures" / "pathway"
LABELS = FIXTURE / "label.txt"
TRIGGER, DISTORTION, EMOTION, DISPUTE = "触发性事件", "认知歪曲", "情绪反应", "驳斥"
PRED = [
    ("触发性事件##人际冲突",),  # right
    ("认知歪曲##读心术",),  # right parent, wrong child
    ("认知歪曲##读心术",),  # misses 情绪反应##情感效应
    None,  # INVALID
]


def _rows():
    return [(post.text, post.labels) for post in CognitivePathwayFiles(FIXTURE).load(None, "test")[0]]


def _gold():
    return [labels for _, labels in _rows()]


def test_task_is_declared_as_evaluation_only_hierarchical():
    task = get_task("cognitive_pathway")
    assert task.type is TaskType.HIERARCHICAL and task.evaluation_only and task.language == "zh"
    assert task.label_ids == (TRIGGER, DISTORTION, EMOTION, DISPUTE)
    assert task.split("test").dataset == "cognitive_pathway_files"


def test_reads_the_fixture():
    rows = _rows()
    assert rows[0] == ("昨天又和室友吵了一架", (TRIGGER, "触发性事件##人际冲突"))
    assert rows[2][1] == ("认知歪曲##读心术", "情绪反应##情感效应")
    assert len(read_label_file(LABELS)) == 9


def test_scores_by_hand_with_the_label_file():
    result = pathway_scores(_gold(), PRED, read_label_file(LABELS))
    # parents: TP 触发性事件 + 认知歪曲 x2 = 3, FP 0, FN 情绪反应 + 驳斥 = 2
    assert result["parent_micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 0 + 2))
    assert result["parent_macro_f1"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    # children: TP 人际冲突 + 读心术(row 3) = 2, FP 读心术(row 2) = 1, FN 以偏概全 + 情感效应 = 2
    assert result["child_micro_f1"] == pytest.approx(4 / 7)
    # 人际冲突 1, 以偏概全 0, 读心术 2/3, 情感效应 0, 驳斥##有效驳斥 0 (in label.txt, never seen)
    assert result["child_macro_f1"] == pytest.approx((1 + 2 / 3) / 5)
    # all labels, parents implied: TP 5, FP 1, FN 4
    assert result["micro_f1"] == pytest.approx(2 / 3)
    assert result["macro_f1"] == pytest.approx((1 + 1 + 1 + 2 / 3) / 9)
    assert result["n"] == 4 and result["n_invalid"] == 1
    assert result["per_label"]["child"]["认知歪曲##读心术"] == {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}
    assert result["labels"]["parent"] == [TRIGGER, DISTORTION, EMOTION, DISPUTE]


def test_without_a_label_file_macro_runs_over_observed_children():
    result = pathway_scores(_gold(), PRED)
    assert result["labels"]["child"] == sorted(["触发性事件##人际冲突", "认知歪曲##以偏概全", "认知歪曲##读心术", "情绪反应##情感效应"])
    assert result["child_macro_f1"] == pytest.approx((1 + 2 / 3) / 4)
    assert result["macro_f1"] == pytest.approx((1 + 1 + 1 + 2 / 3) / 8)
    assert result["child_micro_f1"] == pytest.approx(4 / 7)


def test_parent_only_predictions_have_no_child_level():
    gold = [(DISTORTION,), (TRIGGER, EMOTION)]
    result = pathway_scores(gold, gold)
    assert result["parent_micro_f1"] == 1.0 and result["child_micro_f1"] is None and result["labels"]["child"] == []


def test_bootstrap_is_seeded_and_covers_the_estimates():
    gold, pred = _gold() * 10, PRED * 10
    first = pathway_scores(gold, pred, n_resamples=200, seed=5)
    assert first == pathway_scores(gold, pred, n_resamples=200, seed=5)
    for name, (lo, hi) in first["ci95"].items():
        assert lo <= first[name] <= hi


def test_score_dispatches_hierarchical_tasks_to_pathway_scoring():
    task = get_task("cognitive_pathway")
    gold = _gold()
    answers = [render_answer(task, [DISTORTION], "……"), "标签：触发性事件", "认知歪曲和情绪反应", "不知道"]
    parsed = [parse(task, text, "flexible") for text in answers]
    result = score(task, gold, parsed, n_resamples=50, label_list=read_label_file(LABELS))
    assert set(result) >= set(task.report_metrics) | {"n", "n_invalid", "ci95"}
    # parents: row 1 FP 认知歪曲 + FN 触发性事件, row 2 FP 触发性事件 + FN 认知歪曲, row 3 TP 2, row 4 INVALID FN 驳斥
    assert result["parent_micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 3))
    assert result["n_invalid"] == 1 and result["invalid_rate"] == 0.25


def test_unknown_labels_in_scored_rows_raise():
    with pytest.raises(ValueError, match="gold row 0"):
        pathway_scores([("自动思维",)], [(DISTORTION,)])
    with pytest.raises(ValueError, match="prediction row 0"):
        pathway_scores([(DISTORTION,)], [("认知歪曲##未知",)], read_label_file(LABELS))


def test_with_parents_adds_each_childs_parent_first():
    assert with_parents(["认知歪曲##读心术", EMOTION, "认知歪曲##读心术"]) == (DISTORTION, EMOTION, "认知歪曲##读心术")


def test_pathway_task_names_children_so_llm_answers_parse_back():
    labels = [*read_label_file(LABELS), "驳斥##自动/习惯性否定"]
    task = pathway_task(labels)
    assert task.label_ids[:4] == (TRIGGER, DISTORTION, EMOTION, DISPUTE) and len(task.labels) == len(labels)
    assert task.label("认知歪曲##读心术").zh == "读心术" and "读心术" in task.instruction
    for mode in ("strict", "flexible"):
        parsed = parse(task, "标签：认知歪曲、读心术、自动/习惯性否定\n推理：……", mode)
        assert parsed.valid and parsed.labels == (DISTORTION, "认知歪曲##读心术", "驳斥##自动/习惯性否定"), mode
    # the full id is a name too, and a child named like another parent's child is shown by its id
    assert parse(task, "标签：情绪反应##情感效应", "strict").labels == ("情绪反应##情感效应",)
    shared = pathway_task([*labels, "驳斥##读心术"])
    assert shared.label("驳斥##读心术").zh == "驳斥##读心术" and shared.label("认知歪曲##读心术").zh == "认知歪曲##读心术"
