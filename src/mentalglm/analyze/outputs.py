"""The files of a batch run: which inputs a spec names, where each output goes, and the output itself, written as
a resumable JSONL partial with its ``.meta.json`` and made final (renamed, or written as Parquet) when complete.

Knows files, results and fingerprints; how rows are analysed and files are scheduled is batch.py's.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from mentalglm.analyze.io import FORMATS, InputFileError
from mentalglm.analyze.schema import ErrorRecord, PostResult
from mentalglm.errors import ConfigError
from mentalglm.files import JsonlAppender, atomic_write_text, read_lines

Result = PostResult | ErrorRecord
RESULT_FORMATS = (".jsonl", ".parquet")
STATE_DIR = "_mentalglm"
_PARQUET_ROWS = 8192


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


__all__ = ["RESULT_FORMATS", "STATE_DIR", "FileTask", "Result", "ResultFile", "find_inputs", "plan_files", "result_line",
           "write_parquet"]
