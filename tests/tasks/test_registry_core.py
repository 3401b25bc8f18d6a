import pytest

from mentalglm.tasks import CHINESE_MAIN_TASKS, get_task
from mentalglm.tasks.registry import UnknownTaskError, task_from_mapping


def test_main_tasks_are_declared_with_definitions():
    for task_id in CHINESE_MAIN_TASKS:
        task = get_task(task_id)
        assert task.language == "zh"
        assert all(label.definition_zh for label in task.labels)
        assert {s.name for s in task.splits} >= {"train", "validation", "test"}


def test_unknown_task_suggests_the_closest():
    with pytest.raises(UnknownTaskError, match="Did you mean emotion"):
        get_task("emotoin")


def test_binary_task_marks_the_positive_class():
    assert get_task("suicide_risk").positive_label.id == "high"


def test_unknown_keys_are_rejected():
    with pytest.raises(ValueError, match="unknown task keys"):
        task_from_mapping({"id": "x", "colour": "red"}, origin="test.yaml")
