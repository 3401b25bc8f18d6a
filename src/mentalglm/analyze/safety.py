"""Safety notices every result carries: not a diagnosis, always; crisis resources on high suicide risk; a
warning where a task's model reads a post unlike its training posts (analyze/domain.py).

Resources are per locale so a deployment can change them without touching the engine. Which labels raise which
notice is declared by each task (``notices`` in its YAML: ``crisis`` and ``support`` levels). The crisis notice is
added whenever a task decides a crisis label or gives its crisis labels together at least ``CRISIS_THRESHOLD``
probability: a missed crisis costs far more than an extra panel.
"""

from __future__ import annotations

from collections.abc import Mapping

from mentalglm.analyze.schema import CrisisResource, Notice, TaskResult
from mentalglm.tasks import get_task

NOT_A_DIAGNOSIS = "决策支持，并非诊断 / decision support, not a diagnosis"
CRISIS_THRESHOLD = 0.5
DEFAULT_LOCALE = "zh-CN"
OUTSIDE_DOMAIN = ("这条帖子不像「{name}」模型的训练帖子（{source}；相似度 {similarity:.2f}），该项结果可能不可靠，请人工阅读原帖。"
                  " / This post is unlike the {task} model's training posts ({source}; similarity {similarity:.2f}): "
                  "its result may be unreliable here; read the post.")

NOT_CHINESE = ("这条帖子主要不是中文：模型只学过中文帖子，所有结果（包括“无明显风险”）都不可靠，请人工阅读原帖。"
               " / This post is mostly not Chinese: the models only learned Chinese posts, so every result, "
               "\"no evident risk\" included, is unreliable; read the post.")

# The chat endpoint answers as MentalGLM: a message that is not Chinese is refused (422) rather than read by models
# that only learned Chinese posts (an English suicide note reads as "no evident risk"), and the refusal still says
# where help is, since nobody has read the message.
NOT_CHINESE_CHAT = ("MentalGLM reads Chinese posts only: this message is {share:.0%} Chinese (words of other scripts "
                    "count once), so it was not analysed; send the post in Chinese. "
                    "如果你或你身边的人有危险，请立即求助 / if you or someone near you is in danger, get help now: "
                    "{resources}.")

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


SUPPORT: dict[str, tuple[str, tuple[CrisisResource, ...]]] = {
    "zh-CN": ("这条帖子流露出痛苦或轻生的念头。如果你或你身边的人需要倾诉，可以拨打心理援助热线：",
              (CrisisResource(name="全国心理援助热线", contact="12356", note="24小时心理援助"),)),
    "en": ("This post shows distress or thoughts of not wanting to live. If you or someone near you needs to talk, "
           "call the psychological assistance hotline:",
           (CrisisResource(name="China psychological assistance hotline", contact="12356", note="24 hours"),)),
}


def not_chinese_chat(share: float) -> str:
    """The chat endpoint's refusal of a mostly non-Chinese message, with the crisis resources."""
    resources = "; ".join(f"{r.name} {r.contact}" for r in CRISIS["en"][1])
    return NOT_CHINESE_CHAT.format(share=share, resources=resources)


def check_locale(locale: str) -> str:
    if locale not in CRISIS:
        raise ValueError(f"unknown locale {locale!r}; known locales: {', '.join(CRISIS)}")
    return locale


def _raises(result: TaskResult, kind: str, threshold: float | None = None) -> bool:
    """The task's YAML names the labels that raise ``kind``; decided, or (with ``threshold``) probable enough."""
    levels = get_task(result.task).notice_labels(kind)
    if not levels or not result.valid:
        return False
    if any(label.id in levels for label in result.labels):
        return True
    return threshold is not None and sum(result.confidences.get(level, 0.0) for level in levels) >= threshold


def is_high_risk(tasks: Mapping[str, TaskResult], threshold: float = CRISIS_THRESHOLD) -> bool:
    """A crisis label of any task decided, or its labels together at least ``threshold`` probable."""
    return any(_raises(result, "crisis", threshold) for result in tasks.values())


def needs_support(tasks: Mapping[str, TaskResult]) -> bool:
    return any(_raises(result, "support") for result in tasks.values())


def notices(tasks: Mapping[str, TaskResult], locale: str = DEFAULT_LOCALE, *, out_of_domain: bool = False) -> list[Notice]:
    """The not-a-diagnosis notice; the crisis notice with resources on high risk (``is_high_risk``), else the
    support notice with the hotline where a support level was decided; one notice per task whose result is
    outside its training domain (the crisis notice stays: the warning changes no decision). A post with no
    crisis or support level gets no risk wording at all."""
    out = [Notice(kind="not_a_diagnosis", text=NOT_A_DIAGNOSIS)]
    if is_high_risk(tasks):
        text, resources = CRISIS[check_locale(locale)]
        out.append(Notice(kind="crisis", text=text, resources=list(resources)))
    elif needs_support(tasks):
        text, resources = SUPPORT[check_locale(locale)]
        out.append(Notice(kind="support", text=text, resources=list(resources)))
    if out_of_domain:  # "nothing evident" on text the models cannot read must not pass as a finding
        out.append(Notice(kind="out_of_domain", text=NOT_CHINESE))
    for result in tasks.values():
        if result.outside_training_domain:
            task = get_task(result.task)
            out.append(Notice(kind="outside_training_domain", task=task.id, text=OUTSIDE_DOMAIN.format(
                name=task.name_zh, source=task.source, task=task.id, similarity=result.training_domain_similarity)))
    return out
