"""Read posts from .txt / .csv / .jsonl files line by line, and write results as JSONL, one flushed line each.

Readers never skip a row silently: a row they cannot read becomes an ``InputRow`` with ``error`` set, which
the analyzer reports (``--keep-going``) or raises. A file that is not text at all is refused up front.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from mentalglm.analyze.engine import InputRow, InputTextError
from mentalglm.analyze.schema import ErrorRecord, PostResult
from mentalglm.errors import MentalGLMError

FORMATS = (".txt", ".csv", ".jsonl")
TEXT_COLUMNS = ("text", "content", "post", "文本", "内容", "微博内容", "微博正文")
ID_COLUMNS = ("id", "post_id", "ID")
_SNIFF_BYTES = 8192
ENCODING_FIX = "save it as UTF-8 (e.g. `iconv -f GBK -t UTF-8 in.csv > out.csv`)"


class InputFileError(MentalGLMError):
    def __init__(self, path: Path | str, reason: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {reason}")


def check_file(path: Path) -> str:
    """The format of an input file; refuses missing, unknown or binary files before any work."""
    if not path.is_file():
        raise InputFileError(path, "no such file (pass --input with a .txt, .csv or .jsonl file)")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputFileError(path, f"unknown input format {suffix or '(none)'!r}; use one of {', '.join(FORMATS)}")
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if b"\x00" in head:
        raise InputFileError(path, "looks like a binary file (NUL bytes), not a text file of posts")
    return suffix


def _decoded_lines(handle: IO[bytes], bad: set[int]) -> Iterator[str]:
    """UTF-8 lines; a line that does not decode is replaced and its number added to ``bad``."""
    for number, raw in enumerate(handle, 1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.add(number)
            yield raw.decode("utf-8", errors="replace")


def _pick(columns: Iterable[str], chosen: str | None, candidates: tuple[str, ...]) -> str | None:
    names = list(columns)
    if chosen:
        return chosen if chosen in names else None
    return next((c for c in candidates if c in names), None)


def _encoding_error(line: int) -> str:
    return f"line {line} is not valid UTF-8; {ENCODING_FIX}"


def read_txt(path: Path) -> Iterator[InputRow]:
    """One post per line (a blank line is an empty post, reported as such)."""
    bad: set[int] = set()
    with path.open("rb") as handle:
        for number, line in enumerate(_decoded_lines(handle, bad), 1):
            text = line.rstrip("\r\n")
            error = _encoding_error(number) if number in bad else None
            yield InputRow(f"{path.name}:{number}", None if error else text, number, error)


def read_csv(path: Path, text_column: str | None = None, id_column: str | None = None, *,
             keep_going: bool = False) -> Iterator[InputRow]:
    """Rows of a CSV with a header; without a text column it raises, or with ``keep_going`` reports every row."""
    bad: set[int] = set()
    with path.open("rb") as handle:
        reader = csv.reader(_decoded_lines(handle, bad))
        header = next(reader, None)
        if header is None:
            raise InputFileError(path, "empty CSV file: expected a header row with a text column")
        column = _pick(header, text_column, TEXT_COLUMNS)
        id_name = _pick(header, id_column, ID_COLUMNS)
        missing = None if column else (f"CSV has no column {text_column!r}" if text_column else
                                       "CSV has no text column") + (f" (columns: {', '.join(header)}); "
                                                                    "pass --text-column NAME")
        if missing and not keep_going:
            raise InputFileError(path, missing)
        first = reader.line_num + 1
        for row in reader:
            number, first = first, reader.line_num + 1
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


def read_jsonl(path: Path, text_column: str | None = None, id_column: str | None = None) -> Iterator[InputRow]:
    bad: set[int] = set()
    with path.open("rb") as handle:
        for number, line in enumerate(_decoded_lines(handle, bad), 1):
            if number in bad:
                yield InputRow(f"{path.name}:{number}", None, number, _encoding_error(number))
                continue
            if not line.strip():
                yield InputRow(f"{path.name}:{number}", None, number, "blank line: expected a JSON object")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield InputRow(f"{path.name}:{number}", None, number, f"not valid JSON ({exc.msg})")
                continue
            if not isinstance(record, dict):
                yield InputRow(f"{path.name}:{number}", None, number, "expected a JSON object per line")
                continue
            id_name = _pick(record, id_column, ID_COLUMNS)
            post_id = str(record[id_name]) if id_name else f"{path.name}:{number}"
            column = _pick(record, text_column, TEXT_COLUMNS)
            if column is None or not isinstance(record[column], str):
                yield InputRow(post_id, None, number, f"no text field {text_column or 'text'!r} (string) in the "
                               f"object (keys: {', '.join(record)}); pass --text-column NAME")
                continue
            yield InputRow(post_id, record[column], number)


def read_posts(path: Path, text_column: str | None = None, id_column: str | None = None, *,
               keep_going: bool = False) -> Iterator[InputRow]:
    """The rows of an input file, lazily; row problems come back as rows with ``error`` for the analyzer to handle."""
    suffix = check_file(path)
    if suffix == ".txt":
        yield from read_txt(path)
        return
    if suffix == ".csv":
        yield from read_csv(path, text_column, id_column, keep_going=keep_going)
    else:
        yield from read_jsonl(path, text_column, id_column)


def write_jsonl(results: Iterable[PostResult | ErrorRecord], out: IO[str]) -> Iterator[PostResult | ErrorRecord]:
    """Write each result as one JSON line as soon as it arrives, passing it on (for progress and counts)."""
    for result in results:
        out.write(result.model_dump_json() + "\n")
        out.flush()
        yield result


__all__ = ["InputFileError", "InputRow", "InputTextError", "read_posts", "write_jsonl"]
