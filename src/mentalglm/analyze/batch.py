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
skipped by a rerun, and one written from another input or by another analyzer is refused, not mixed.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from mentalglm.analyze.engine import Analyzer, InputRow
from mentalglm.analyze.io import FORMATS, InputFileError, Seek, check_file, index_rows, read_posts
from mentalglm.analyze.schema import EngineName, ErrorRecord, PostResult
from mentalglm.errors import ConfigError, MentalGLMError
from mentalglm.files import JsonlAppender, atomic_write_text, read_lines

Result = PostResult | ErrorRecord
RESULT_FORMATS = (".jsonl", ".parquet")
STATE_DIR = "_mentalglm"
_PARQUET_ROWS = 8192


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
    backend: str = "llamacpp:default"
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


def result_line(result: Result) -> str:
    return result.model_dump_json()


# --- inputs and outputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileTask:
    """One input file and the output file its results go to."""

    source: Path
    target: Path

    @property
    def state_dir(self) -> Path:
        return self.target.parent / STATE_DIR

    @property
    def partial(self) -> Path:
        return self.state_dir / f"{self.target.name}.partial.jsonl"

    @property
    def meta(self) -> Path:
        return self.state_dir / f"{self.target.name}.meta.json"


def find_inputs(spec: str | Path) -> list[Path]:
    """The files of ``--input``: one file, every input file of a directory (not its subfolders), or a glob.

    Hidden files and ``_``-prefixed ones (our own state, ``_SUCCESS``) are left out; any other file of a
    directory that is not a file of posts is an error naming it, so nothing is silently not analysed.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
        other = [p.name for p in files if p.suffix.lower() not in FORMATS]
        if other:
            raise InputFileError(path, f"holds files that are not posts ({', '.join(other[:5])}"
                                 f"{', ...' if len(other) > 5 else ''}); analyse a glob instead, e.g. "
                                 f"--input '{path}/*.jsonl' (formats: {', '.join(FORMATS)})")
        if not files:
            raise InputFileError(path, "is an empty directory: no input files")
        return files
    if glob.has_magic(str(spec)):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise InputFileError(spec, "the pattern matches no file")
        return files
    raise InputFileError(spec, "no such file or directory")


def plan_files(spec: str | Path, output: Path, output_format: str | None = None) -> list[FileTask]:
    """Input files and their output files: one output file for one input file, else one per input in ``output``."""
    sources = find_inputs(spec)
    single = Path(spec).expanduser().is_file()
    if single and output.suffix.lower() in RESULT_FORMATS and not output.is_dir():
        return [FileTask(sources[0], output)]
    suffix = "." + (output_format or "jsonl").lower().lstrip(".")
    if suffix not in RESULT_FORMATS:
        raise ConfigError(f"output format {output_format!r}: use jsonl or parquet")
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is a file: " + ("name a .jsonl or .parquet file" if single else
                                                              "a directory or glob input needs an output directory"))
    tasks, seen = [], {}
    for source in sources:
        target = output / (source.stem + suffix)
        if target in seen:
            raise ConfigError(f"{seen[target]} and {source} would both be written to {target}; rename one or "
                              "analyse them in two runs")
        if source.resolve() == target.resolve():
            raise ConfigError(f"{source} would be overwritten by its own results; pass another --output")
        seen[target] = source
        tasks.append(FileTask(source, target))
    return tasks


def _stat(path: Path) -> dict[str, int]:
    info = path.stat()
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ResultFile:
    """The results of one input file, appended in input order to its partial and made final once complete.

    Opening it decides where the run starts: ``done`` rows are already written (0 for a new file), ``complete``
    means the output is final and nothing is left to do.
    """

    def __init__(self, task: FileTask, analyzer_fingerprint: str, *, overwrite: bool = False,
                 runner: str = "local") -> None:
        self.task = task
        self.errors = self.high_risk = 0
        source = {"input": str(task.source.resolve()), **_stat(task.source)}
        previous = self._previous()
        if overwrite:
            task.partial.unlink(missing_ok=True)
            task.target.unlink(missing_ok=True)
            previous = None
        if previous is None and task.target.exists():
            raise ConfigError(f"{task.target} exists and was not written by this batch runner; pass --overwrite to "
                              "replace it, or another --output")
        if previous is not None:
            found = {"input": previous.get("input"), "size": previous.get("input_size"),
                     "mtime_ns": previous.get("input_mtime_ns")}
            if found != source:
                raise ConfigError(f"{task.target} holds results of {found['input']} as it was then; the input "
                                  "changed (or is another file): pass --overwrite to start it over")
            if previous.get("analyzer") != analyzer_fingerprint:
                raise ConfigError(f"{task.target} was written by another analyzer (engine, tasks, options or "
                                  "classifiers differ); pass --overwrite to start it over, or another --output")
        self.meta: dict[str, Any] = dict(previous or {"input": source["input"], "input_size": source["size"],
                                                      "input_mtime_ns": source["mtime_ns"],
                                                      "analyzer": analyzer_fingerprint, "state": "running",
                                                      "started": _now()})
        self.meta.update(output=str(task.target), format=task.target.suffix.lstrip("."), runner=runner)
        self.complete = self.meta.get("state") == "done" and task.target.exists()
        if not self.complete and task.target.exists() and not task.partial.exists():
            self.complete = task.target.suffix == ".jsonl"  # killed between the rename and the last meta write
            if self.complete:
                self._save(state="done")
        self._appender: JsonlAppender | None = None
        self.done = int(self.meta.get("rows", 0)) if self.complete else self._count_partial()
        if not self.complete:
            self._save()

    def _previous(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.task.meta.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise ConfigError(f"{self.task.meta} is unreadable ({exc}); delete it and {self.task.partial} to start "
                              "this file over") from None

    def _count_partial(self) -> int:
        path = self.task.partial
        if not path.exists():
            return 0
        lines = 0
        for line in read_lines(path, repair_tail=True):
            lines += 1
            self.errors += b'"status":"error"' in line.raw
            self.high_risk += b'"high_risk":true' in line.raw
        return lines

    def _save(self, **changes: Any) -> None:
        self.meta.update(changes, rows=self.done, errors=self.errors, high_risk=self.high_risk)
        atomic_write_text(self.task.meta, json.dumps(self.meta, ensure_ascii=False, indent=1) + "\n")

    def append(self, results: Sequence[Result | str]) -> None:
        """Append results (models or their JSON lines), durable when this returns."""
        if self._appender is None:
            self._appender = JsonlAppender(self.task.partial)
        lines = [r if isinstance(r, str) else result_line(r) for r in results]
        self._appender.write(lines)
        self.done += len(lines)
        for line in lines:
            self.errors += '"status":"error"' in line
            self.high_risk += '"high_risk":true' in line

    def finish(self, seconds: float | None = None) -> None:
        """Make the output final: rename the partial (JSONL) or write it as Parquet, then record ``done``."""
        if self._appender is not None:
            self._appender.close()
            self._appender = None
        target, partial = self.task.target, self.task.partial
        partial.touch()
        if target.suffix == ".parquet":  # the partial stays until the meta says done: a kill here redoes only this
            write_parquet(partial, target)
        else:
            os.replace(partial, target)
        self.complete = True
        self._save(state="done", finished=_now(), **({"seconds": round(seconds, 3)} if seconds is not None else {}))
        partial.unlink(missing_ok=True)

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None
        if not self.complete:
            self._save()


def write_parquet(jsonl: Path, target: Path) -> None:
    """Results as Parquet, one row per result in order: the columns a table needs plus the whole JSON record.

    The schema is fixed (``result`` holds the nested record as JSON), so every output file of a run has the
    same schema whatever its rows hold, and a dataset reader can read the folder as one table.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("status", pa.string()), ("line", pa.int64()), ("error", pa.string()),
                        ("high_risk", pa.bool_()), ("labels", pa.map_(pa.string(), pa.list_(pa.string()))),
                        ("result", pa.string())])
    temporary = target.with_name(f".{target.name}.tmp")
    with jsonl.open(encoding="utf-8") as handle, pq.ParquetWriter(temporary, schema) as writer:
        while lines := list(islice(handle, _PARQUET_ROWS)):
            records = [json.loads(line) for line in lines]
            columns: dict[str, list[Any]] = {
                "id": [r["id"] for r in records], "status": [r["status"] for r in records],
                "line": [r.get("line") for r in records], "error": [r.get("error") for r in records],
                "high_risk": [r.get("high_risk") for r in records],
                "labels": [None if r["status"] == "error" else
                           [(task, [label["id"] for label in result["labels"]]) for task, result in r["tasks"].items()]
                           for r in records],
                "result": [line.rstrip("\n") for line in lines]}
            writer.write_table(pa.table(columns, schema=schema))
    os.replace(temporary, target)


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


__all__ = ["AnalyzerRecipe", "FileTask", "Pending", "ResultFile", "RunSummary", "analyse_rows", "find_inputs",
           "fingerprint", "open_files", "plan_files", "run_local", "run_rows", "stream", "write_parquet"]
