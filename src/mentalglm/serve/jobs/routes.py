"""The HTTP face of batch jobs: ``POST /v1/jobs`` (JSON posts or a .txt/.csv/.jsonl/.parquet file), status,
results so far (complete lines only, in input order) and delete.

What the app gives the router (all optional but the analyzer): ``app.state.analyzer`` (read when a batch
starts, so it may be published after startup; None until then), ``app.state.analyzer_lock`` (a
``threading.Lock`` its own model calls hold: the job worker holds it for one batch at a time and never changes
the shared analyzer), ``app.state.settings`` with ``jobs_dir``, ``jobs_max_bytes``, ``max_batch``, ``tasks`` and
``shutdown_timeout_s``, or ``app.state.job_store`` (tests). Including ``router`` is enough: its lifespan resumes
the jobs at startup and stops the worker at shutdown.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from itertools import islice
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import Field, ValidationError

from mentalglm.analyze.engine import InputRow
from mentalglm.analyze.io import FORMATS, InputFileError, read_posts
from mentalglm.analyze.safety import check_locale
from mentalglm.errors import MentalGLMError
from mentalglm.serve.jobs.store import Job, JobError, default_jobs_dir
from mentalglm.serve.jobs.worker import DEFAULT_BATCH_SIZE, MAX_POSTS, JobStore
from mentalglm.serve.schemas import AnalysisOptions, PostIn

MAX_BYTES = 64 * 1024 * 1024
_SAFE_NAME = re.compile(r"[^\w.\-]+")
# Content types of a raw upload -> the reader's format (``?format=`` or the file name win over these).
_CONTENT_TYPES = {"text/plain": ".txt", "text/csv": ".csv", "application/csv": ".csv", "application/jsonl": ".jsonl",
                  "application/x-ndjson": ".jsonl", "application/jsonlines": ".jsonl", "application/x-jsonlines": ".jsonl",
                  "application/vnd.apache.parquet": ".parquet"}
_CHUNK = 64 * 1024


class JobRequest(AnalysisOptions):
    posts: list[PostIn]
    keep_input: bool = Field(False, description="keep the posts on the server after the job ends (default: delete)")


def _rows_of(posts: Sequence[PostIn]) -> list[InputRow]:
    return [InputRow(f"post-{i}" if post.id is None else str(post.id), post.text, i) for i, post in enumerate(posts, 1)]


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
                                              {"type": "array", "items": PostIn.model_json_schema()}]}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary", "description": ".txt, .csv, .jsonl or .parquet file of posts"},
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
        raise JobError(f"unknown upload format {suffix or '(none)'!r}: name the file .txt, .csv, .jsonl or .parquet, "
                       "pass ?format=txt|csv|jsonl|parquet, or send Content-Type text/plain, text/csv or application/x-ndjson",
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
    analyzer = store.analyzer()
    known = [t.id for t in analyzer.tasks] if analyzer is not None else _setting(app, "tasks", None)
    unknown = [t for t in options["tasks"] or () if known is not None and t not in known]
    if unknown:
        raise JobError(f"this server does not analyse {', '.join(map(repr, unknown))}; tasks: {', '.join(known)} "
                       "(GET /v1/tasks)", 422)


@router.post("", status_code=202, openapi_extra=_BODY_DOC,
             summary="Submit posts (JSON, or a .txt/.csv/.jsonl/.parquet file) as a durable background job")
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
        raise JobError(f"{exc}; or send the file as the raw request body with ?format=txt|csv|jsonl|parquet", 415) from None


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


