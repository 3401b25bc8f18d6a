"""The jobs on disk: one private folder per job, written so that a killed server loses and repeats nothing.

Knows files and job records only: who runs a job is worker.py, who asks for one is routes.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mentalglm.analyze.engine import InputRow
from mentalglm.errors import MentalGLMError
from mentalglm.files import atomic_write_text, cut_file, read_jsonl, read_jsonl_lines, write_jsonl

ENV_VAR = "MENTALGLM_JOBS_DIR"
log = logging.getLogger("mentalglm.serve")
JobState = Literal["queued", "running", "done", "failed"]
FINISHED: tuple[JobState, ...] = ("done", "failed")
ID = re.compile(r"[0-9a-f]{32}")


def default_jobs_dir() -> Path:
    """``$MENTALGLM_JOBS_DIR`` or ``~/.cache/mentalglm/jobs``."""
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "mentalglm" / "jobs").expanduser()


class JobError(MentalGLMError):
    """A job request the store refuses; ``status`` is the HTTP status the router answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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

    Lines are appended whole and fsynced a batch at a time, so only the last one can be torn by a kill; anything
    from the first line that is not a complete JSON object on is cut too, so it is recomputed, never duplicated.
    """
    if not path.exists():
        return 0, 0, 0, 0
    lines = errors = high = good = 0
    for line in read_jsonl_lines(path, repair_tail=True):
        record = line.value
        if line.error is not None or not isinstance(record, dict):
            break
        lines += 1
        errors += record.get("status") == "error"
        high += bool(record.get("high_risk"))
        good += len(line.raw)
    if good != path.stat().st_size:
        cut_file(path, good)
    return lines, errors, high, good


class JobFiles:
    """The jobs directory: per job a 0700 folder with ``job.json``, ``input.jsonl`` and ``results.jsonl``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def input_path(self, job_id: str) -> Path:
        return self.root / job_id / "input.jsonl"

    def results_path(self, job_id: str) -> Path:
        return self.root / job_id / "results.jsonl"

    def load_all(self) -> Iterator[Job]:
        """Every job on disk, unfinished ones recovered to their last complete result; debris is removed."""
        if not self.root.is_dir():  # the folder is made by the first job
            return
        for directory in self.root.iterdir():
            if directory.name.startswith(".upload-"):  # killed while parsing an upload
                shutil.rmtree(directory, ignore_errors=True)
            if not directory.is_dir() or not ID.fullmatch(directory.name):
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
            results = self.results_path(job.id)
            if job.state in FINISHED:
                job.done_bytes = results.stat().st_size if results.exists() else 0
                if not job.keep_input:  # killed between saving the state and removing the posts
                    self.input_path(job.id).unlink(missing_ok=True)
                yield job
                continue
            job.done, job.errors, job.high_risk, job.done_bytes = recover_results(results)
            if job.done >= job.total:
                self.save_final(job, "done")
            elif not self.input_path(job.id).exists():
                self.save_final(job, "failed", "input.jsonl is missing: the job cannot resume")
            else:
                job.state = "queued"
            yield job

    def write_new(self, job: Job, rows: Iterable[InputRow]) -> None:
        """The job's posts (0600, atomically) and then job.json: the job exists once job.json is on disk."""
        directory = self.folder(job.id)
        directory.mkdir(parents=True, mode=0o700)
        write_jsonl(self.input_path(job.id), ({"id": r.id, "text": r.text, "line": r.line, "error": r.error}
                                              for r in rows))
        os.chmod(self.input_path(job.id), 0o600)
        self.save(job)

    def read_rows(self, job_id: str, start: int) -> Iterator[InputRow]:
        """The stored posts from row ``start`` on, as the reader that parsed the upload left them."""
        for number, row in read_jsonl(self.input_path(job_id)):
            if number > start:
                yield InputRow(**row)

    def save(self, job: Job) -> None:
        data = {k: v for k, v in asdict(job).items()
                if k not in ("done", "errors", "high_risk", "blocked", "done_bytes")}
        if job.state in FINISHED:
            data.update(done=job.done, errors=job.errors, high_risk=job.high_risk)
        atomic_write_text(self.folder(job.id) / "job.json", json.dumps(data, ensure_ascii=False, indent=1) + "\n")
        _fsync_dir(self.folder(job.id))

    def save_final(self, job: Job, state: JobState, error: str | None = None) -> None:
        """Record how a job ended (``job`` is changed), then drop its posts unless they were to be kept."""
        job.state, job.error, job.finished = state, error, time.time()
        self.save(job)
        if not job.keep_input:
            self.input_path(job.id).unlink(missing_ok=True)

    def scratch(self) -> Path:
        """A private folder inside the jobs dir for an upload being parsed (removed by the caller)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.root / f".upload-{uuid.uuid4().hex}"
        path.mkdir(mode=0o700)
        return path

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)
