"""Durable batch jobs for the service: submit many posts, poll, stream the results; a killed server resumes.

A job is a directory under the jobs dir (``settings.jobs_dir``, else ``$MENTALGLM_JOBS_DIR``, else
``~/.cache/mentalglm/jobs``), private to the server's user (0700 folder, 0600 files)::

    job.json       id, state, total, options (written atomically at each change of state)
    input.jsonl    the posts, one ``{"id", "text", "line", "error"}`` a line; deleted when the job ends
                   unless ``keep_input`` was asked for (the text is kept only as long as it is needed to resume)
    results.jsonl  one PostResult / ErrorRecord a line, in input order, each appended with write, flush, fsync

Progress is the number of complete lines in results.jsonl, nothing else. On startup a torn last line (a kill
in the middle of a write) is truncated away and the job goes on from the next post: a result written before
the kill is never recomputed nor duplicated, and none is lost. Results carry no post text, as everywhere.

What the app gives the router (all optional but the analyzer): ``app.state.analyzer`` (read when a batch
starts, so it may be published after startup; None until then), ``app.state.analyzer_lock`` (a
``threading.Lock`` its own model calls hold: the job worker holds it for one batch at a time and never changes
the shared analyzer, it runs a shallow copy with the job's options), ``app.state.settings`` with ``jobs_dir``,
``jobs_max_bytes``, ``max_batch``, ``tasks`` and ``shutdown_timeout_s``, or ``app.state.job_store`` (tests).
Including ``router`` is enough: its lifespan resumes the jobs at startup and stops the worker at shutdown.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mentalglm.analyze.engine import Analyzer, InputRow
from mentalglm.analyze.io import FORMATS, InputFileError, read_posts
from mentalglm.analyze.safety import check_locale
from mentalglm.analyze.schema import ErrorRecord, PostResult
from mentalglm.backends.base import Backend
from mentalglm.errors import MentalGLMError
from mentalglm.files import atomic_write_text
from mentalglm.tasks import get_task

ENV_VAR = "MENTALGLM_JOBS_DIR"
log = logging.getLogger("mentalglm.serve")
DEFAULT_BATCH_SIZE = 16
RETRIES = 2
MAX_POSTS = 100_000
MAX_BYTES = 64 * 1024 * 1024
JobState = Literal["queued", "running", "done", "failed"]
FINISHED: tuple[JobState, ...] = ("done", "failed")
_ID = re.compile(r"[0-9a-f]{32}")
_SAFE_NAME = re.compile(r"[^\w.\-]+")
# Content types of a raw upload -> the reader's format (``?format=`` or the file name win over these).
_CONTENT_TYPES = {"text/plain": ".txt", "text/csv": ".csv", "application/csv": ".csv", "application/jsonl": ".jsonl",
                  "application/x-ndjson": ".jsonl", "application/jsonlines": ".jsonl", "application/x-jsonlines": ".jsonl"}
_CHUNK = 64 * 1024


def default_jobs_dir() -> Path:
    """``$MENTALGLM_JOBS_DIR`` or ``~/.cache/mentalglm/jobs``."""
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "mentalglm" / "jobs").expanduser()


class JobError(MentalGLMError):
    """A job request the store refuses; ``status`` is the HTTP status the router answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class JobPost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=200, description="your id, echoed in the result; default post-N")
    text: str = Field(description="the post; empty or too long gives an error record for this post only")


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    posts: list[JobPost]
    tasks: list[str] | None = Field(None, min_length=1, description="task ids (default: all the server analyses)")
    explain: bool | None = Field(None,
                                 description="write explanations (attribution / hybrid / llm engines); default: server's")
    locale: str | None = Field(None, description="crisis resources locale, zh-CN or en; default: server's")
    keep_input: bool = Field(False, description="keep the posts on the server after the job ends (default: delete)")

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, locale: str | None) -> str | None:
        return None if locale is None else check_locale(locale)


@dataclass
class Job:
    """A job's metadata (job.json) and, while the server runs, its progress."""

    id: str
    state: JobState
    total: int
    created: float
    source: str = "json"
    tasks: list[str] | None = None
    explain: bool | None = None
    locale: str | None = None
    keep_input: bool = False
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    done: int = 0
    errors: int = 0
    high_risk: int = 0
    analyzer: str | None = None
    blocked: str | None = None
    done_bytes: int = field(default=0, repr=False)

    def status(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "done_bytes" and (k != "blocked" or v)}
        out["results"] = f"/v1/jobs/{self.id}/results"
        return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover_results(path: Path) -> tuple[int, int, int, int]:
    """Cut a torn or unreadable tail off results.jsonl; (complete lines, error records, high-risk posts, bytes).

    Lines are appended whole and fsynced one by one, so only the last one can be torn by a kill; anything from
    the first line that is not a complete JSON object on is cut too, so it is recomputed, never duplicated.
    """
    if not path.exists():
        return 0, 0, 0, 0
    lines = errors = high = good = 0
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            try:
                record = json.loads(raw)
            except ValueError:
                break
            if not isinstance(record, dict):
                break
            lines += 1
            errors += record.get("status") == "error"
            high += bool(record.get("high_risk"))
            good += len(raw)
    if good != path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(good)
            handle.flush()
            os.fsync(handle.fileno())
    return lines, errors, high, good


def analyzer_fingerprint(analyzer: Analyzer) -> str:
    """What decides a job's results: engine, tasks, classifier cards, LLM; resuming needs the same."""
    spec = analyzer._backend_spec
    llm = None if analyzer.engine == "labels" else (spec.model_id if isinstance(spec, Backend) else str(spec))
    described = {"engine": analyzer.engine, "tasks": sorted(t.id for t in analyzer.tasks), "llm": llm,
                 "cards": {task: model.card for task, model in sorted(analyzer.models.items())}}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _rows_of(posts: Sequence[JobPost]) -> list[InputRow]:
    return [InputRow(f"post-{i}" if post.id is None else str(post.id), post.text, i) for i, post in enumerate(posts, 1)]


def _variant(analyzer: Analyzer, job: Job) -> Analyzer:
    """A shallow copy with the job's options (tasks, explain, locale), sharing models and backend."""
    if job.tasks is None and job.explain is None and job.locale is None:
        return analyzer
    variant = copy.copy(analyzer)
    if job.tasks is not None:
        variant.tasks = [get_task(t) for t in job.tasks]
    if job.explain is not None:
        variant.explain = job.explain
    if job.locale is not None:
        variant.locale = job.locale
    if variant.uses_llm and analyzer._backend is None:
        analyzer.backend  # noqa: B018  (loaded on the original, which its owner closes; the copy shares it)
        return _variant(analyzer, job)
    return variant


AnalyzerSource = Callable[[], Analyzer | None]


class JobStore:
    """Job directories under ``root`` and one worker thread that runs them in submission order.

    ``analyzer`` is an Analyzer or a callable returning one (None while the app is still loading it: the worker
    waits). ``lock`` is held around every analyzer call when the app shares one with its request path.
    """

    def __init__(self, root: str | Path, analyzer: Analyzer | AnalyzerSource, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 lock: threading.Lock | None = None, max_posts: int = MAX_POSTS) -> None:
        self.root = Path(root).expanduser()
        self._analyzer: AnalyzerSource = analyzer if callable(analyzer) and not isinstance(analyzer, Analyzer) \
            else (lambda: analyzer)  # type: ignore[assignment,return-value]
        self.batch_size = max(1, batch_size)
        self.max_posts = max_posts
        self._analyzer_lock = lock or contextlib.nullcontext()
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queue: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._deleted: set[str] = set()

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Load every job on disk, queue the unfinished ones from where they stopped, start the worker."""
        jobs = self._load_all() if self.root.is_dir() else iter(())  # the folder is made by the first job
        for job in sorted(jobs, key=lambda j: j.created):
            self._jobs[job.id] = job
            if job.state not in FINISHED:
                self._queue.put(job.id)
        self._stop.clear()
        self._thread = threading.Thread(target=self._work, name="mentalglm-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop after the batch in flight; an unfinished job stays on disk and resumes at the next start.

        False when the batch was still running after ``timeout`` seconds (the caller must not free the model).
        """
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("jobs: a batch was still running after %.0f s of shutdown; its job resumes at the "
                            "next start", timeout)
                return False
        return True

    def _load_all(self) -> Iterator[Job]:
        for directory in self.root.iterdir():
            if directory.name.startswith(".upload-"):  # killed while parsing an upload
                shutil.rmtree(directory, ignore_errors=True)
            if not directory.is_dir() or not _ID.fullmatch(directory.name):
                continue
            meta = directory / "job.json"
            if not meta.exists():  # killed while being created: nothing was accepted
                shutil.rmtree(directory, ignore_errors=True)
                continue
            try:
                job = Job(**json.loads(meta.read_text(encoding="utf-8")))
            except (ValueError, TypeError) as exc:  # one unreadable job must not keep the service down
                log.error("jobs: %s is unreadable (%s); the job is skipped", meta, exc)
                continue
            results = directory / "results.jsonl"
            if job.state in FINISHED:
                job.done_bytes = results.stat().st_size if results.exists() else 0
                if not job.keep_input:  # killed between saving the state and removing the posts
                    (directory / "input.jsonl").unlink(missing_ok=True)
                yield job
                continue
            job.done, job.errors, job.high_risk, job.done_bytes = recover_results(results)
            if job.done >= job.total:
                self._finish(job, "done")
            elif not (directory / "input.jsonl").exists():
                self._finish(job, "failed", "input.jsonl is missing: the job cannot resume")
            else:
                job.state = "queued"
            yield job

    # --- jobs ---------------------------------------------------------------------------------------

    def create(self, rows: Iterable[InputRow], *, tasks: Sequence[str] | None = None, explain: bool | None = None,
               locale: str | None = None, keep_input: bool = False, source: str = "json") -> Job:
        """Write a job's input (0600, atomically) and queue it; the job exists once job.json is on disk."""
        rows = list(islice(rows, self.max_posts + 1))
        if not rows:
            raise JobError("no posts: the job would be empty")
        if len(rows) > self.max_posts:
            raise JobError(f"more than {self.max_posts} posts in one job; split the input", 413)
        analyzer = self._analyzer()  # bound now when it is loaded, else by the first batch
        job = Job(id=uuid.uuid4().hex, state="queued", total=len(rows), created=time.time(), source=source,
                  tasks=list(dict.fromkeys(tasks)) if tasks is not None else None, explain=explain, locale=locale,
                  keep_input=keep_input, analyzer=analyzer_fingerprint(analyzer) if analyzer is not None else None)
        directory = self.root / job.id
        directory.mkdir(parents=True, mode=0o700)
        lines = (json.dumps({"id": r.id, "text": r.text, "line": r.line, "error": r.error}, ensure_ascii=False)
                 for r in rows)
        atomic_write_text(directory / "input.jsonl", "\n".join(lines) + "\n")
        os.chmod(directory / "input.jsonl", 0o600)
        self._save(job)
        with self._lock:
            self._jobs[job.id] = job
        self._queue.put(job.id)
        return job

    def create_dir(self) -> Path:
        """A private scratch folder inside the jobs dir for an upload being parsed (removed by the caller)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.root / f".upload-{uuid.uuid4().hex}"
        path.mkdir(mode=0o700)
        return path

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id) if _ID.fullmatch(job_id) else None
            return copy.copy(job) if job else None

    def results_path(self, job_id: str) -> Path:
        return self.root / job_id / "results.jsonl"

    def delete(self, job_id: str) -> bool:
        """Forget a job and remove its folder; a running job stops after its current batch."""
        with self._lock:
            job = self._jobs.pop(job_id, None) if _ID.fullmatch(job_id) else None
            if job is None:
                return False
            self._deleted.add(job_id)
            running = job.state == "running"
        if not running:
            shutil.rmtree(self.root / job_id, ignore_errors=True)
        return True

    def wait(self, job_id: str, timeout: float = 30.0) -> Job:
        """Block until the job has finished (tests, scripts)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job is None or job.state in FINISHED:
                if job is None:
                    raise KeyError(job_id)
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not finished after {timeout} s: {job.status()}")
            time.sleep(0.02)

    def _save(self, job: Job) -> None:
        directory = self.root / job.id
        data = {k: v for k, v in asdict(job).items()
                if k not in ("done", "errors", "high_risk", "blocked", "done_bytes")}
        if job.state in FINISHED:
            data.update(done=job.done, errors=job.errors, high_risk=job.high_risk)
        atomic_write_text(directory / "job.json", json.dumps(data, ensure_ascii=False, indent=1) + "\n")
        _fsync_dir(directory)

    def _finish(self, job: Job, state: JobState, error: str | None = None) -> None:
        """Save the final state, drop the posts, and only then show the job as finished."""
        final = copy.copy(job)
        final.state, final.error, final.finished = state, error, time.time()
        self._save(final)
        if not job.keep_input:
            (self.root / job.id / "input.jsonl").unlink(missing_ok=True)
        with self._lock:
            job.state, job.error, job.finished = final.state, final.error, final.finished

    # --- the worker -----------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job_id = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            with self._lock:
                job = self._jobs.get(job_id)
            if job is None or job.state != "queued":
                continue
            try:
                self._run(job)
            except Exception as exc:  # a bug or a dead backend: the job says why, the server goes on
                if job.id not in self._deleted and not self._stop.is_set():
                    self._finish(job, "failed", f"{type(exc).__name__}: {exc}")
            if job.id in self._deleted:
                shutil.rmtree(self.root / job.id, ignore_errors=True)

    def _wait_for_analyzer(self) -> Analyzer | None:
        while not self._stop.is_set():
            analyzer = self._analyzer()
            if analyzer is not None:
                return analyzer
            self._stop.wait(0.1)
        return None

    def _analyse(self, job: Job, batch: list[InputRow]) -> list[PostResult | ErrorRecord] | None:
        """One batch, retried twice after a failure (a backend that hiccups); None when the store is stopping."""
        for attempt in range(RETRIES + 1):
            base = self._wait_for_analyzer()
            if base is None:
                return None
            try:
                with self._analyzer_lock:
                    return list(_variant(base, job).analyze_many(batch, self.batch_size, keep_going=True))
            except Exception:
                if attempt == RETRIES or self._stop.wait(2.0 ** attempt):
                    raise
        return None

    def _run(self, job: Job) -> None:
        analyzer = self._wait_for_analyzer()
        if analyzer is None:
            return
        fingerprint = analyzer_fingerprint(analyzer)
        if job.analyzer not in (None, fingerprint):
            with self._lock:
                job.blocked = ("its first results were made by another analyzer (engine, classifiers or LLM); it "
                               "waits for a server with that analyzer, so that one job never mixes two (or delete it)")
            return
        with self._lock:
            job.state, job.started, job.analyzer = "running", job.started or time.time(), fingerprint
        self._save(job)
        directory = self.root / job.id
        fd = os.open(directory / "results.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with open(directory / "input.jsonl", encoding="utf-8") as source, os.fdopen(fd, "wb") as out:
            rows = (InputRow(**json.loads(line)) for line in islice(source, job.done, None))
            while batch := list(islice(rows, self.batch_size)):
                if self._stop.is_set() or job.id in self._deleted:
                    return
                results = self._analyse(job, batch)
                if results is None:
                    return
                for result in results:
                    line = (result.model_dump_json() + "\n").encode("utf-8")
                    out.write(line)
                    out.flush()
                    os.fsync(out.fileno())
                    with self._lock:
                        job.done += 1
                        job.done_bytes += len(line)
                        job.errors += result.status == "error"
                        job.high_risk += bool(getattr(result, "high_risk", False))
        complete = job.done >= job.total
        self._finish(job, "done" if complete else "failed",
                     None if complete else f"input.jsonl has {job.done} rows, the job {job.total}")


# --- the HTTP router ------------------------------------------------------------------------------------------


def _setting(app: FastAPI, name: str, default: Any) -> Any:
    value = getattr(getattr(app.state, "settings", None), name, None)
    return default if value is None else value


def store_for(app: FastAPI) -> JobStore:
    """The app's JobStore: ``app.state.job_store`` if set, else one built from the app's settings and state."""
    store = getattr(app.state, "job_store", None)
    if store is None:
        store = JobStore(
            Path(_setting(app, "jobs_dir", None) or default_jobs_dir()),
            lambda: getattr(app.state, "analyzer", None),
            batch_size=int(_setting(app, "max_batch", DEFAULT_BATCH_SIZE)),
            lock=getattr(app.state, "analyzer_lock", None),
            max_posts=int(_setting(app, "jobs_max_posts", MAX_POSTS)))
        app.state.job_store = store
    return store


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Resume unfinished jobs when the app starts; stop the worker (jobs stay resumable) when it stops."""
    store = store_for(app)
    await run_in_threadpool(store.start)
    try:
        yield
    finally:
        await run_in_threadpool(store.stop, float(_setting(app, "shutdown_timeout_s", 30.0)))


_BODY_DOC: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"oneOf": [JobRequest.model_json_schema(ref_template="#/$defs/{model}"),
                                              {"type": "array", "items": JobPost.model_json_schema()}]}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary", "description": ".txt, .csv or .jsonl file of posts"},
        "tasks": {"type": "string"}, "explain": {"type": "boolean"}, "locale": {"type": "string"},
        "keep_input": {"type": "boolean"},
        "text_column": {"type": "string"}, "id_column": {"type": "string"}}}},
    "text/csv": {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}},
    "application/x-ndjson": {"schema": {"type": "string"}}}}}

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], lifespan=lifespan)


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise JobError(f"request body is {declared} bytes, more than the limit {limit}; split the input", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise JobError(f"request body is more than the limit {limit} bytes; split the input", 413)
    return bytes(body)


def _split_tasks(value: str | list[str] | None) -> list[str] | None:
    if value is None or isinstance(value, list):
        return value
    return [t.strip() for t in value.split(",") if t.strip()] or None


def _flag(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise JobError(f"expected true or false, got {value!r}", 422)


def _json_request(body: bytes) -> JobRequest:
    payload = json.loads(body or b"null")
    return JobRequest.model_validate({"posts": payload} if isinstance(payload, list) else payload)


def _file_rows(store: JobStore, name: str, data: bytes, text_column: str | None,
               id_column: str | None) -> list[InputRow]:
    """Parse an uploaded file with the CLI's readers (same ids, same row errors) from a private scratch copy."""
    scratch = store.create_dir()
    try:
        path = scratch / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return list(islice(read_posts(path, text_column, id_column), store.max_posts + 1))
    except InputFileError as exc:
        raise JobError(str(exc).replace(str(scratch) + os.sep, "")) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _upload_name(filename: str | None, fmt: str | None, content_type: str) -> str:
    if fmt:
        suffix = "." + fmt.lower().lstrip(".")
    elif filename and Path(filename).suffix:
        suffix = Path(filename).suffix.lower()
    else:
        suffix = _CONTENT_TYPES.get(content_type, "")
    if suffix not in FORMATS:
        raise JobError(f"unknown upload format {suffix or '(none)'!r}: name the file .txt, .csv or .jsonl, pass "
                       "?format=txt|csv|jsonl, or send Content-Type text/plain, text/csv or application/x-ndjson",
                       415)
    stem = _SAFE_NAME.sub("_", Path(filename).stem)[:80] if filename else "posts"
    return f"{stem or 'posts'}{suffix}"


def _check_options(store: JobStore, app: FastAPI, options: dict[str, Any]) -> None:
    """Refuse a task the server does not analyse and an unknown locale now, not when the job runs."""
    if options["locale"] is not None:
        try:
            options["locale"] = check_locale(options["locale"])
        except MentalGLMError as exc:
            raise JobError(str(exc), 422) from None
    analyzer = store._analyzer()
    known = [t.id for t in analyzer.tasks] if analyzer is not None else _setting(app, "tasks", None)
    unknown = [t for t in options["tasks"] or () if known is not None and t not in known]
    if unknown:
        raise JobError(f"this server does not analyse {', '.join(map(repr, unknown))}; tasks: {', '.join(known)} "
                       "(GET /v1/tasks)", 422)


@router.post("", status_code=202, openapi_extra=_BODY_DOC,
             summary="Submit posts (JSON, or a .txt/.csv/.jsonl file) as a durable background job")
async def create_job(
    request: Request, response: Response,
    tasks: str | None = Query(None, description="comma-separated subset of the server's tasks"),
    explain: bool | None = Query(None, description="false = labels only"),
    locale: str | None = Query(None, description="crisis resources locale, zh-CN or en"),
    keep_input: bool = Query(False, description="keep the posts on the server after the job ends"),
    format: str | None = Query(None, description="txt | csv | jsonl, for a raw file body"),
    filename: str | None = Query(None, description="name of a raw file body (its suffix gives the format)"),
    text_column: str | None = Query(None), id_column: str | None = Query(None),
) -> dict[str, Any]:
    store = store_for(request.app)
    limit = int(_setting(request.app, "jobs_max_bytes", MAX_BYTES))
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        body = await _read_capped(request, limit)
        options: dict[str, Any] = {"tasks": _split_tasks(tasks), "explain": explain, "locale": locale,
                                   "keep_input": keep_input}
        if content_type == "application/json" or (not content_type and not (format or filename)):
            try:
                job_request = await run_in_threadpool(_json_request, body)
            except ValueError as exc:
                detail = exc.errors(include_url=False) if isinstance(exc, ValidationError) else str(exc)
                raise HTTPException(422, detail) from None
            for key in ("tasks", "explain", "locale"):
                if getattr(job_request, key) is not None:
                    options[key] = getattr(job_request, key)
            options["keep_input"] = job_request.keep_input or keep_input
            rows, source = _rows_of(job_request.posts), "json"
        elif content_type == "multipart/form-data":
            form = await _form(request, body)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise JobError("multipart upload without a file field named 'file'", 422)
            options["tasks"] = _split_tasks(form.get("tasks")) or options["tasks"]  # type: ignore[arg-type]
            options["locale"] = form.get("locale") or options["locale"]
            for key in ("explain", "keep_input"):
                if form.get(key) is not None:
                    options[key] = _flag(form.get(key))
            name = _upload_name(upload.filename, format, content_type)
            rows = await run_in_threadpool(_file_rows, store, name, await upload.read(),
                                           form.get("text_column") or text_column, form.get("id_column") or id_column)
            source = name
        else:
            name = _upload_name(filename, format, content_type)
            rows = await run_in_threadpool(_file_rows, store, name, body, text_column, id_column)
            source = name
        _check_options(store, request.app, options)
        job = await run_in_threadpool(lambda: store.create(rows, source=source, **options))
    except JobError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job.status()


async def _form(request: Request, body: bytes) -> Any:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form()
    except AssertionError as exc:  # starlette without python-multipart
        raise JobError(f"{exc}; or send the file as the raw request body with ?format=txt|csv|jsonl", 415) from None


def _job_or_404(request: Request, job_id: str) -> Job:
    job = store_for(request.app).get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r} (ids are 32 hex digits, as POST /v1/jobs returned)")
    return job


@router.get("/{job_id}", summary="A job's state and progress")
def job_status(request: Request, job_id: str) -> dict[str, Any]:
    return _job_or_404(request, job_id).status()


@router.get("/{job_id}/results", summary="The results so far, as JSONL in input order (complete lines only)")
def job_results(request: Request, job_id: str,
                start: int = Query(0, ge=0, description="skip this many result lines (to poll incrementally)")
                ) -> StreamingResponse:
    job = _job_or_404(request, job_id)
    path = store_for(request.app).results_path(job_id)
    end = job.done_bytes

    def chunks() -> Iterator[bytes]:
        if not path.exists():
            return
        with path.open("rb") as handle:
            for _ in range(start):
                if handle.tell() >= end or not handle.readline():
                    return
            while (left := end - handle.tell()) > 0:
                chunk = handle.read(min(_CHUNK, left))
                if not chunk:
                    return
                yield chunk

    headers = {"X-Job-State": job.state, "X-Job-Done": str(job.done), "X-Job-Total": str(job.total)}
    return StreamingResponse(chunks(), media_type="application/x-ndjson", headers=headers)


@router.delete("/{job_id}", status_code=204, summary="Cancel a job and delete its folder (input and results)")
def delete_job(request: Request, job_id: str) -> Response:
    if not store_for(request.app).delete(job_id):
        raise HTTPException(404, f"no job {job_id!r}")
    return Response(status_code=204)


__all__ = ["Job", "JobError", "JobStore", "default_jobs_dir", "lifespan", "recover_results", "router", "store_for"]
