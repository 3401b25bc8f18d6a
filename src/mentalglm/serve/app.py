"""The HTTP service: `POST /v1/analyze` over the same Analyzer and result schema as the CLI, plus probes,
the task list, an OpenAI-compatible chat endpoint, the web page and (when present) batch jobs.

``create_app(settings, analyzer=None)`` builds it from the request and response bodies (schemas.py), the
service behind the routes (service.py) and the limits and authentication (security.py); this module holds the
routes and the assembly. Tests pass an Analyzer made of tiny classifiers and a fake backend. Requests reach the analyzer through a micro-batcher (see batcher.py) with one worker thread;
a request's options (tasks, explain, locale) run on a shallow copy, so the shared analyzer never changes.
For batch jobs the app publishes ``app.state.analyzer`` (once ready) and ``app.state.analyzer_lock``,
which every model call holds. Raw post text is never logged unless ``log_posts`` is set.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from mentalglm import __version__
from mentalglm.analyze.engine import Analyzer
from mentalglm.analyze.schema import PostResult
from mentalglm.serve.openai_api import router as openai_router
from mentalglm.serve.schemas import (
    AnalyzeRequest,
    AnalyzeResponse,
    ErrorBody,
    LabelInfo,
    ReadyResponse,
    TaskInfo,
    TasksResponse,
)
from mentalglm.serve.security import BodyLimitMiddleware, error_body, require_api_key
from mentalglm.serve.service import Service
from mentalglm.serve.settings import ServeSettings
from mentalglm.tasks import get_task

log = logging.getLogger("mentalglm.serve")
STATIC_DIR = Path(__file__).with_name("static")
JOBS_PREFIX = "/v1/jobs"  # batch uploads are larger: the jobs router enforces its own body limit
DESCRIPTION = ("Explainable mental-health analysis of Chinese social-media posts. "
               "**决策支持，并非诊断 / decision support, not a diagnosis.** See docs/serve.md.")


# --- routes ----------------------------------------------------------------------------------------------------

router = APIRouter()
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in
    ((401, "API key missing or wrong"), (413, "body or post count over the limit"),
     (503, "loading, busy (Retry-After) or shutting down"))}


def _service(request: Request) -> Service:
    return request.app.state.service


@router.post("/v1/analyze", response_model=AnalyzeResponse, responses=_ERRORS, tags=["analyze"])
async def analyze(body: AnalyzeRequest, request: Request, response: Response) -> AnalyzeResponse:
    """Analyse posts: labels with confidences, explanations with evidence, safety notices. Not a diagnosis."""
    service = _service(request)
    service.require_ready()
    rows = body.rows()
    if len(rows) > service.settings.max_posts:
        raise HTTPException(413, f"{len(rows)} posts, more than the {service.settings.max_posts} allowed per "
                                 "request; split the request")
    request_id = response.headers["X-Request-ID"] = uuid.uuid4().hex[:12]
    start = time.perf_counter()
    results = await service.analyze(rows, body.tasks, body.explain, body.locale, request_id)
    log.info("analyze request=%s posts=%d chars=%s ids=%s errors=%d high_risk=%d latency_ms=%.0f", request_id,
             len(rows), [len(r.text or "") for r in rows], [r.id for r in rows],
             sum(r.status == "error" for r in results), sum(isinstance(r, PostResult) and r.high_risk for r in results),
             (time.perf_counter() - start) * 1000)
    if service.settings.log_posts:
        for row in rows:
            log.info("analyze request=%s post=%s text=%r", request_id, row.id, row.text)
    info = service.model_info()
    return AnalyzeResponse(results=results, model=info, engine=info.engine)


@router.get("/v1/tasks", response_model=TasksResponse, tags=["analyze"])
async def tasks(request: Request) -> TasksResponse:
    """The tasks this server analyses, with their labels (Chinese and English names, definitions)."""
    out = []
    for task in map(get_task, _service(request).task_ids):
        out.append(TaskInfo(
            id=task.id, name_zh=task.name_zh, name_en=task.name_en, type=str(task.type), multi_label=task.is_multi_label,
            description_zh=task.description_zh,
            labels=[LabelInfo(id=label.id, name_zh=label.zh, name_en=label.en, definition_zh=label.definition_zh,
                              positive=label.positive) for label in task.labels]))
    return TasksResponse(tasks=out)


@router.get("/healthz", tags=["probes"])
async def healthz() -> dict[str, str]:
    """The process is alive (says nothing about the model: see /readyz)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}}, tags=["probes"])
async def readyz(request: Request) -> Any:
    """200 with the model info once the analyzer (and its LLM, if the engine uses one) is loaded; 503 before."""
    service = _service(request)
    if service.state == "ready":
        return ReadyResponse(status="ready", model=service.model_info())
    body = ReadyResponse(status=service.state, error=service.error)
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": str(service.settings.retry_after_s)})


# --- assembly ----------------------------------------------------------------------------------------------------


# What to send instead, in one sentence, for a body that does not validate (by path).
BODY_HINTS = {
    "/v1/analyze": 'send {"posts": "帖子"}, {"posts": ["帖子一", "帖子二"]} or {"posts": [{"id": "a", "text": "帖子"}]}, '
                   'optionally with "tasks", "explain" and "locale"',
    "/v1/chat/completions": 'send {"model": "mentalglm", "messages": [{"role": "user", "content": "帖子"}]}',
}


def validation_message(path: str, errors: Sequence[Any]) -> str:
    """The first problem named by its place in the body, then what to send instead."""
    first = errors[0] if errors else {}
    place = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    problem = f"{place}: {first.get('msg', 'invalid')}".removesuffix(".")
    hint = BODY_HINTS.get(path, "see the OpenAPI schema at /docs")
    return f"invalid request ({problem}); {hint}"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = validation_message(request.url.path, exc.errors())
        where = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        return JSONResponse({**error_body(422, message), "errors": where}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))


def _mount_static(app: FastAPI) -> None:
    """The web page at / and its assets under /static, when the page has been installed beside this module."""
    index = STATIC_DIR / "index.html"
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(index, media_type="text/html") if index.is_file() else RedirectResponse("/docs")


def _mount_jobs(app: FastAPI, settings: ServeSettings) -> None:
    """Batch jobs live in `mentalglm.serve.jobs` when installed: its `router`, then `setup_jobs(app, settings)`."""
    try:
        from mentalglm.serve import jobs
    except ModuleNotFoundError as exc:
        if exc.name != "mentalglm.serve.jobs":
            log.warning("batch jobs unavailable: %s", exc)
        return
    if (jobs_router := getattr(jobs, "router", None)) is not None:
        app.include_router(jobs_router)
    if (setup := getattr(jobs, "setup_jobs", None)) is not None:
        setup(app, settings)


def create_app(settings: ServeSettings | None = None, analyzer: Analyzer | None = None) -> FastAPI:
    """The FastAPI app; ``analyzer`` replaces the one the settings describe (tests, embedding in a program).

    For `uvicorn --factory mentalglm.serve.app:create_app` it runs with default settings.
    """
    settings = settings or ServeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="MentalGLM", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  dependencies=[Depends(require_api_key)])
    service = Service(settings, analyzer, publish=lambda ready: setattr(app.state, "analyzer", ready))
    app.state.settings, app.state.service, app.state.api_key = settings, service, settings.api_key()
    app.state.analyzer, app.state.analyzer_lock = None, service.lock
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, exempt=(JOBS_PREFIX,))
    _install_error_handlers(app)
    app.include_router(router)
    app.include_router(openai_router)
    _mount_static(app)
    _mount_jobs(app, settings)
    return app
