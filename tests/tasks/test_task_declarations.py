"""Every YAML under tasks/definitions loads and is usable: labels parse unambiguously, splits point at loaders."""

from __future__ import annotations

import re

import pytest

from mentalglm.tasks import TaskType, all_tasks, get_task
from mentalglm.tasks.registry import _definition_dir

IMHI_TASKS = ("imhi_dr", "imhi_dreaddit", "imhi_sad", "imhi_irf", "imhi_multiwd", "imhi_cams", "imhi_loneliness",
              "imhi_tsid", "imhi_swmh")
OUR_TASKS = ("suicide_level", *IMHI_TASKS)


def _norm(form: str) -> str:
    return re.sub(r"\s+", " ", form.lower()).strip().rstrip(".")


def test_every_yaml_file_is_a_registered_task_or_a_fragment():
    files = [p for p in _definition_dir().glob("*.yaml") if not p.name.startswith("_")]
    tasks = all_tasks()
    assert len(files) == len(tasks)
    assert not any(task_id.startswith("_") for task_id in tasks)
    assert set(OUR_TASKS) <= set(tasks)


@pytest.mark.parametrize("task", list(all_tasks().values()), ids=lambda t: t.id)
def test_task_is_well_formed(task):
    assert len(set(task.label_ids)) == len(task.label_ids) >= 2
    assert all(label.en and label.zh for label in task.labels)
    names = [s.name for s in task.splits]
    assert len(set(names)) == len(names) and "test" in names
    if task.language == "zh":
        assert all(label.definition_zh for label in task.labels), "zh tasks define every label"
    if task.type is TaskType.BINARY:
        assert task.positive_label is not None


@pytest.mark.parametrize("task_id", OUR_TASKS)
def test_no_name_is_shared_by_two_labels(task_id):
    """A surface form naming two labels would make the answer parser's choice arbitrary."""
    owner: dict[str, str] = {}
    for label in get_task(task_id).labels:
        for form in label.surface_forms:
            assert owner.setdefault(_norm(form), label.id) == label.id, f"{form!r} names two labels"


def test_suicide_level_declaration():
    task = get_task("suicide_level")
    assert task.label_ids == tuple(str(level) for level in range(11))
    assert [label.zh for label in task.labels] == [f"{level}级" for level in range(11)]
    assert task.type is TaskType.SINGLE_LABEL and task.official_metric == "weighted_f1"
    assert {"weighted_f1", "macro_f1", "accuracy", "per_label", "confusion_matrix", "invalid_rate"} <= set(
        task.report_metrics)
    assert {(s.name, s.dataset, s.part) for s in task.splits} == {
        ("train", "sos_1k", "train"), ("validation", "sos_1k", "validation"), ("test", "sos_1k", "test")}
    assert [(s.dataset, s.part) for s in task.extra_train] == [("sos_4k", "train")]
    assert {(p["metric"], p["value"]) for p in task.published} == {("weighted_f1", 0.5089), ("f1", 0.8839)}
    # Levels are ordered by urgency: the definitions mention intent from level 4 on, timing from level 8 on.
    assert "未见自杀愿望" in task.label("3").definition_zh and "自杀愿望已表达" in task.label("4").definition_zh
    assert "正在进行" in task.label("10").definition_zh


@pytest.mark.parametrize("task_id", IMHI_TASKS)
def test_imhi_declarations(task_id):
    task = get_task(task_id)
    assert task.language == "en" and task.answer_layout == "imhi"
    assert task.official_metric == "weighted_f1"
    assert task.question.endswith("?")
    for split in task.splits:
        assert split.dataset == "imhi_mentalllama"
    if task.evaluation_only:
        assert [s.name for s in task.splits] == ["test"]
    else:
        assert [s.name for s in task.splits] == ["train", "validation", "test"]


def test_imhi_missing_files_are_still_declared():
    assert get_task("imhi_irf").split("train").part == "Irf/train"
    assert get_task("imhi_multiwd").split("train").part == "MultiWD/train"
    assert get_task("imhi_swmh").split("test").part == "swmh/test"
