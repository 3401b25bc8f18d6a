"""Read posts from .txt / .csv / .jsonl / .parquet files row by row, from the first row or from any row on.

Readers never skip a row silently: a row they cannot read becomes an ``InputRow`` with ``error`` set, which
the analyzer reports (``--keep-going``) or raises. A file that is not a file of posts at all is refused up front.

Any reader can start at a ``Seek`` (row, byte offset, line number) that ``index_rows`` found in one cheap pass,
so a resumed run does not re-parse finished rows and a distributed run reads its chunks of one file in
parallel, each numbering its rows as a read from the start would.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mentalglm.analyze.engine import InputRow, InputTextError
from mentalglm.analyze.schema import ErrorRecord, PostResult
from mentalglm.errors import MentalGLMError
from mentalglm.files import read_jsonl_lines, read_lines

FORMATS = (".txt", ".csv", ".jsonl", ".parquet")
TEXT_COLUMNS = ("text", "content", "post", "文本", "内容", "微博内容", "微博正文")
ID_COLUMNS = ("id", "post_id", "ID")
_SNIFF_BYTES = 8192
_PARQUET_BATCH = 4096
ENCODING_FIX = "save it as UTF-8 (e.g. `iconv -f GBK -t UTF-8 in.csv > out.csv`)"


class InputFileError(MentalGLMError):
    def __init__(self, path: Path | str, reason: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class Seek:
    """Where a reader starts: the row (0-based, a CSV header not counted), the byte offset of its first line and
    that line's number. Parquet rows have no lines: only ``row`` counts there."""

    row: int = 0
    byte: int = 0
    line: int = 1


START = Seek()


def check_file(path: Path) -> str:
    """The format of an input file; refuses missing, unknown, binary or unreadable files before any work."""
    if not path.is_file():
        raise InputFileError(path, "no such file (pass --input with a .txt, .csv, .jsonl or .parquet file)")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputFileError(path, f"unknown input format {suffix or '(none)'!r}; use one of {', '.join(FORMATS)}")
    try:
        if suffix == ".parquet":
            _parquet_file(path)
            return suffix
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise InputFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    if b"\x00" in head:
        raise InputFileError(path, "looks like a binary file (NUL bytes), not a text file of posts")
    return suffix


def _parquet_file(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputFileError(path, f"not a readable Parquet file ({exc})") from None


def _decoded_lines(path: Path, bad: set[int], start: Seek = START) -> Iterator[str]:
    """UTF-8 lines (ends kept, for the CSV reader) from ``start`` on; a line that does not decode is replaced and
    its number added to ``bad``."""
    for line in read_lines(path, offset=start.byte, number=start.line):
        try:
            text = line.text(keep_end=True)
        except UnicodeDecodeError:
            bad.add(line.number)
            text = line.text("replace", keep_end=True)
        yield text


def _pick(columns: Iterable[str], chosen: str | None, candidates: tuple[str, ...]) -> str | None:
    names = list(columns)
    if chosen:
        return chosen if chosen in names else None
    return next((c for c in candidates if c in names), None)


def _text_column(path: Path, kind: str, names: Sequence[str], text_column: str | None,
                 keep_going: bool) -> tuple[str | None, str | None]:
    """The text column of a table (CSV, Parquet), or why there is none: raised, or with ``keep_going`` returned
    so that every row becomes an error record."""
    column = _pick(names, text_column, TEXT_COLUMNS)
    if column:
        return column, None
    missing = (f"{kind} has no column {text_column!r}" if text_column else f"{kind} has no text column") + (
        f" (columns: {', '.join(names)}); pass --text-column NAME")
    if not keep_going:
        raise InputFileError(path, missing)
    return None, missing


def _encoding_error(line: int) -> str:
    return f"line {line} is not valid UTF-8; {ENCODING_FIX}"


def read_txt(path: Path, start: Seek = START) -> Iterator[InputRow]:
    """One post per line (a blank line is an empty post, reported as such)."""
    bad: set[int] = set()
    for number, line in enumerate(_decoded_lines(path, bad, start), start.line):
        text = line.rstrip("\r\n")
        error = _encoding_error(number) if number in bad else None
        yield InputRow(f"{path.name}:{number}", None if error else text, number, error)


def _csv_header(path: Path, text_column: str | None, id_column: str | None,
                keep_going: bool) -> tuple[list[str], str | None, str | None, str | None, int]:
    """(header, text column, id column, why there is no text column, lines the header takes)."""
    reader = csv.reader(_decoded_lines(path, set()))
    header = next(reader, None)
    header_lines = reader.line_num
    if header is None:
        raise InputFileError(path, "empty CSV file: expected a header row with a text column")
    column, missing = _text_column(path, "CSV", header, text_column, keep_going)
    return header, column, _pick(header, id_column, ID_COLUMNS), missing, header_lines


def read_csv(path: Path, text_column: str | None = None, id_column: str | None = None, *,
             keep_going: bool = False, start: Seek = START) -> Iterator[InputRow]:
    """Rows of a CSV with a header; without a text column it raises, or with ``keep_going`` reports every row."""
    header, column, id_name, missing, header_lines = _csv_header(path, text_column, id_column, keep_going)
    bad: set[int] = set()
    lines = _decoded_lines(path, bad, start)
    reader = csv.reader(lines)
    offset = start.line - 1  # reader.line_num counts the lines this reader consumed
    if start.row == 0 and start.byte == 0:
        for _ in range(header_lines):
            next(lines)
        offset += header_lines
    first = offset + 1
    for row in reader:
        number, first = first, offset + reader.line_num + 1
        record = dict(zip(header, row, strict=False))
        post_id = record.get(id_name, "") if id_name else ""
        post_id = post_id or f"{path.name}:{number}"
        if missing:
            yield InputRow(post_id, None, number, missing)
        elif any(n in bad for n in range(number, first)):
            yield InputRow(post_id, None, number, _encoding_error(number))
        elif len(row) != len(header):
            yield InputRow(post_id, None, number, f"row has {len(row)} fields, the header has {len(header)}")
        else:
            yield InputRow(post_id, record[column], number)  # type: ignore[index]


def read_jsonl(path: Path, text_column: str | None = None, id_column: str | None = None,
               start: Seek = START) -> Iterator[InputRow]:
    for line in read_jsonl_lines(path, offset=start.byte, number=start.line):
        number, where = line.number, f"{path.name}:{line.number}"
        if isinstance(line.error, UnicodeDecodeError):
            yield InputRow(where, None, number, _encoding_error(number))
        elif line.blank:
            yield InputRow(where, None, number, "blank line: expected a JSON object")
        elif line.error is not None:
            yield InputRow(where, None, number, f"not valid JSON ({line.error.msg})")
        elif not isinstance(line.value, dict):
            yield InputRow(where, None, number, "expected a JSON object per line")
        else:
            yield _json_row(line.value, where, number, text_column, id_column)


def _json_row(record: dict[str, Any], where: str, number: int, text_column: str | None,
              id_column: str | None) -> InputRow:
    id_name = _pick(record, id_column, ID_COLUMNS)
    post_id = str(record[id_name]) if id_name else where
    column = _pick(record, text_column, TEXT_COLUMNS)
    if column is None or not isinstance(record[column], str):
        return InputRow(post_id, None, number, f"no text field {text_column or 'text'!r} (string) in the "
                        f"object (keys: {', '.join(record)}); pass --text-column NAME")
    return InputRow(post_id, record[column], number)


def read_parquet(path: Path, text_column: str | None = None, id_column: str | None = None, *,
                 keep_going: bool = False, start: Seek = START) -> Iterator[InputRow]:
    """Rows of a Parquet file (row ``n`` is reported as line ``n``, counted from 1); only the two columns are read."""
    parquet = _parquet_file(path)
    names = parquet.schema_arrow.names
    column, missing = _text_column(path, "Parquet file", names, text_column, keep_going)
    id_name = _pick(names, id_column, ID_COLUMNS)
    groups, skip, first_row = [], start.row, 0
    for g in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(g).num_rows
        if first_row + rows > start.row:
            groups.append(g)
        else:
            skip -= rows
        first_row += rows
    columns = [c for c in (column, id_name) if c]
    number = start.row - skip
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH, row_groups=groups, columns=columns):
        texts = batch.column(column).to_pylist() if column else [None] * batch.num_rows
        ids = batch.column(id_name).to_pylist() if id_name else [None] * batch.num_rows
        for text, post_id in zip(texts, ids, strict=True):
            number += 1
            if number <= start.row:
                continue
            row_id = f"{path.name}:{number}" if post_id is None or post_id == "" else str(post_id)
            if missing:
                yield InputRow(row_id, None, number, missing)
            elif not isinstance(text, str):
                kind = "null" if text is None else type(text).__name__
                yield InputRow(row_id, None, number, f"the text column {column!r} holds {kind}, not text")
            else:
                yield InputRow(row_id, text, number)


def read_posts(path: Path, text_column: str | None = None, id_column: str | None = None, *,
               keep_going: bool = False, start: Seek = START) -> Iterator[InputRow]:
    """The rows of an input file from ``start`` on, lazily; row problems come back as rows with ``error``."""
    suffix = check_file(path)
    if suffix == ".txt":
        yield from read_txt(path, start)
    elif suffix == ".csv":
        yield from read_csv(path, text_column, id_column, keep_going=keep_going, start=start)
    elif suffix == ".parquet":
        yield from read_parquet(path, text_column, id_column, keep_going=keep_going, start=start)
    else:
        yield from read_jsonl(path, text_column, id_column, start)


def index_rows(path: Path, every: int, first_row: int = 0) -> tuple[int, list[Seek]]:
    """(rows in the file, a Seek at rows ``first_row``, ``first_row + every``, ... below that count).

    One pass that reads bytes (text files) or the footer (Parquet) without parsing a post, so that a run can
    start anywhere, and split a file into chunks read in parallel, at the cost of a line count.
    """
    suffix = check_file(path)
    every = max(1, every)
    if suffix == ".parquet":
        total = _parquet_file(path).metadata.num_rows
        return total, [Seek(row, 0, row + 1) for row in range(first_row, total, every)]
    starts = _csv_starts(path) if suffix == ".csv" else ((line.offset, line.number) for line in read_lines(path))
    seeks: list[Seek] = []
    row = 0
    for byte, line in starts:
        if row >= first_row and (row - first_row) % every == 0:
            seeks.append(Seek(row, byte, line))
        row += 1
    return row, seeks


def _csv_starts(path: Path) -> Iterator[tuple[int, int]]:
    """(byte offset, line number) where each CSV record after the header starts; a quoted field may span lines."""
    position = (0, 1)

    def lines() -> Iterator[str]:
        nonlocal position
        for line in read_lines(path):  # csv.reader asks for a line only when its record needs one
            position = (line.offset + len(line.raw), line.number + 1)
            yield line.text("replace", keep_end=True)

    reader = csv.reader(lines())
    start = position
    for index, _ in enumerate(reader):
        if index:  # the header
            yield start
        start = position


def write_jsonl(results: Iterable[PostResult | ErrorRecord], out: IO[str]) -> Iterator[PostResult | ErrorRecord]:
    """Write each result as one JSON line as soon as it arrives, passing it on (for progress and counts)."""
    for result in results:
        out.write(result.model_dump_json() + "\n")
        out.flush()
        yield result


__all__ = ["FORMATS", "InputFileError", "InputRow", "InputTextError", "Seek", "index_rows", "read_posts",
           "write_jsonl"]
