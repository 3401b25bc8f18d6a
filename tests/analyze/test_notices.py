"""Which levels raise which notice is read from each task's YAML, not written in code."""

from __future__ import annotations

from mentalglm.analyze.safety import notices
from mentalglm.analyze.schema import LabelScore, TaskResult
from mentalglm.tasks import get_task


def result(task_id: str, label: str | None, confidences: dict[str, float] | None = None) -> TaskResult:
    task = get_task(task_id)
    labels = [] if label is None else [LabelScore(id=label, name_zh=task.label(label).zh, name_en=task.label(label).en)]
    return TaskResult(task=task_id, task_name_zh=task.name_zh, engine="labels", labels=labels,
                      confidences=confidences or {})


def kinds(tasks: dict[str, TaskResult], **options: bool) -> list[str]:
    return [n.kind for n in notices(tasks, **options)]


def test_none_has_no_risk_wording_low_gets_support_high_gets_crisis() -> None:
    assert kinds({"suicide_risk": result("suicide_risk", "none", {"none": 0.97, "low": 0.02, "high": 0.01})}) \
        == ["not_a_diagnosis"]
    assert kinds({"suicide_risk": result("suicide_risk", "low")}) == ["not_a_diagnosis", "support"]
    assert kinds({"suicide_risk": result("suicide_risk", "high")}) == ["not_a_diagnosis", "crisis"]
    support = notices({"suicide_risk": result("suicide_risk", "low")})[1]
    assert [r.contact for r in support.resources] == ["12356"]


def test_crisis_when_crisis_levels_together_are_probable_though_another_label_was_decided() -> None:
    tasks = {"suicide_risk": result("suicide_risk", "low", {"low": 0.45, "high": 0.5, "none": 0.05})}
    assert "crisis" in kinds(tasks)


def test_suicide_level_declares_its_own_crisis_and_support_levels() -> None:
    assert "crisis" in kinds({"suicide_level": result("suicide_level", "8")})
    assert kinds({"suicide_level": result("suicide_level", "4")}) == ["not_a_diagnosis", "support"]
    assert kinds({"suicide_level": result("suicide_level", "0")}) == ["not_a_diagnosis"]


def test_tasks_without_notice_levels_raise_none_and_mostly_foreign_text_is_flagged() -> None:
    assert kinds({"emotion": result("emotion", "sad")}) == ["not_a_diagnosis"]
    assert kinds({"emotion": result("emotion", "sad")}, out_of_domain=True) == ["not_a_diagnosis", "out_of_domain"]
