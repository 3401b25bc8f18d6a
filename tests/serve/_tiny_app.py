"""A tiny app with only the jobs router: tiny TF-IDF models (or stub models), no data directory, no LLM.

Used in-process by tests/serve/test_jobs.py and as a real server for the kill -9 test::

    MENTALGLM_JOBS_DIR=/tmp/jobs MENTALGLM_TEST_BATCH_DELAY=0.05 MENTALGLM_TEST_STUB_MODELS=1 \
        python -m uvicorn --factory _tiny_app:create_app --app-dir tests/serve --port 8123
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from fastapi import FastAPI

from mentalglm.analyze.artifacts import TaskModel
from mentalglm.analyze.engine import Analyzer, InputRow
from mentalglm.analyze.schema import PostResult
from mentalglm.serve.jobs import JobStore, router
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


def _model(task_id: str, texts: list[str], labels: list[tuple[str, ...]]) -> TaskModel:
    task = get_task(task_id)
    return TaskModel(task, TfidfClassifier.for_task(task).fit(texts, labels))


def tiny_models() -> dict[str, TaskModel]:
    emotion = [(t, (label,)) for label, texts in EMOTION.items() for t in texts]
    return {
        "suicide_risk": _model("suicide_risk", HIGH + LOW, [("high",)] * len(HIGH) + [("low",)] * len(LOW)),
        "emotion": _model("emotion", [t for t, _ in emotion], [labels for _, labels in emotion]),
    }


class StubModel(TaskModel):
    """A label from the text's code points, every label's confidence from it: no sklearn, so a server starts fast."""

    def predict(self, texts: Sequence[str]) -> list[tuple[tuple[str, ...], dict[str, float]]]:
        ids = self.task.label_ids
        out = []
        for text in texts:
            chosen = ids[sum(map(ord, text)) % len(ids)]
            out.append(((chosen,), {i: 0.9 if i == chosen else round(0.1 / (len(ids) - 1), 4) for i in ids}))
        return out


def stub_models() -> dict[str, TaskModel]:
    return {task: StubModel(get_task(task), None) for task in TASKS}  # type: ignore[arg-type]


class SlowAnalyzer(Analyzer):
    """The labels engine with a pause per batch (a stand-in for an LLM) and a count of the posts it analysed."""

    def __init__(self, *args: object, delay: float = 0.0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.delay = delay
        self.analysed = 0

    def _analyse_batch(self, rows: Sequence[InputRow]) -> list[PostResult]:
        if self.delay:
            time.sleep(self.delay)
        self.analysed += len(rows)
        return super()._analyse_batch(rows)


def tiny_analyzer(delay: float = 0.0, models: dict[str, TaskModel] | None = None) -> SlowAnalyzer:
    return SlowAnalyzer(TASKS, "labels", models=models or tiny_models(), delay=delay)


def create_app(analyzer: Analyzer | None = None, store: JobStore | None = None) -> FastAPI:
    """Jobs router + ``app.state.analyzer``; as a uvicorn factory it reads the MENTALGLM_* variables below."""
    app = FastAPI()
    if analyzer is None:
        models = stub_models() if os.environ.get("MENTALGLM_TEST_STUB_MODELS") else None
        analyzer = tiny_analyzer(float(os.environ.get("MENTALGLM_TEST_BATCH_DELAY", "0")), models)
    app.state.analyzer = analyzer
    if store is not None:
        app.state.job_store = store
    elif "MENTALGLM_TEST_BATCH_SIZE" in os.environ:
        from mentalglm.serve.jobs import default_jobs_dir

        app.state.job_store = JobStore(default_jobs_dir(), app.state.analyzer,
                                       batch_size=int(os.environ["MENTALGLM_TEST_BATCH_SIZE"]))
    app.include_router(router)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
