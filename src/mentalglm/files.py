"""Result files: written so that an interrupted run never leaves half a file behind; JSONL read line by line.

The one JSONL reader and writer: ``read_lines`` / ``read_jsonl_lines`` number the lines, decode, parse and cut a
torn last line, ``read_jsonl`` is the strict reading most callers want, ``write_jsonl`` writes a whole file and
``JsonlAppender`` appends to one. Readers with their own error policy (the dataset loaders' bad rows, the
analyzer's input rows) adapt ``read_jsonl_lines``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self, TypeVar

T = TypeVar("T")


def _new_file_mode(directory: Path) -> int:
    """What open() gives a new file in ``directory`` (umask, default ACLs): probed, since reading the umask is not
    thread-safe."""
    probe = directory / f".mode-probe-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        return stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write beside the target, fsync, then rename: a crash leaves the old file or none, never half a file. The file
    keeps the mode of the one it replaces, or gets a new file's (the temporary file's own 0600 would make every
    result, export and dataset private to its writer)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = _new_file_mode(path.parent)
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, mode)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """One JSON object per line, UTF-8 kept readable; returns the number of rows."""
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return len(lines)


_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Line:
    """One physical line of a text file: its 1-based number, the byte offset where it starts, its bytes
    (newline included), so that a reader can report the line and a resumed read can start at the next one."""

    number: int
    offset: int
    raw: bytes

    @property
    def complete(self) -> bool:
        """Ends with its newline; only the last line of a file can lack it (a kill mid-write tears it)."""
        return self.raw.endswith(b"\n")

    def text(self, errors: str = "strict", *, keep_end: bool = False) -> str:
        """The line decoded as UTF-8 (a BOM at the start of the file dropped); without ``\\n`` / ``\\r\\n``
        unless ``keep_end``. Strict decoding raises UnicodeDecodeError, whose ``start`` is the byte in the line."""
        raw = self.raw[len(_BOM):] if self.number == 1 and self.raw.startswith(_BOM) else self.raw
        if not keep_end:
            raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        return raw.decode("utf-8", errors)


@dataclass(frozen=True)
class JsonlLine(Line):
    """A line of a JSONL file with its value, or with the error that says why it has none."""

    value: Any = None
    error: UnicodeDecodeError | json.JSONDecodeError | None = None
    blank: bool = False

    @property
    def problem(self) -> str | None:
        """The plain reason a line holds no value (``None`` when it does); readers may word their own."""
        if isinstance(self.error, UnicodeDecodeError):
            return f"not valid UTF-8 (byte {self.error.start} of the line)"
        return f"not JSON ({self.error.msg})" if self.error is not None else None


def read_lines(path: Path, *, offset: int = 0, number: int = 1, repair_tail: bool = False) -> Iterator[Line]:
    """The physical lines of a file from byte ``offset`` (line ``number``) on, streamed.

    With ``repair_tail`` a torn last line (no newline: a kill mid-append) is not yielded but cut off the file, so
    that the appender that resumes it redoes that row instead of gluing the next one onto it.
    """
    torn: int | None = None
    with Path(path).open("rb") as handle:
        handle.seek(offset)
        for raw in handle:
            line = Line(number, offset, raw)
            if repair_tail and not line.complete:
                torn = offset
                break
            yield line
            number, offset = number + 1, offset + len(raw)
    if torn is not None:
        cut_file(path, torn)


def read_jsonl_lines(path: Path, *, offset: int = 0, number: int = 1,
                     repair_tail: bool = False) -> Iterator[JsonlLine]:
    """Every line of a JSONL file, parsed: a line that does not decode or parse comes with its ``error``, a
    whitespace-only one is marked ``blank`` (its error is JSON's). Each caller decides what a bad line does."""
    for line in read_lines(path, offset=offset, number=number, repair_tail=repair_tail):
        try:
            text = line.text()
        except UnicodeDecodeError as exc:
            yield JsonlLine(line.number, line.offset, line.raw, error=exc)
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield JsonlLine(line.number, line.offset, line.raw, error=exc, blank=not text.strip())
            continue
        yield JsonlLine(line.number, line.offset, line.raw, value)


def read_jsonl(path: Path, error: type[Exception] = ValueError, *,
               repair_tail: bool = False) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line; a line that is not JSON raises ``error`` naming it.

    Callers check the shape of each value themselves and report it with the same line number. ``repair_tail``
    as in ``read_lines``: a torn last line is cut off the file instead of raising.
    """
    for line in read_jsonl_lines(path, repair_tail=repair_tail):
        if line.blank:
            continue
        if line.error is not None:
            raise error(f"{path}:{line.number}: {line.problem}")
        yield line.number, line.value


def cut_file(path: Path, size: int) -> None:
    """Truncate a file to ``size`` bytes and make that durable (the one way a torn or unreadable tail is cut)."""
    with Path(path).open("r+b") as handle:
        handle.truncate(size)
        handle.flush()
        os.fsync(handle.fileno())


def cut_torn_tail(path: Path) -> int:
    """Truncate an append-only JSONL file after its last newline; returns the size kept.

    Rows are appended whole, so a kill mid-write leaves at most one torn last line. Appending after it would glue
    the next row onto it and lose both, so every appender cuts it first: that row is redone, never half-kept.
    Reads only the end of the file, so it costs the same for any size.
    """
    path = Path(path)
    if not path.exists():
        return 0
    with path.open("r+b") as handle:
        size = end = handle.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            block = handle.read(end - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
    if keep != size:
        cut_file(path, keep)
    return keep


class JsonlAppender:
    """Append rows to a JSONL file so that a kill never leaves a half row and a written row is a kept row.

    The torn tail of an earlier kill is cut on open; each ``write`` (one row or a batch) ends with flush and
    fsync. With ``sync_each=False`` a write is flushed only (it survives a killed process, not a power cut) and
    ``close`` fsyncs: for a writer of many single rows, where an fsync a row would cost more than the rows.
    Rows are dicts (serialised here) or ready JSON strings without the newline.
    """

    def __init__(self, path: Path, *, mode: int = 0o644, sync_each: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = cut_torn_tail(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
        self._handle = os.fdopen(fd, "wb")
        self._sync_each, self._unsynced = sync_each, False

    def write(self, rows: Iterable[dict[str, Any] | str]) -> int:
        """Append ``rows`` and make them durable; returns the bytes written."""
        data = b"".join((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)).encode("utf-8")
                        + b"\n" for row in rows)
        if data:
            self._handle.write(data)
            self._handle.flush()
            if self._sync_each:
                os.fsync(self._handle.fileno())
            self._unsynced = not self._sync_each
            self.size += len(data)
        return len(data)

    def close(self) -> None:
        if self._unsynced and not self._handle.closed:
            os.fsync(self._handle.fileno())
            self._unsynced = False
        self._handle.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def save_own_pickle(value: object, path: Path) -> None:
    """A model file for ``load_own_pickle``, written atomically (a kill leaves the old file or the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        pickle.dump(value, handle)
    os.replace(handle.name, path)


def load_own_pickle(path: Path, kind: type[T]) -> T:
    """A model file this project wrote (pickle runs code from the file: never load one from elsewhere)."""
    with Path(path).open("rb") as handle:
        value = pickle.load(handle)
    if not isinstance(value, kind):
        raise TypeError(f"{path} does not hold a {kind.__name__}")
    return value


class OwnPickle:
    """``save`` and ``load`` for a model class whose files this project writes: atomic, and loaded only as that
    class (see ``load_own_pickle``). Holds no state, so pickles written before a class used it load the same."""

    def save(self, path: Path) -> None:
        save_own_pickle(self, path)

    @classmethod
    def load(cls, path: Path) -> Self:
        return load_own_pickle(path, cls)


def sha256_files(paths: Iterable[Path | str], sink: BinaryIO | None = None) -> str:
    """Hex SHA-256 of the files' bytes one after the other, streamed in 1 MiB blocks (model weights are GBs);
    each block also goes to ``sink``, so a file assembled from parts is hashed while it is written."""
    digest = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
                if sink is not None:
                    sink.write(block)
    return digest.hexdigest()


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of one file's bytes."""
    return sha256_files([path])


def sha256_json(value: Any) -> str:
    """SHA-256 of canonical JSON (sorted keys, no spaces): the same plain value always hashes the same."""
    canonical = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
