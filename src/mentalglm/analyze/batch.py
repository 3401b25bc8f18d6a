"""The one batch runner of the analyzer: posts in, results in input order out, resumable after a kill.

`mentalglm analyze --input` (one file, a directory or a glob of .jsonl / .csv / .parquet / .txt), the service's
`/v1/jobs` and the Ray path (`analyze/distributed.py`) all go through it, so batching, error records and resuming
behave the same everywhere; only the HTTP micro-batcher of interactive requests is separate.

Each output file ``OUT`` is written as a JSONL "partial" in ``OUT``'s folder under ``_mentalglm/`` (a folder that
Parquet and Arrow dataset readers skip), one line per input row in input order, appended a batch at a time with
flush and fsync. A rerun after a kill counts the partial's complete lines (a torn last line is cut), reads the
input from that row on (``io.index_rows`` finds its byte offset) and appends: nothing is redone, nothing
duplicated. When every row is in, the partial becomes ``OUT`` (renamed, or written as Parquet) and a
``.meta.json`` beside it records the input, the analyzer's fingerprint and the counts; a complete output is
skipped by a rerun, and one written from another input or by another analyzer is refused, not mixed. Those files
(inputs, partials, meta, Parquet) are ``outputs.py``'s; this module analyses rows and schedules files.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from mentalglm.analyze.engine import DEFAULT_BACKEND, Analyzer, InputRow
from mentalglm.analyze.io import InputFileError, Seek, check_file, index_rows, read_posts
from mentalglm.analyze.outputs import (
    FileTask,
    Result,
    ResultFile,
)
from mentalglm.analyze.schema import EngineName, ErrorRecord
from mentalglm.errors import ConfigError, MentalGLMError


def fingerprint(analyzer: Analyzer) -> str:
    """A short hash of what decides the results (``Analyzer.describe``): resuming needs the same analyzer."""
    return hashlib.sha256(json.dumps(analyzer.describe(), sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AnalyzerRecipe:
    """How to build the analyzer anywhere, e.g. in a Ray actor on another machine: its options, not its models.

    The artifacts directory must be readable at the same path wherever it is built; the fingerprint checks it.
    """

    tasks: tuple[str, ...]
    engine: EngineName
    backend: str = DEFAULT_BACKEND
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    artifacts_dir: str | None = None
    explain: bool = True
    max_chars: int = 2000
    locale: str = "zh-CN"

    def build(self) -> Analyzer:
        return Analyzer(self.tasks, self.engine, self.backend, self.artifacts_dir, explain=self.explain,
                        max_chars=self.max_chars, locale=self.locale, backend_options=self.backend_options)


def analyse_rows(analyzer: Analyzer, rows: Sequence[InputRow], *, keep_going: bool = True,
                 batch_size: int | None = None) -> list[Result]:
    """``analyze_many`` over ``rows``, in order. With ``keep_going`` a post on which the analyzer itself fails
    costs one error record, not the batch (a failed batch is redone row by row to find it); the record names the
    exception type only, since its message could quote the post. Our own errors (a bad row without
    ``keep_going``, an LLM server that stopped answering) still stop the run: written results are kept, and an
    error record would make a passing outage permanent.
    """
    size = batch_size or max(1, len(rows))
    try:
        return list(analyzer.analyze_many(rows, size, keep_going=keep_going))
    except MentalGLMError:
        raise
    except Exception:
        if not keep_going:
            raise
    out: list[Result] = []
    for row in rows:
        try:
            out.extend(analyzer.analyze_many([row], 1, keep_going=True))
        except MentalGLMError:
            raise
        except Exception as exc:
            out.append(ErrorRecord(id=row.id, line=row.line, error=f"the analyzer failed on this post "
                                   f"({type(exc).__name__}); it is an error record so that the run goes on"))
    return out


def run_rows(rows: Iterable[InputRow], analyse: Callable[[list[InputRow]], Sequence[Result] | None],
             write: Callable[[Sequence[Result]], None], *, batch_size: int,
             stop: Callable[[], bool] = lambda: False) -> int:
    """The loop every batch path shares: a batch of rows, its results, written in order before the next batch.

    ``analyse`` returning None or ``stop()`` ends the run early (a server shutting down); returns rows written.
    """
    source = iter(rows)
    written = 0
    while batch := list(islice(source, max(1, batch_size))):
        if stop():
            break
        results = analyse(batch)
        if results is None:
            break
        if len(results) != len(batch):
            raise MentalGLMError(f"the analyzer returned {len(results)} results for {len(batch)} rows")
        write(results)
        written += len(results)
    return written


# --- the file runner ---------------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    files: int = 0
    skipped_complete: int = 0
    rows: int = 0
    resumed_rows: int = 0
    errors: int = 0
    high_risk: int = 0
    seconds: float = 0.0
    first_results_s: float = 0.0  # Ray: start-up plus the first chunks, until the first results are written
    unreadable: list[str] = field(default_factory=list)

    @property
    def posts_per_s(self) -> float | None:
        return round(self.rows / self.seconds, 2) if self.rows and self.seconds > 0 else None


@dataclass
class Pending:
    """A file with rows still to analyse: its result file, its row count and where each chunk of it starts."""

    task: FileTask
    out: ResultFile
    total: int
    seeks: list[Seek]


def open_files(tasks: Sequence[FileTask], analyzer_fingerprint: str, summary: RunSummary, *, overwrite: bool,
               keep_going: bool, chunk_rows: int, runner: str) -> list[Pending]:
    """Check every input and open its results before any work: a file that cannot be read is an error before
    anything runs, or with ``keep_going`` a skipped file named in the summary; complete files are skipped."""
    pending: list[Pending] = []
    problems: list[str] = []
    for task in tasks:
        try:
            check_file(task.source)
        except InputFileError as exc:
            problems.append(str(exc))
            continue
        out = ResultFile(task, analyzer_fingerprint, overwrite=overwrite, runner=runner)
        summary.files += 1
        if out.complete:
            summary.skipped_complete += 1
            out.close()
            continue
        try:
            total, seeks = index_rows(task.source, chunk_rows, first_row=out.done)
        except InputFileError as exc:
            out.close()
            problems.append(str(exc))
            continue
        if out.done > total:
            raise ConfigError(f"{task.partial} holds {out.done} results for {total} input rows; delete it to start "
                              "this file over")
        summary.resumed_rows += out.done
        pending.append(Pending(task, out, total, seeks))
    if problems and not keep_going:
        for entry in pending:
            entry.out.close()
        raise InputFileError("input", "these files cannot be analysed: " + "; ".join(problems)
                             + " (fix or move them, or pass --keep-going to analyse the others)")
    summary.unreadable = problems
    return pending


def run_local(pending: Sequence[Pending], analyzer: Analyzer, *, batch_size: int, keep_going: bool,
              text_column: str | None, id_column: str | None,
              on_progress: Callable[[int], None] = lambda n: None) -> tuple[int, int]:
    """Analyse the pending files one after the other in this process; (rows written, seconds)."""
    written = 0
    started = time.perf_counter()
    for entry in pending:
        file_started = time.perf_counter()
        try:
            if entry.seeks:
                rows = read_posts(entry.task.source, text_column, id_column, keep_going=keep_going,
                                  start=entry.seeks[0])

                def write(results: Sequence[Result], out: ResultFile = entry.out) -> None:
                    out.append(results)
                    on_progress(len(results))

                written += run_rows(rows, lambda batch: analyse_rows(analyzer, batch, keep_going=keep_going,
                                                                     batch_size=batch_size),
                                    write, batch_size=batch_size)
            if entry.out.done < entry.total:
                raise MentalGLMError(f"{entry.task.source}: read {entry.out.done} of {entry.total} rows; the file "
                                     "changed while it was read")
            entry.out.finish(time.perf_counter() - file_started)
        finally:
            entry.out.close()
    return written, round(time.perf_counter() - started, 3)


def stream(rows: Iterable[InputRow], analyzer: Analyzer, *, batch_size: int, keep_going: bool) -> Iterator[Result]:
    """Results of rows as they come (stdout output: nothing to resume), through the same per-batch analysis."""
    source = iter(rows)
    while batch := list(islice(source, max(1, batch_size))):
        yield from analyse_rows(analyzer, batch, keep_going=keep_going, batch_size=batch_size)


__all__ = ["AnalyzerRecipe", "Pending", "RunSummary", "analyse_rows", "fingerprint", "open_files", "run_local",
           "run_rows", "stream"]
