"""The tiny analyzer every analyzer/service test builds: a few invented posts, TF-IDF models fitted in a second.

One place for them, so the CLI, API, jobs and web-page tests agree on what "high" and "sad" look like.
"""

from __future__ import annotations

from mentalglm.analyze.artifacts import TaskModel
from mentalglm.tasks import get_task
from mentalglm.train.classical import TfidfClassifier

HIGH = ["药已经攒够了，今晚就结束这一切", "遗书写好了，明天就从楼上跳下去", "刀片准备好了，今晚就割腕结束这一切",
        "安眠药攒够了，明天就吃下去结束生命"]
LOW = ["今天工作好累，但还是要加油", "考试没考好，有点难过，明天继续努力", "下雨了心情一般，晚上吃火锅开心一下",
       "最近压力有点大，周末去爬山放松"]
EMOTION = {
    "angry": ["排队两小时说卖完了，气死我了", "又被插队了，气死我了真的"],
    "happy": ["今天收到礼物，太开心了哈哈", "考试通过了，太开心了哈哈"],
    "neutral": ["今天下午三点开会，记得带电脑", "明天下午三点开会，记得带材料"],
    "sad": ["我好难过，一个人哭了一晚上", "好难过，想家想得哭了"],
    "surprise": ["天哪，居然中奖了，太意外了", "天哪，他居然来了，太意外了"],
    "fear": ["半夜听到奇怪的声音，好害怕", "一个人走夜路好害怕，心跳好快"],
}
TASKS = ("emotion", "suicide_risk")
SAMPLES = HIGH + LOW + [t for texts in EMOTION.values() for t in texts]


def fit_model(task_id: str, texts: list[str], labels: list[tuple[str, ...]]) -> TaskModel:
    task = get_task(task_id)
    return TaskModel(task, TfidfClassifier.for_task(task).fit(texts, labels))


def tiny_models() -> dict[str, TaskModel]:
    emotion = [(t, (label,)) for label, texts in EMOTION.items() for t in texts]
    return {
        "suicide_risk": fit_model("suicide_risk", HIGH + LOW, [("high",)] * len(HIGH) + [("low",)] * len(LOW)),
        "emotion": fit_model("emotion", [t for t, _ in emotion], [labels for _, labels in emotion]),
    }
