"""Registry of dataset loaders: one class per public dataset, found by name.

A loader knows its folder under the user's data directory, the public source it was written
for (repository, commit, licence), the SHA-256 of every file it reads (``data/manifest.yaml``),
and how to turn each *part* (a file or a fixed combination of files) into ``Post`` records.
Canonical task splits (``tasks/definitions``) name a loader and a part.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from mentalglm.data.records import Post


@dataclass
class LoadReport:
    """What a load did besides returning posts: nothing is dropped without being counted here."""

    skipped_bad_rows: int = 0
    skipped_reasons: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def merge(self, other: LoadReport) -> None:
        self.skipped_bad_rows += other.skipped_bad_rows
        self.skipped_reasons.extend(other.skipped_reasons)
        self.files.extend(f for f in other.files if f not in self.files)


class DatasetLoader(ABC):
    name: str = ""
    folder: str = ""          # sub-folder of the data directory
    source: str = ""          # public repository URL
    commit: str = ""
    licence: str = ""
    task: str = ""            # the task whose label ids this loader emits ("" when it serves no labelled task)

    @abstractmethod
    def parts(self) -> tuple[str, ...]:
        """Names of the parts this loader can load (e.g. train, val, test)."""

    @abstractmethod
    def load(self, data_dir: Path, part: str, *, skip_bad_rows: bool = False,
             verify: bool = True) -> tuple[list[Post], LoadReport]:
        """Read one part. Raises MissingDataError, BadRowError (unless skip_bad_rows) or ChecksumMismatchError."""


_LOADERS: dict[str, type[DatasetLoader]] = {}


def register_dataset(cls: type[DatasetLoader]) -> type[DatasetLoader]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name")
    if cls.name in _LOADERS:
        raise ValueError(f"dataset loader {cls.name!r} registered twice")
    _LOADERS[cls.name] = cls
    return cls


def _ensure_loaded() -> None:
    # Importing the package registers every loader module once.
    import mentalglm.data.loaders  # noqa: F401


def get_loader(name: str) -> DatasetLoader:
    _ensure_loaded()
    if name not in _LOADERS:
        close = difflib.get_close_matches(name, list(_LOADERS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown dataset {name!r}.{hint} Known: {', '.join(sorted(_LOADERS))}")
    return _LOADERS[name]()


def all_loaders() -> dict[str, DatasetLoader]:
    _ensure_loaded()
    return {name: cls() for name, cls in sorted(_LOADERS.items())}
