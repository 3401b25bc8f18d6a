"""The jobs in memory and the one worker thread that runs them, in submission order, through the batch runner.

A job's rows go through `analyze.batch.run_rows` and `analyse_rows`, as a file does in `mentalglm analyze`:
a batch at a time, results appended in input order with flush and fsync, a post the analyzer fails on becoming
one error record. What is particular to the service stays here: the shared analyzer's lock (held for one batch
at a time), the job's own options (``Analyzer.with_options``, the shared analyzer is never changed), retries
of a batch when a backend hiccups, and stopping between batches when the server shuts down.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from pathlib import Path

from mentalglm.analyze.batch import analyse_rows, fingerprint, run_rows
from mentalglm.analyze.engine import Analyzer, InputRow
from mentalglm.analyze.outputs import Result, result_line
from mentalglm.files import JsonlAppender
from mentalglm.serve.jobs.store import FINISHED, ID, Job, JobError, JobFiles, JobState, log

DEFAULT_BATCH_SIZE = 16
RETRIES = 2
MAX_POSTS = 100_000
AnalyzerSource = Callable[[], Analyzer | None]


class JobStore:
    """Job folders under ``root`` (``JobFiles``) and one worker thread that runs them in submission order.

    ``analyzer`` is an Analyzer or a callable returning one (None while the app is still loading it: the worker
    waits). ``lock`` is held around every analyzer call when the app shares one with its request path.
    """

    def __init__(self, root: str | Path, analyzer: Analyzer | AnalyzerSource, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 lock: threading.Lock | None = None, max_posts: int = MAX_POSTS) -> None:
        self.files = JobFiles(root)
        self.root = self.files.root
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

    def analyzer(self) -> Analyzer | None:
        """The analyzer jobs run on, None while the app is still loading it."""
        return self._analyzer()

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Load every job on disk, queue the unfinished ones from where they stopped, start the worker."""
        for job in sorted(self.files.load_all(), key=lambda j: j.created):
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

    # --- jobs ---------------------------------------------------------------------------------------

    def create(self, rows: Iterable[InputRow], *, tasks: Sequence[str] | None = None, explain: bool | None = None,
               locale: str | None = None, keep_input: bool = False, source: str = "json") -> Job:
        """Write a job's input and queue it; the job exists once job.json is on disk."""
        rows = list(islice(rows, self.max_posts + 1))
        if not rows:
            raise JobError("no posts: the job would be empty")
        if len(rows) > self.max_posts:
            raise JobError(f"more than {self.max_posts} posts in one job; split the input", 413)
        analyzer = self._analyzer()  # bound now when it is loaded, else by the first batch
        job = Job(id=uuid.uuid4().hex, state="queued", total=len(rows), created=time.time(), source=source,
                  tasks=list(dict.fromkeys(tasks)) if tasks is not None else None, explain=explain, locale=locale,
                  keep_input=keep_input, analyzer=fingerprint(analyzer) if analyzer is not None else None)
        self.files.write_new(job, rows)
        with self._lock:
            self._jobs[job.id] = job
        self._queue.put(job.id)
        return job

    def create_dir(self) -> Path:
        """A private scratch folder inside the jobs dir for an upload being parsed (removed by the caller)."""
        return self.files.scratch()

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id) if ID.fullmatch(job_id) else None
            return copy.copy(job) if job else None

    def results_path(self, job_id: str) -> Path:
        return self.files.results_path(job_id)

    def delete(self, job_id: str) -> bool:
        """Forget a job and remove its folder; a running job stops after its current batch."""
        with self._lock:
            job = self._jobs.pop(job_id, None) if ID.fullmatch(job_id) else None
            if job is None:
                return False
            self._deleted.add(job_id)
            running = job.state == "running"
        if not running:
            self.files.remove(job_id)
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
        self.files.save(job)

    def _finish(self, job: Job, state: JobState, error: str | None = None) -> None:
        """Save the final state, drop the posts, and only then show the job as finished."""
        final = copy.copy(job)
        self.files.save_final(final, state, error)
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
                self.files.remove(job.id)

    def _wait_for_analyzer(self) -> Analyzer | None:
        while not self._stop.is_set():
            analyzer = self._analyzer()
            if analyzer is not None:
                return analyzer
            self._stop.wait(0.1)
        return None

    def _analyse(self, job: Job, batch: list[InputRow]) -> list[Result] | None:
        """One batch, retried twice after a failure (a backend that hiccups); None when the store is stopping."""
        for attempt in range(RETRIES + 1):
            base = self._wait_for_analyzer()
            if base is None:
                return None
            try:
                with self._analyzer_lock:
                    analyzer = base.with_options(tasks=job.tasks, explain=job.explain, locale=job.locale)
                    return analyse_rows(analyzer, batch, batch_size=self.batch_size)
            except Exception:
                if attempt == RETRIES or self._stop.wait(2.0 ** attempt):
                    raise
        return None

    def _stopping(self, job: Job) -> bool:
        return self._stop.is_set() or job.id in self._deleted

    def _run(self, job: Job) -> None:
        analyzer = self._wait_for_analyzer()
        if analyzer is None:
            return
        found = fingerprint(analyzer)
        if job.analyzer not in (None, found):
            with self._lock:
                job.blocked = ("its first results were made by another analyzer (engine, classifiers or LLM); it "
                               "waits for a server with that analyzer, so that one job never mixes two (or delete it)")
            return
        with self._lock:
            job.state, job.started, job.analyzer = "running", job.started or time.time(), found
        self._save(job)
        with JsonlAppender(self.files.results_path(job.id), mode=0o600) as out:
            def write(results: Sequence[Result]) -> None:
                out.write([result_line(r) for r in results])
                with self._lock:
                    job.done += len(results)
                    job.done_bytes = out.size
                    job.errors += sum(r.status == "error" for r in results)
                    job.high_risk += sum(bool(getattr(r, "high_risk", False)) for r in results)

            run_rows(self.files.read_rows(job.id, job.done), lambda batch: self._analyse(job, batch), write,
                     batch_size=self.batch_size, stop=lambda: self._stopping(job))
        if self._stopping(job):
            return
        complete = job.done >= job.total
        self._finish(job, "done" if complete else "failed",
                     None if complete else f"input.jsonl has {job.done} rows, the job {job.total}")
