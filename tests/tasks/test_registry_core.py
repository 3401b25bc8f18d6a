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


def test_a_screen_source_keeps_one_label_or_any_of_a_list() -> None:
    from mentalglm.tasks import Split

    one = Split("a", "cogdis", "train", only_label="1", label="*")
    several = Split("b", "sos_4k", "train", only_label=["1", "2"], label="*")  # type: ignore[arg-type]  # as YAML gives it
    assert one.keeps(("1",)) and not one.keeps(("0",)) and not one.keeps(())
    assert several.only_label == ("1", "2") and hash(several)
    assert several.keeps(("2",)) and not several.keeps(("0",)) and not several.keeps(("10",))
    assert Split("c", "x", "train").keeps(())
