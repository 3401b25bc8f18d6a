"""Cognitive pathway files (Jiang et al. 2024): the user's own copy, in the public hierarchical layout.

The files cannot be redistributed and are not in the manifest, so there is no SHA-256 to check them against;
the loader records each file's SHA-256 instead (``files_sha256``) so that a model card or a result says which
files it was made from. The directory is ``--pathway-dir DIR``, else ``<data-dir>/cognitive_pathway``:

    DIR/train.txt, dev.txt, test.txt   one ``sentence<TAB>labels`` a line; labels comma-separated, a child
                                       written ``parent##child`` (a line may repeat a label: kept once)
    DIR/label.txt                      every label the files use, one a line: the four parents and the children

Lines are read with the shared readers (strict UTF-8 a line, file:line in every error); a bad data line is a
``BadRowError`` or, with ``skip_bad_rows``, a counted skip. A wrong label.txt always stops: every line of the
data is judged by it.
"""

from __future__ import annotations

import difflib
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

from mentalglm.data.datadir import resolve_data_dir
from mentalglm.data.readers import BadRows, Row, RowProblem, clean_text, convert, read_lines
from mentalglm.data.records import Post
from mentalglm.data.registry import DatasetLoader, LoadReport, register_dataset
from mentalglm.data.splits import normalise_text
from mentalglm.errors import ConfigError, MissingDataError
from mentalglm.files import sha256_file
from mentalglm.tasks.pathway import (
    PATHWAY_TASK_ID,
    SEPARATOR,
    PathwayFileError,
    label_line_problem,
    label_list_problem,
    parse_label_field,
    with_parents,
)

LABEL_FILE = "label.txt"
PART_FILES = {"train": "train.txt", "dev": "dev.txt", "test": "test.txt"}
# What the frozen e5 encoder reads (train/embedding.py MAX_CHARS): a longer "sentence" would be judged on its start.
MAX_SENTENCE_CHARS = 512
DOCS = "docs/pathway.md"


def pathway_directory(pathway_dir: Path | str | None = None, data_dir: Path | str | None = None) -> Path:
    """``--pathway-dir`` when given, else ``<data-dir>/cognitive_pathway``; a clear error when neither exists."""
    if pathway_dir is not None:
        path = Path(pathway_dir).expanduser()
        if not path.is_dir():
            raise MissingDataError("cognitive pathway directory", path,
                                   f"pass --pathway-dir DIR holding {', '.join(PART_FILES.values())} and {LABEL_FILE}")
        return path
    return resolve_data_dir(data_dir) / CognitivePathwayFiles.folder


def _require(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise MissingDataError(f"file {name!r} of the cognitive pathway files", directory,
                               f"pass --pathway-dir DIR with train.txt, dev.txt, test.txt and label.txt; the files "
                               f"are not redistributable, see {DOCS}")
    return path


def read_label_file(path: Path | str) -> tuple[str, ...]:
    """Every label of label.txt in file order; any line that is not one known parent or ``parent##child`` stops."""
    return _read_label_file(Path(path), *_stamp(Path(path)))


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@cache
def _read_label_file(path: Path, size: int, mtime_ns: int) -> tuple[str, ...]:
    """Cached per (path, size, mtime): every data file of a load checks its labels against the same list."""
    labels: list[str] = []
    for row in read_lines(path, _Stop(LoadReport())):
        label = clean_text(row.fields["line"])
        problem = label_line_problem(label, labels)
        if problem:
            raise PathwayFileError(path, row.line, problem)
        labels.append(label)
    problem = "the label file lists no labels" if not labels else label_list_problem(labels)
    if problem:
        raise PathwayFileError(path, 1, problem)
    return tuple(labels)


class _Stop(BadRows):
    """label.txt has no bad rows to skip: every data line is judged by it, so its first problem stops the load."""

    def __call__(self, path: Path, line: int, reason: str) -> None:
        raise PathwayFileError(path, line, reason)


@register_dataset
class CognitivePathwayFiles(DatasetLoader):
    """Parts ``train`` / ``dev`` / ``test``: one post a sentence, labels as the line gives them (parents are
    not added: scoring and training imply them). ``directory`` replaces ``<data-dir>/cognitive_pathway``."""

    name = "cognitive_pathway_files"
    folder = "cognitive_pathway"
    source = "user-supplied: Jiang et al. 2024, Cognitive Pathways (hierarchical text classification files)"
    licence = "not redistributable: each user supplies their own copy"
    task = PATHWAY_TASK_ID

    def __init__(self, directory: Path | str | None = None, max_chars: int = MAX_SENTENCE_CHARS) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else None
        self.max_chars = max_chars

    def parts(self) -> tuple[str, ...]:
        return tuple(PART_FILES)

    def root(self, data_dir: Path | str | None = None) -> Path:
        return pathway_directory(self.directory, data_dir if self.directory is None else None)

    def labels(self, data_dir: Path | str | None = None) -> tuple[str, ...]:
        """label.txt of the directory: the parents and children the files may use."""
        return read_label_file(_require(self.root(data_dir), LABEL_FILE))

    def files_sha256(self, data_dir: Path | str | None = None) -> dict[str, str]:
        """SHA-256 of each file present, so cards and results can say which copy they were made from."""
        root = self.root(data_dir)
        return {name: sha256_file(root / name) for name in (*PART_FILES.values(), LABEL_FILE)
                if (root / name).is_file()}

    def load(self, data_dir: Path | str | None, part: str, *, skip_bad_rows: bool = False,
             verify: bool = True) -> tuple[list[Post], LoadReport]:
        """``verify`` has nothing to check (no published checksums); the label check always runs."""
        if part not in PART_FILES:
            close = difflib.get_close_matches(part, list(PART_FILES), n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ConfigError(f"dataset {self.name} has no part {part!r}.{hint} Parts: {', '.join(PART_FILES)}")
        root = self.root(data_dir)
        label_file = _require(root, LABEL_FILE)
        known = read_label_file(label_file)
        path = _require(root, PART_FILES[part])
        report = LoadReport(files=[str(label_file), str(path)])
        bad = BadRows(report, skip_bad_rows)

        def make(row: Row) -> Post:
            line = row.fields["line"]
            if not line.strip():
                raise RowProblem("empty line; delete it (each line is one sentence<TAB>labels)")
            if "\t" not in line:
                raise RowProblem("no TAB between the sentence and its comma-separated labels")
            sentence, field = line.rsplit("\t", 1)
            sentence = clean_text(sentence)
            if not sentence:
                raise RowProblem("empty sentence before the TAB")
            if len(sentence) > self.max_chars:
                raise RowProblem(f"sentence has {len(sentence)} characters, more than the limit of {self.max_chars} "
                                 "(what the e5 encoder reads); split it into shorter sentences, as the published "
                                 "files do")
            try:
                labels = parse_label_field(field, known, label_file)
            except ValueError as exc:
                raise RowProblem(str(exc)) from None
            return Post(id=f"{self.name}:{part}:{row.line}", text=sentence, labels=labels, source=self.name,
                        meta={"line": row.line})

        return convert(read_lines(path, bad), make, bad), report


def pathway_summary(pathway_dir: Path | str | None = None, data_dir: Path | str | None = None, *,
                    skip_bad_rows: bool = False) -> dict[str, Any]:
    """Sentences and labels per part (a child counts for its parent too), the label.txt labels no part uses,
    test sentences also in train, and each file's SHA-256: what `data stats` and the report show."""
    loader = CognitivePathwayFiles(pathway_dir)
    labels = loader.labels(data_dir)
    parts: list[dict[str, Any]] = []
    texts: dict[str, set[str]] = {}
    used: Counter[str] = Counter()
    for part in loader.parts():
        posts, report = loader.load(data_dir, part, skip_bad_rows=skip_bad_rows)
        counts = Counter(label for post in posts for label in with_parents(post.labels))
        used.update(counts)
        texts[part] = {normalise_text(post.text) for post in posts}
        parts.append({"part": part, "rows": len(posts), "labels": {label: counts[label] for label in labels},
                      "skipped_bad_rows": report.skipped_bad_rows})
    return {"dir": str(loader.root(data_dir)), "labels": len(labels),
            "children": sum(SEPARATOR in label for label in labels),
            "unused_labels": [label for label in labels if not used[label]],
            "test_also_in_train": len(texts["test"] & texts["train"]), "parts": parts,
            "files_sha256": loader.files_sha256(data_dir)}
