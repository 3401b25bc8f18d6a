"""Readers shared by every dataset loader.

The public datasets are TSV/CSV (some must be read with quoting disabled, see DATA.md), JSON
arrays and JSON lines, with defects: stray quotes, repeated headers, wrong column counts. Every
reader decodes strict UTF-8 and keeps line numbers, so that a bad row becomes a
``BadRowError(path, line, reason)`` the user can open in an editor, or, with
``skip_bad_rows``, a counted skip in the ``LoadReport``; a row is never dropped silently.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mentalglm.data.registry import LoadReport
from mentalglm.errors import BadRowError, ChecksumMismatchError
from mentalglm.files import read_jsonl_lines, sha256_file
from mentalglm.files import read_lines as file_lines

_EDGE_CHARS = " \t\r\n\u3000\ufeff\u200b"


@dataclass(frozen=True)
class Row:
    """One record of a source file.

    ``line`` is the physical line (1-based), except in JSON-array files whose whole array may sit
    on one line: there it is the 1-based item number. ``index`` is the record's ordinal in the file
    (header excluded, bad rows included), which loaders use for stable post ids.
    """

    path: Path
    line: int
    index: int
    fields: dict[str, Any]


class RowProblem(ValueError):
    """Raised by a row converter (unknown label, empty text); becomes a BadRowError or a counted skip."""


@dataclass
class BadRows:
    """Decides what a bad row does: raise (default) or be counted in the report."""

    report: LoadReport
    skip: bool = False

    def __call__(self, path: Path, line: int, reason: str) -> None:
        if not self.skip:
            raise BadRowError(path, line, reason)
        self.report.skipped_bad_rows += 1
        self.report.skipped_reasons.append(f"{path}:{line}: {reason}")


def clean_text(text: str) -> str:
    """Strip the whitespace, ideographic spaces and stray BOMs that sources leave around a post."""
    return text.strip(_EDGE_CHARS)


def _lines(path: Path, bad: BadRows) -> Iterator[tuple[int, str]]:
    """(line number, text) for each physical line, decoded one by one so a bad byte names its line."""
    for line in file_lines(path):
        try:
            text = line.text()
        except UnicodeDecodeError as exc:
            bad(path, line.number, _not_utf8(exc))
            continue
        yield line.number, text


def _not_utf8(exc: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 (byte {exc.start} of the line); convert the file to UTF-8"


def read_delimited(
    path: Path,
    bad: BadRows,
    *,
    fieldnames: Sequence[str] | None = None,
    header: bool | Literal["optional"] = True,
    delimiter: str = "\t",
    quoting: Literal[0, 1, 2, 3] = csv.QUOTE_NONE,
) -> Iterator[Row]:
    """Rows of a TSV/CSV file as dicts keyed by column name.

    ``header=True`` reads the names from line 1 (and checks them against ``fieldnames`` if given);
    ``False`` uses ``fieldnames``; ``"optional"`` skips line 1 only when it equals ``fieldnames``
    (some generated files have a header, their siblings do not). A header that differs from the
    expected one is always an error: the file is not the one the loader was written for.
    """
    if header is not True and not fieldnames:
        raise ValueError("read_delimited needs fieldnames when the file has no header")
    names = list(fieldnames) if fieldnames else None
    index = 0
    for number, text in _lines(path, bad):
        problem = ""
        try:
            values: list[str] | None = next(csv.reader([text], delimiter=delimiter, quoting=quoting, strict=True), [])
        except csv.Error as exc:
            values = None
            problem = f"unparseable row ({exc})"
        if number == 1 and header is not False:
            if header is True:
                if values is None or (names is not None and values != names):
                    raise BadRowError(path, 1, f"header is {values}, expected {names}")
                names = values
                continue
            if values == names:
                continue
        assert names is not None
        index += 1
        if values is None:
            bad(path, number, problem)
        elif len(values) != len(names):
            bad(path, number, f"{len(values)} columns, expected {len(names)} ({', '.join(names)})")
        else:
            yield Row(path, number, index, dict(zip(names, values, strict=True)))


def read_jsonl(path: Path, bad: BadRows) -> Iterator[Row]:
    """One JSON object per line (a blank line is a bad row too)."""
    index = 0
    for line in read_jsonl_lines(path):
        if isinstance(line.error, UnicodeDecodeError):
            bad(path, line.number, _not_utf8(line.error))
            continue
        index += 1
        if line.error is not None:
            bad(path, line.number, f"invalid JSON ({line.error.msg} at column {line.error.colno})")
        elif not isinstance(line.value, dict):
            bad(path, line.number, f"expected a JSON object, got {type(line.value).__name__}")
        else:
            yield Row(path, line.number, index, line.value)


def read_json_array(path: Path, bad: BadRows) -> Iterator[Row]:
    """Objects of a file holding one JSON array; ``Row.line`` is the item number (see Row)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRowError(path, data[: exc.start].count(b"\n") + 1, "not valid UTF-8; convert the file to UTF-8") from None
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRowError(path, exc.lineno, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(items, list):
        raise BadRowError(path, 1, f"expected a JSON array, got {type(items).__name__}")
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            bad(path, number, f"item {number}: expected a JSON object, got {type(item).__name__}")
            continue
        yield Row(path, number, number, item)


def read_words(path: Path, bad: BadRows) -> Iterator[Row]:
    """A word list, one entry per line; blank lines carry nothing and are not rows."""
    index = 0
    for number, text in _lines(path, bad):
        word = clean_text(text)
        if word:
            index += 1
            yield Row(path, number, index, {"word": word})


def read_lines(path: Path, bad: BadRows) -> Iterator[Row]:
    """Every line as ``{"line": text}``, blank ones included: for layouts where a blank line is itself an error."""
    for index, (number, text) in enumerate(_lines(path, bad), 1):
        yield Row(path, number, index, {"line": text})


def convert(rows: Iterable[Row], make: Callable[[Row], Any], bad: BadRows) -> list[Any]:
    """Apply a row converter; a RowProblem it raises goes through the bad-row policy."""
    out = []
    for row in rows:
        try:
            out.append(make(row))
        except RowProblem as exc:
            bad(row.path, row.line, str(exc))
    return out


def check_label(value: str, allowed: Iterable[str], column: str = "label") -> str:
    """The value itself if it is an allowed label; a RowProblem naming the allowed ones otherwise."""
    allowed = tuple(allowed)
    value = value.strip()
    if value not in allowed:
        raise RowProblem(f"unknown {column} {value!r}; expected one of {', '.join(allowed)}")
    return value


def verify_file(path: Path | str, expected: str) -> None:
    """Raise ChecksumMismatchError unless the file is byte-identical to the one the loader was written for."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumMismatchError(path, expected, actual)
