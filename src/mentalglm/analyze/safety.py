"""Safety notices every result carries: not a diagnosis, always; crisis resources on high suicide risk; a
warning where a task's model reads a post unlike its training posts (analyze/domain.py).

Resources are per locale so a deployment can change them without touching the engine. The crisis
notice is added whenever the suicide-risk task decides its positive label or gives it at least
``CRISIS_THRESHOLD`` probability: a missed crisis costs far more than an extra panel.
"""

from __future__ import annotations

from collections.abc import Mapping

from mentalglm.analyze.schema import CrisisResource, Notice, TaskResult
from mentalglm.tasks import get_task

NOT_A_DIAGNOSIS = "决策支持，并非诊断 / decision support, not a diagnosis"
RISK_TASK = "suicide_risk"
CRISIS_THRESHOLD = 0.5
DEFAULT_LOCALE = "zh-CN"
OUTSIDE_DOMAIN = ("这条帖子不像「{name}」模型的训练帖子（{source}；相似度 {similarity:.2f}），该项结果可能不可靠，请人工阅读原帖。"
                  " / This post is unlike the {task} model's training posts ({source}; similarity {similarity:.2f}): "
                  "its result may be unreliable here; read the post.")

CRISIS: dict[str, tuple[str, tuple[CrisisResource, ...]]] = {
    "zh-CN": (
        "这条帖子显示出较高的自杀风险。如果你或你身边的人有危险，请立即求助：",
        (
            CrisisResource(name="全国心理援助热线", contact="12356", note="24小时心理援助"),
            CrisisResource(name="急救电话", contact="120", note="有生命危险时立即拨打"),
            CrisisResource(name="报警电话", contact="110", note="紧急情况"),
        ),
    ),
    "en": (
        "This post shows signs of high suicide risk. If you or someone near you is in danger, get help now:",
        (
            CrisisResource(name="China psychological assistance hotline", contact="12356", note="24 hours"),
            CrisisResource(name="Emergency medical service (China)", contact="120", note="when life is in danger"),
            CrisisResource(name="Police (China)", contact="110", note="emergencies; elsewhere, your local number"),
        ),
    ),
}


def check_locale(locale: str) -> str:
    if locale not in CRISIS:
        raise ValueError(f"unknown locale {locale!r}; known locales: {', '.join(CRISIS)}")
    return locale


def is_high_risk(tasks: Mapping[str, TaskResult], threshold: float = CRISIS_THRESHOLD) -> bool:
    result = tasks.get(RISK_TASK)
    if result is None:
        return False
    positive = get_task(RISK_TASK).positive_label
    assert positive is not None
    decided = any(label.id == positive.id for label in result.labels)
    return decided or result.confidences.get(positive.id, 0.0) >= threshold


def notices(tasks: Mapping[str, TaskResult], locale: str = DEFAULT_LOCALE) -> list[Notice]:
    """The not-a-diagnosis notice, the crisis notice with resources on high risk (``is_high_risk``), and one
    notice per task whose result is outside its training domain (the crisis notice stays: the warning changes
    no decision)."""
    out = [Notice(kind="not_a_diagnosis", text=NOT_A_DIAGNOSIS)]
    if is_high_risk(tasks):
        text, resources = CRISIS[check_locale(locale)]
        out.append(Notice(kind="crisis", text=text, resources=list(resources)))
    for result in tasks.values():
        if result.outside_training_domain:
            task = get_task(result.task)
            out.append(Notice(kind="outside_training_domain", task=task.id, text=OUTSIDE_DOMAIN.format(
                name=task.name_zh, source=task.source, task=task.id, similarity=result.training_domain_similarity)))
    return out
