"""The tiny analyzer every analyzer/service test builds: a few invented posts, TF-IDF models fitted in a second.

One place for them, so the CLI, API, jobs and web-page tests agree on what "high" and "sad" look like.
"""

from __future__ import annotations

from dataclasses import replace

from mentalglm.analyze.artifacts import TaskModel
from mentalglm.analyze.domain import DomainCheck
from mentalglm.tasks import get_task
from mentalglm.train.classical import TfidfClassifier
from mentalglm.train.screen import CLEAR, FLAG, GatedClassifier, ScreenGate

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
# invented ordinary posts (shopping, sport, food, weather, work): unlike HIGH and LOW, for the domain check
ORDINARY = ["周末去超市买了水果和牛奶", "今晚的球赛太精彩了，主队赢了", "这家面馆的牛肉面很好吃，推荐",
            "明天降温，大家出门多穿衣服", "新手机到了，拍照效果不错", "下午开会讨论了下个季度的计划",
            "周末去超市买了面包和鸡蛋", "今天的球赛主队又赢了，太精彩"]
TASKS = ("emotion", "suicide_risk")
SAMPLES = HIGH + LOW + [t for texts in EMOTION.values() for t in texts]


def fit_model(task_id: str, texts: list[str], labels: list[tuple[str, ...]]) -> TaskModel:
    task = get_task(task_id)
    return TaskModel(task, TfidfClassifier.for_task(task).fit(texts, labels))


def fit_screened_model(task_id: str, texts: list[str], labels: list[tuple[str, ...]], clear: list[str],
                       threshold: float = 0.5) -> TaskModel:
    """The task's TF-IDF classifier behind a TF-IDF-only screen (``clear`` posts: nothing evident)."""
    task = get_task(task_id)
    inner = TfidfClassifier.for_task(task).fit(texts, labels)
    gate = TfidfClassifier(f"{task.id}.screen", [CLEAR, FLAG], multi_label=False).fit(
        [*texts, *clear], [(FLAG,)] * len(texts) + [(CLEAR,)] * len(clear))
    assert task.screen is not None
    return TaskModel(task, GatedClassifier(ScreenGate(gate, None, 1.0, threshold), inner, task.screen.none_label),
                     card={"screen": {"threshold": threshold}})


def tiny_models() -> dict[str, TaskModel]:
    emotion = [(t, (label,)) for label, texts in EMOTION.items() for t in texts]
    return {
        "suicide_risk": fit_screened_model("suicide_risk", HIGH + LOW, [("high",)] * len(HIGH) + [("low",)] * len(LOW),
                                           ORDINARY),
        "emotion": fit_model("emotion", [t for t, _ in emotion], [labels for _, labels in emotion]),
    }


def with_domain_check(models: dict[str, TaskModel], threshold: float = 0.5) -> dict[str, TaskModel]:
    """``models`` with a suicide-risk domain check fitted on HIGH + LOW against ORDINARY (the mechanism is the
    same for any task; the shipped analyzer gives one to suicide_level, whose training posts are forum-only)."""
    domain = DomainCheck.fit("suicide_risk", HIGH + LOW, ORDINARY, threshold=threshold)
    return {**models, "suicide_risk": replace(models["suicide_risk"], domain=domain,
                                              card={**models["suicide_risk"].card,
                                                                    "domain_check": {"threshold": threshold}})}


PATHWAY_FIXTURE = __import__("pathlib").Path(__file__).parent / "fixtures" / "pathway"
# invented post: trigger, distortion, emotion, disputation, one sentence each (as the fixture's sentences are)
PATHWAY_POST = "昨天又和室友吵了一架。我觉得他们肯定都在背后笑话我！想到这里就忍不住哭了一整晚…… 其实也许是我想多了。"


def fit_pathway_model(directory):
    """The TF-IDF pathway classifier on the invented fixture (about a second), saved where --artifacts-dir looks."""
    from mentalglm.train.pathway import train_pathway

    train_pathway(PATHWAY_FIXTURE, directory, kinds=["tfidf"], n_resamples=0, log=lambda _: None)
    return directory
