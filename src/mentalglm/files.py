"""Result files: written so that an interrupted run never leaves half a file behind; JSONL read line by line."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TypeVar

T = TypeVar("T")


def atomic_write_text(path: Path, text: str) -> Path:
    """Write beside the target, fsync, then rename: a crash leaves the old file or none, never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
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


def read_jsonl(path: Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line; a line that is not JSON raises ``error`` naming it.

    Callers check the shape of each value themselves and report it with the same line number.
    """
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{number}: not JSON ({exc.msg})") from None


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
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
    return keep


class JsonlAppender:
    """Append rows to a JSONL file so that a kill never leaves a half row and a written row is a kept row.

    The torn tail of an earlier kill is cut on open; each ``write`` (one row or a batch) ends with flush and
    fsync. Rows are dicts (serialised here) or ready JSON strings without the newline.
    """

    def __init__(self, path: Path, *, mode: int = 0o644) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = cut_torn_tail(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
        self._handle = os.fdopen(fd, "wb")

    def write(self, rows: Iterable[dict[str, Any] | str]) -> int:
        """Append ``rows`` and make them durable; returns the bytes written."""
        data = b"".join((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)).encode("utf-8")
                        + b"\n" for row in rows)
        if data:
            self._handle.write(data)
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self.size += len(data)
        return len(data)

    def close(self) -> None:
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
