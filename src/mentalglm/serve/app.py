"""The HTTP service: `POST /v1/analyze` over the same Analyzer and result schema as the CLI, plus probes,
the task list, an OpenAI-compatible chat endpoint, the web page and (when present) batch jobs.

``create_app(settings, analyzer=None)`` builds it; tests pass an Analyzer made of tiny classifiers and a
fake backend. Requests reach the analyzer through a micro-batcher (see batcher.py) with one worker thread;
a request's options (tasks, explain, locale) run on a shallow copy, so the shared analyzer never changes.
For batch jobs the app publishes ``app.state.analyzer`` (once ready) and ``app.state.analyzer_lock``,
which every model call holds. Raw post text is never logged unless ``log_posts`` is set.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mentalglm import __version__
from mentalglm.analyze.engine import Analyzer, InputRow
from mentalglm.analyze.safety import check_locale
from mentalglm.analyze.schema import SCHEMA_VERSION, EngineName, ErrorRecord, PostResult
from mentalglm.backends.base import describe_error
from mentalglm.data.pii import scrub
from mentalglm.errors import MentalGLMError
from mentalglm.serve.batcher import BatcherClosedError, MicroBatcher, QueueFullError
from mentalglm.serve.openai_api import CHAT_KEY, run_chat
from mentalglm.serve.openai_api import router as openai_router
from mentalglm.serve.settings import ServeSettings
from mentalglm.tasks import get_task

log = logging.getLogger("mentalglm.serve")
STATIC_DIR = Path(__file__).with_name("static")
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz"})  # reachable without the API key (probes, the page)
JOBS_PREFIX = "/v1/jobs"  # batch uploads are larger: the jobs router enforces its own body limit
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               413: "request_too_large", 422: "invalid_request_error", 500: "server_error", 502: "backend_error",
               503: "service_unavailable"}
DESCRIPTION = ("Explainable mental-health analysis of Chinese social-media posts. "
               "**决策支持，并非诊断 / decision support, not a diagnosis.** See docs/serve.md.")


# --- request and response models ----------------------------------------------------------------------


class PostIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=200, description="your id, echoed in the result; default post-N")
    text: str = Field(description="the post; empty or too long gives an error record for this post only")


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    posts: list[PostIn] | str = Field(description="posts ({\"id\", \"text\"} objects or plain strings), or one post "
                                                  "as a plain string")
    tasks: list[str] | None = Field(default=None, min_length=1, description="task ids (default: all the server analyses)")
    explain: bool | None = Field(default=None,
                                 description="write explanations (attribution / hybrid / llm engines); default: server's")
    locale: str | None = Field(default=None, description="crisis resources locale, zh-CN or en; default: server's")

    @field_validator("posts", mode="before")
    @classmethod
    def _strings_are_posts(cls, posts: Any) -> Any:
        """``["帖子一", "帖子二"]`` is the shape users try first: each string is a post's text."""
        if isinstance(posts, list):
            return [{"text": post} if isinstance(post, str) else post for post in posts]
        return posts

    @field_validator("posts")
    @classmethod
    def _some_posts(cls, posts: list[PostIn] | str) -> list[PostIn] | str:
        if isinstance(posts, list) and not posts:
            raise ValueError("give at least one post")
        return posts

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, locale: str | None) -> str | None:
        return None if locale is None else check_locale(locale)

    def rows(self) -> list[InputRow]:
        posts = [PostIn(text=self.posts)] if isinstance(self.posts, str) else self.posts
        return [InputRow(post.id or f"post-{i}", post.text) for i, post in enumerate(posts, 1)]


class ModelInfo(BaseModel):
    engine: EngineName
    tasks: list[str]
    explain: bool = Field(description="default of a request's explain")
    locale: str = Field(description="default crisis-resources locale")
    llm: str | None = Field(description="model id of the LLM once it is loaded; null before, or with no LLM")
    schema_version: int = SCHEMA_VERSION
    version: str = __version__


Result = Annotated[PostResult | ErrorRecord, Field(discriminator="status")]


class AnalyzeResponse(BaseModel):
    results: list[Result] = Field(description="one per post, in request order: PostResult or ErrorRecord")
    model: ModelInfo
    engine: EngineName


class LabelInfo(BaseModel):
    id: str
    name_zh: str
    name_en: str
    definition_zh: str
    positive: bool = Field(description="the class a binary task's official F1 is computed on (e.g. high risk)")


class TaskInfo(BaseModel):
    id: str
    name_zh: str
    name_en: str
    type: str
    multi_label: bool
    description_zh: str
    labels: list[LabelInfo]


class TasksResponse(BaseModel):
    tasks: list[TaskInfo]


class ReadyResponse(BaseModel):
    status: Literal["ready", "loading", "error"]
    model: ModelInfo | None = None
    error: str | None = None


class ErrorBody(BaseModel):
    detail: str
    error: dict[str, str]


# --- the service behind the routes ------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalyzeKey:
    """A request's analysis options; requests with equal keys share a model call."""

    tasks: tuple[str, ...]
    explain: bool
    locale: str


def build_analyzer(settings: ServeSettings) -> Analyzer:
    """The analyzer the settings describe; missing classifiers raise MissingDataError naming analyze-train."""
    return Analyzer(settings.tasks, settings.engine, settings.backend, settings.artifacts_dir,
                    explain=settings.explain, max_chars=settings.max_chars, locale=settings.locale)


class Service:
    """Owns the analyzer: loads it off the event loop, runs it through one batcher, closes it on shutdown.

    Extensions call ``analyze`` / ``submit``, or hold ``lock`` around their own analyzer calls (the models are
    not thread-safe); they may append coroutine functions to ``on_shutdown``, run before the queue drains.
    ``publish`` receives the analyzer once it is ready (the app puts it in ``app.state.analyzer``).
    """

    def __init__(self, settings: ServeSettings, analyzer: Analyzer | None = None,
                 publish: Callable[[Analyzer], None] | None = None) -> None:
        self.settings = settings
        self.analyzer = analyzer
        self.lock = threading.Lock()
        self._publish = publish
        self.state: Literal["ready", "loading", "error"] = "loading"
        self.error: str | None = None
        self.llm_model: str | None = None
        self.defaults: AnalyzeKey | None = None
        self.started = int(time.time())
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self.batcher: MicroBatcher[Any, Any] = MicroBatcher(
            self._run, max_batch=settings.max_batch, max_wait_s=settings.batch_wait_ms / 1000,
            max_queue=settings.max_queue)
        self._loading: asyncio.Future[None] | None = None

    # lifecycle

    async def start(self) -> None:
        """Start the batcher; load the analyzer and its LLM in a thread, at once when nothing is slow to load."""
        self.batcher.start()
        if self.analyzer is not None and not self.analyzer.uses_llm:
            self._load()
        else:
            self._loading = asyncio.ensure_future(asyncio.to_thread(self._load))

    def _load(self) -> None:
        try:
            analyzer = self.analyzer or build_analyzer(self.settings)
            if analyzer.uses_llm:
                self.llm_model = analyzer.backend.model_id
                scrub("预热")  # jieba's dictionary (seconds) loads here, not in the first request's scrub
        except Exception as exc:  # reported on /readyz and in the log, the process stays up for probes
            self.error = str(exc) if isinstance(exc, MentalGLMError) else describe_error(exc)
            self.state = "error"
            log.error("could not load the analyzer: %s", self.error)
            return
        self.analyzer = analyzer
        self.defaults = AnalyzeKey(tuple(t.id for t in analyzer.tasks), analyzer.explain, analyzer.locale)
        if self._publish is not None:
            self._publish(analyzer)
        self.state = "ready"
        log.info("ready: engine=%s tasks=%s llm=%s", analyzer.engine, ",".join(self.defaults.tasks), self.llm_model)

    async def stop(self) -> None:
        for hook in self.on_shutdown:
            try:
                await hook()
            except Exception as exc:
                log.error("shutdown hook failed: %s", describe_error(exc))
        idle = await self.batcher.close(self.settings.shutdown_timeout_s)
        if self._loading is not None and not self._loading.done():
            log.warning("shutting down while the model is still loading; it is left to the process exit")
        elif not idle:
            log.warning("a model call was still running after %.0f s; the model is left to the process exit",
                        self.settings.shutdown_timeout_s)
        elif self.analyzer is not None:
            await asyncio.to_thread(self._close_analyzer)

    def _close_analyzer(self) -> None:
        """Free the model only once no batch (a request's or a batch job's) is running on it."""
        if not self.lock.acquire(timeout=self.settings.shutdown_timeout_s):
            log.warning("a batch still held the model after %.0f s; it is left to the process exit",
                        self.settings.shutdown_timeout_s)
            return
        try:
            assert self.analyzer is not None
            self.analyzer.close()
        finally:
            self.lock.release()

    # work

    def require_ready(self) -> None:
        if self.state == "ready":
            return
        reason = (f"the analyzer could not be loaded: {self.error}" if self.state == "error"
                  else "the model is still loading; retry when GET /readyz answers 200")
        raise HTTPException(503, reason, headers={"Retry-After": str(self.settings.retry_after_s)})

    @property
    def task_ids(self) -> tuple[str, ...]:
        return self.defaults.tasks if self.defaults else self.settings.tasks

    def key(self, tasks: Sequence[str] | None, explain: bool | None, locale: str | None) -> AnalyzeKey:
        """A request's options, defaults filled in; a task the server does not analyse is a 422."""
        assert self.defaults is not None
        chosen = tuple(dict.fromkeys(tasks)) if tasks else self.defaults.tasks
        unknown = [t for t in chosen if t not in self.defaults.tasks]
        if unknown:
            raise HTTPException(422, f"this server does not analyse {', '.join(map(repr, unknown))}; "
                                     f"tasks: {', '.join(self.defaults.tasks)} (GET /v1/tasks)")
        return AnalyzeKey(chosen, self.defaults.explain if explain is None else explain,
                          locale or self.defaults.locale)

    async def submit(self, key: Hashable, payloads: list[Any], request_id: str) -> list[Any]:
        """Through the batcher; queue full or shutting down is a 503, a failed model call a 500."""
        try:
            return await self.batcher.submit(key, payloads)
        except QueueFullError:
            log.warning("request=%s refused: queue full (%d items waiting)", request_id, self.batcher.pending)
            raise HTTPException(503, "the server is busy: too many posts are waiting; retry later",
                                headers={"Retry-After": str(self.settings.retry_after_s)}) from None
        except BatcherClosedError as exc:
            raise HTTPException(503, str(exc)) from None
        except MentalGLMError as exc:  # e.g. the LLM backend cannot be created: our messages carry no post text
            log.error("request=%s failed: %s", request_id, exc)
            raise HTTPException(503, str(exc)) from None
        except Exception as exc:  # the traceback without the message, which could quote a post
            log.error("request=%s failed: %s\n%s", request_id, type(exc).__name__,
                      "".join(traceback.format_tb(exc.__traceback__)))
            raise HTTPException(500, f"analysis failed ({type(exc).__name__}); the server log has request "
                                     f"{request_id}") from None

    async def analyze(self, rows: list[InputRow], tasks: Sequence[str] | None = None, explain: bool | None = None,
                      locale: str | None = None, request_id: str = "-") -> list[PostResult | ErrorRecord]:
        """Results (or error records) for ``rows`` in order: the entry point for routes and batch jobs."""
        self.require_ready()
        return await self.submit(self.key(tasks, explain, locale), rows, request_id)

    def _run(self, key: Hashable, payloads: list[Any]) -> Sequence[Any]:
        """The batcher's runner, in its worker thread."""
        assert self.analyzer is not None
        with self.lock:
            if key == CHAT_KEY:
                self.llm_model = self.analyzer.backend.model_id  # the first chat may load the LLM
                return run_chat(self.analyzer.backend, payloads)
            assert isinstance(key, AnalyzeKey)
            return list(self._variant(key).analyze_many(payloads, self.settings.max_batch, keep_going=True))

    def _variant(self, key: AnalyzeKey) -> Analyzer:
        """The analyzer with one group's options: models and backend shared, the original left as it is."""
        assert self.analyzer is not None
        variant = self.analyzer.with_options(tasks=key.tasks, explain=key.explain, locale=key.locale)
        if variant.uses_llm and self.llm_model is None:  # the first request that needs the LLM loaded it
            self.llm_model = variant.backend.model_id
        return variant

    def model_info(self) -> ModelInfo:
        assert self.analyzer is not None and self.defaults is not None
        return ModelInfo(engine=self.analyzer.engine, tasks=list(self.defaults.tasks), explain=self.defaults.explain,
                         locale=self.defaults.locale, llm=self.llm_model)


# --- limits and authentication ---------------------------------------------------------------------------


def _error_body(status: int, message: str) -> dict[str, Any]:
    """FastAPI's ``detail`` plus the OpenAI ``error`` object, so both kinds of client read the reason."""
    return {"detail": message, "error": {"type": ERROR_TYPES.get(status, "error"), "message": message}}


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``: refused on Content-Length, or counted while a chunked body streams.

    Paths under ``exempt`` prefixes (batch uploads) enforce their own limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: tuple[str, ...] = ()) -> None:
        self.app, self.max_bytes, self.exempt = app, max_bytes, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send, int(declared))
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # FastAPI re-raises HTTPException from body reading
                    raise HTTPException(413, self._message(received, more=True))
            return message

        await self.app(scope, counted, send)

    def _message(self, size: int, more: bool = False) -> str:
        return (f"request body {'over ' if more else ''}{size} bytes is larger than the limit of {self.max_bytes}; "
                "send fewer posts per request (or start the server with a larger --max-body-bytes)")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        await JSONResponse(_error_body(413, self._message(size)), status_code=413)(scope, receive, send)


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY (when the server has an API key)")
_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: KEY (alternative)")


async def require_api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_key_header)],
) -> None:
    """With a key configured, every route but the probes and the page needs it (jobs routes included)."""
    expected: str | None = request.app.state.api_key
    path = request.scope["path"]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    if expected is None or path in OPEN_PATHS:
        return
    given = bearer.credentials if bearer else header
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`",
                            headers={"WWW-Authenticate": "Bearer"})


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
        return JSONResponse({**_error_body(422, message), "errors": where}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(_error_body(exc.status_code, message), status_code=exc.status_code,
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
