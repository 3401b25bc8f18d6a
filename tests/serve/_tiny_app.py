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
from tiny_analyzer import TASKS, tiny_models  # noqa: E402  (tests/ is on the path: pytest's pythonpath, or the server's PYTHONPATH)

from mentalglm.analyze.artifacts import TaskModel
from mentalglm.analyze.engine import Analyzer, InputRow
from mentalglm.analyze.schema import PostResult
from mentalglm.serve.jobs import JobStore, router
from mentalglm.tasks import get_task


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
