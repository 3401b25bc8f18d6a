"""Read ``manifest.yaml``: where each dataset comes from and the SHA-256 of every file a loader reads.

The datasets cannot be redistributed, so the project ships only this manifest; a checksum
mismatch means the user's copy differs from the public source the loader was written for
(another commit, a re-encoded file) and would silently change the counts and the scores.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mentalglm.data.datadir import require_file
from mentalglm.data.readers import verify_file
from mentalglm.data.registry import LoadReport
from mentalglm.errors import ConfigError


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    folder: str
    source: str
    commit: str
    licence: str
    files: dict[str, str]
    citation: str = ""
    note: str = ""
    extra_sources: tuple[dict[str, Any], ...] = field(default_factory=tuple)


@cache
def manifest() -> dict[str, DatasetEntry]:
    text = (resources.files("mentalglm.data") / "manifest.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    entries = {}
    for name, item in raw.items():
        entries[name] = DatasetEntry(
            name=name,
            folder=item["folder"],
            source=item["source"],
            commit=str(item.get("commit", "")),
            licence=item["licence"],
            files=dict(item.get("files") or {}),
            citation=item.get("citation", ""),
            note=item.get("note", ""),
            extra_sources=tuple(item.get("extra_sources", ())),
        )
    return entries


def dataset_entry(name: str) -> DatasetEntry:
    entries = manifest()
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"dataset {name!r} is not in data/manifest.yaml.{hint} Known: {', '.join(sorted(entries))}")
    return entries[name]


def data_file(data_dir: Path, dataset: str, relative: str, report: LoadReport, *, verify: bool = True) -> Path:
    """The path of one file of a dataset, checked to exist and (unless ``verify`` is off) to match its SHA-256."""
    entry = dataset_entry(dataset)
    path = require_file(data_dir, f"{entry.folder}/{relative}", dataset)
    if verify:
        expected = entry.files.get(relative)
        if expected is None:
            raise ConfigError(f"data/manifest.yaml has no SHA-256 for {dataset}: {relative}; add it")
        verify_file(path, expected)
    if str(path) not in report.files:
        report.files.append(str(path))
    return path
